/**
 * Start the real gateway (`node dist/main.js`) in a temporary directory with its own host key,
 * authorized keys and servers config, and wait until it listens.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync, writeFileSync } from "node:fs"
import { chmod, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { checkedPid } from "./processes.js"
import { type Watchers, waitForMatch } from "./waiting.js"

export const repoRoot = resolve(import.meta.dirname, "../..")
export const mainScript = join(repoRoot, "dist/main.js")
export const everythingServer = join(
  repoRoot,
  "node_modules/@modelcontextprotocol/server-everything/dist/index.js",
)
export const fixture = (name: string) => join(repoRoot, "test/fixtures", name)

export interface ServerEntry {
  readonly command: string
  readonly args?: ReadonlyArray<string>
  readonly env?: Readonly<Record<string, string>>
  readonly cwd?: string
  readonly disabled?: boolean
  readonly prefix?: string
  readonly timeout?: number
  readonly scope?: "session" | "identity" | "shared"
  readonly instances?: number
  readonly idleTimeout?: number
  readonly start?: "eager" | "lazy"
  readonly spares?: number
  readonly protocol?: "auto" | "2026-07-28" | "2025-11-25"
}

export const everything: ServerEntry = { command: process.execPath, args: [everythingServer, "stdio"] }
export const node = (script: string, ...args: Array<string>): ServerEntry => ({
  command: process.execPath,
  args: [fixture(script), ...args],
})

export interface ClientKey {
  readonly privatePath: string
  readonly publicLine: string
}

/** A fresh OpenSSH key pair, made by ssh-keygen so OpenSSH and ssh2 read it alike. */
export const makeKey = (dir: string, name: string, type = "ed25519", comment = `${name}@test`): ClientKey => {
  const privatePath = join(dir, name)
  const bits = type === "rsa" ? ["-b", "2048"] : []
  execFileSync("ssh-keygen", ["-q", "-t", type, ...bits, "-N", "", "-C", comment, "-f", privatePath])
  return { privatePath, publicLine: execFileSync("ssh-keygen", ["-y", "-f", privatePath]).toString().trim() }
}

export const tempDir = (prefix = "mcp-ssh-test-") => mkdtempSync(join(tmpdir(), prefix))

export interface GatewayOptions {
  readonly servers?: Readonly<Record<string, ServerEntry>>
  readonly flags?: ReadonlyArray<string>
  readonly env?: Readonly<Record<string, string>>
  /** Extra keys to authorize besides the default client key. */
  readonly authorizedLines?: ReadonlyArray<string>
  readonly gatewaySection?: Readonly<Record<string, unknown>>
  /** Run the key API on a free port (--run-key-server --key-server-port 0) and wait until it listens. */
  readonly keyApi?: boolean
  /** How long to wait for it to listen (15 s); several starting at once on a busy machine need more. */
  readonly readyTimeoutMs?: number
  /**
   * Files shared with other gateways (replicas, test/support/replicas.ts): this host key and this
   * authorized keys file instead of the gateway's own, and the client key they authorize.
   */
  readonly shared?: {
    readonly hostKeyPath: string
    readonly authorizedKeysPath: string
    readonly clientKey: ClientKey
  }
}

export interface RunningGateway {
  readonly dir: string
  readonly port: number
  readonly process: ChildProcess
  readonly pid: number
  readonly clientKey: ClientKey
  readonly authorizedKeysPath: string
  readonly hostKeyPath: string
  /** `http://127.0.0.1:PORT` of the key API, when it was asked for. */
  readonly keyApiUrl: string | undefined
  /** Everything the gateway logged so far. */
  readonly log: () => string
  /** Resolves with the first log line matching, or rejects after the timeout. */
  readonly waitForLog: (pattern: RegExp, timeoutMs?: number) => Promise<string>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** SIGTERM, and wait for the exit. */
  readonly stop: () => Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

export const startGateway = async (options: GatewayOptions = {}): Promise<RunningGateway> => {
  const dir = tempDir()
  const clientKey = options.shared?.clientKey ?? makeKey(dir, "client")
  const authorizedKeysPath = options.shared?.authorizedKeysPath ?? join(dir, "authorized_keys")
  if (options.shared === undefined) {
    writeFileSync(
      authorizedKeysPath,
      `${[clientKey.publicLine, ...(options.authorizedLines ?? [])].join("\n")}\n`,
    )
    await chmod(authorizedKeysPath, 0o600)
  }
  const hostKeyPath = options.shared?.hostKeyPath ?? join(dir, "host_key")
  const configPath = join(dir, "servers_config.json")
  writeFileSync(
    configPath,
    JSON.stringify({
      mcpServers: options.servers ?? { everything },
      ...(options.gatewaySection === undefined ? {} : { gateway: options.gatewaySection }),
    }),
  )
  const child = spawn(
    process.execPath,
    [
      mainScript,
      "--servers-config",
      configPath,
      "--port",
      "0",
      "--server-key",
      hostKeyPath,
      "--authorized-clients",
      authorizedKeysPath,
      "--child-stop-timeout",
      "1",
      ...(options.keyApi === true ? ["--run-key-server", "--key-server-port", "0"] : []),
      ...(options.flags ?? []),
    ],
    {
      stdio: ["ignore", "pipe", "pipe"],
      // No drain unless a test asks for one (--drain-timeout or this variable): suites that stop the
      // gateway with calls in flight test the stop itself, and would wait the 30 s default.
      env: { MCP_SSH_DRAIN_TIMEOUT: "0", ...process.env, ...options.env },
    },
  )
  let output = ""
  const watchers: Watchers = new Set()
  const onData = (chunk: Buffer) => {
    output += chunk.toString()
    for (const watcher of watchers) watcher()
  }
  child.stdout.on("data", onData)
  child.stderr.on("data", onData)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) =>
    child.once("exit", (code, signal) => {
      for (const watcher of watchers) watcher()
      done({ code, signal })
    }),
  )
  const waitForLog = (pattern: RegExp, timeoutMs = 15_000) =>
    waitForMatch({
      watchers,
      find: () => output.split("\n").find((candidate) => pattern.test(candidate)),
      ended: () =>
        child.exitCode !== null || child.signalCode !== null
          ? `gateway exited before logging ${pattern}:\n${output}`
          : undefined,
      timeoutMs,
      timedOut: () => `timed out waiting for ${pattern} in:\n${output}`,
    })
  const ready = async () => {
    const listening = await waitForLog(/SSH server listening on/, options.readyTimeoutMs)
    const keyApiUrl =
      options.keyApi === true
        ? /key API listening on (http:\/\/\S+)/.exec(await waitForLog(/key API listening on/))?.[1]
        : undefined
    return { port: Number(/listening on [^\s"]*:(\d+)/.exec(listening)?.[1]), keyApiUrl }
  }
  const { port, keyApiUrl } = await ready().catch(async (error: unknown) => {
    // A gateway that did not come up leaves neither a process nor its directory behind.
    child.kill("SIGKILL")
    await exited
    await rm(dir, { recursive: true, force: true })
    throw error
  })
  return {
    dir,
    port,
    process: child,
    pid: checkedPid(child.pid, "gateway"),
    clientKey,
    authorizedKeysPath,
    hostKeyPath,
    keyApiUrl,
    log: () => output,
    waitForLog,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
      return exited
    },
  }
}

/** Stop a gateway (SIGKILL if SIGTERM is ignored) and remove its directory. */
export const disposeGateway = async (gateway: RunningGateway | undefined) => {
  if (gateway === undefined) return
  const timer = setTimeout(() => gateway.process.kill("SIGKILL"), 10_000)
  await gateway.stop()
  clearTimeout(timer)
  await rm(gateway.dir, { recursive: true, force: true })
}
