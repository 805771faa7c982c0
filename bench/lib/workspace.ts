/**
 * The bench's one temporary directory (keys, configs, logs of every gateway and sshd), the client
 * keys, and the MCP servers it runs.
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"

export const repoRoot = resolve(import.meta.dirname, "../..")
export const mainScript = join(repoRoot, "dist/main.js")

export interface ServerSpec {
  /** What the bench calls it in its output. */
  readonly description: string
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** More of its servers_config.json entry (e.g. `scope`). */
  readonly config?: Readonly<Record<string, unknown>>
}

/** test/fixtures/mini-server.mjs: no SDK, answers in a few µs, so the path around it is what is measured. */
export const miniServer: ServerSpec = {
  description: "mini-server (test/fixtures/mini-server.mjs, no SDK)",
  command: process.execPath,
  args: [join(repoRoot, "test/fixtures/mini-server.mjs")],
}

/** bench/fixtures/payload-server.mjs: a tool `blob` whose result is `bytes` bytes of text. */
export const payloadServer: ServerSpec = {
  description: "payload-server (bench/fixtures/payload-server.mjs, no SDK)",
  command: process.execPath,
  args: [join(repoRoot, "bench/fixtures/payload-server.mjs")],
}

/** The MCP reference server (@modelcontextprotocol/server-everything), for the rows that show a real server. */
export const everythingServer: ServerSpec = {
  description: "server-everything (the MCP reference server, TypeScript SDK)",
  command: process.execPath,
  args: [join(repoRoot, "node_modules/@modelcontextprotocol/server-everything/dist/index.js"), "stdio"],
}

/** The server's command as one shell line (sshd runs forced commands with the user's shell). */
export const shellCommand = (server: ServerSpec): string =>
  ["exec", server.command, ...server.args].map((word) => `'${word.replaceAll("'", "'\\''")}'`).join(" ")

export interface ClientKey {
  readonly privatePath: string
  readonly privateKey: Buffer
  readonly publicLine: string
}

/** Workspaces not removed yet, for the last-resort cleanup at exit. */
const live = new Set<Workspace>()

export const removeAllWorkspaces = (): void => {
  for (const workspace of live) workspace.remove()
}

export class Workspace {
  readonly dir: string
  private counter = 0

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "mcp-ssh-bench-"))
    live.add(this)
  }

  /** A fresh subdirectory for one gateway or sshd. */
  subdir(name: string): string {
    const dir = join(this.dir, `${++this.counter}-${name}`)
    mkdirSync(dir, { mode: 0o700 })
    return dir
  }

  /** A new key pair made by ssh-keygen (OpenSSH format, read alike by ssh and ssh2). */
  key(name: string, type = "ed25519"): ClientKey {
    const privatePath = join(this.subdir(`key-${name}`), name)
    execFileSync("ssh-keygen", ["-q", "-t", type, "-N", "", "-C", `${name}@mcp-ssh-bench`, "-f", privatePath])
    return {
      privatePath,
      privateKey: readFileSync(privatePath),
      publicLine: execFileSync("ssh-keygen", ["-y", "-f", privatePath]).toString().trim(),
    }
  }

  remove(): void {
    live.delete(this)
    rmSync(this.dir, { recursive: true, force: true })
  }
}
