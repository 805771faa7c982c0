/**
 * HAProxy for the bench: the tests' config (test/support/haproxy.ts, as the README sets it up), run
 * in the foreground through spawnTracked, so it is stopped with everything else the bench started.
 */
import { writeFileSync } from "node:fs"
import { connect } from "node:net"
import { join } from "node:path"
import { freePort, type HaproxyOptions, haproxyConfig, haproxyPath } from "../../test/support/haproxy.js"
import { isAlive, sleep, spawnTracked, stopTracked, type Tracked } from "./procs.js"
import type { Workspace } from "./workspace.js"

export { haproxyPath }

export interface BenchHaproxy {
  readonly port: number
  readonly process: Tracked
  readonly stop: () => Promise<void>
}

/** Whether anything accepts TCP connections on the port now. */
const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

export const startHaproxy = async (
  workspace: Workspace,
  name: string,
  options: HaproxyOptions,
): Promise<BenchHaproxy> => {
  if (haproxyPath === undefined) throw new Error("haproxy is not installed")
  const dir = workspace.subdir(name)
  const port = await freePort()
  const configPath = join(dir, "haproxy.cfg")
  writeFileSync(configPath, haproxyConfig(options, port, join(dir, "stats.sock")))
  const haproxy = spawnTracked(name, haproxyPath, ["-db", "-f", configPath], { stdio: "ignore" })
  const until = Date.now() + 10_000
  while (!(await accepts(port))) {
    if (!isAlive(haproxy.pid) || Date.now() > until) {
      await stopTracked(haproxy, 1_000)
      throw new Error(`haproxy (${name}) did not listen on ${port}: haproxy -c -f ${configPath} says why`)
    }
    await sleep(20)
  }
  return { port, process: haproxy, stop: () => stopTracked(haproxy, 2_000) }
}
