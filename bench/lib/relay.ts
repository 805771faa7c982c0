/**
 * bench/fixtures/ssh2-relay.mjs as a target: a bare ssh2 server piping each session channel to a new
 * child, the floor any Node SSH gateway built on ssh2 stands on.
 */
import { execFileSync } from "node:child_process"
import { join } from "node:path"
import { helpersOf, spawnTracked, stopTracked, type Tracked } from "./procs.js"
import type { SshTarget } from "./ssh.js"
import { type ClientKey, repoRoot, type ServerSpec, type Workspace } from "./workspace.js"

export interface Relay extends SshTarget {
  readonly process: Tracked
  readonly stop: () => Promise<void>
}

export const relayScript = join(repoRoot, "bench/fixtures/ssh2-relay.mjs")

export const startRelay = async (
  workspace: Workspace,
  server: ServerSpec,
  key: ClientKey,
  name = "ssh2-relay",
): Promise<Relay> => {
  const dir = workspace.subdir(name)
  const hostKeyPath = join(dir, "host_key")
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKeyPath])
  const relay = spawnTracked(name, process.execPath, [
    relayScript,
    hostKeyPath,
    `${key.privatePath}.pub`,
    "--",
    server.command,
    ...server.args,
  ])
  const port = await new Promise<number>((resolve, reject) => {
    let output = ""
    const timer = setTimeout(() => reject(new Error(`${name} did not start: ${output}`)), 15_000)
    relay.child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString()
      const match = /listening on (\d+)/.exec(output)
      if (match?.[1] !== undefined) {
        clearTimeout(timer)
        resolve(Number(match[1]))
      }
    })
    relay.child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString()
    })
    void relay.exited.then(() => {
      clearTimeout(timer)
      reject(new Error(`${name} exited: ${output}`))
    })
  }).catch(async (error: unknown) => {
    await stopTracked(relay, 1_000)
    throw error
  })
  const hostKeyLine = execFileSync("ssh-keygen", ["-y", "-f", hostKeyPath])
    .toString()
    .trim()
    .split(" ")
    .slice(0, 2)
    .join(" ")
  return {
    label: name,
    port,
    pid: relay.pid,
    hostKeyLine,
    username: "mcp",
    channel: { subsystem: "mcp" },
    dir,
    helpers: await helpersOf(relay.pid),
    process: relay,
    stop: () => stopTracked(relay, 3_000),
  }
}
