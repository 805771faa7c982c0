/**
 * Start the real gateway (`node dist/main.js`) with its own host key, authorized keys and servers
 * config in the workspace, its log in a file (so the bench does not spend its own CPU reading it),
 * and wait for "SSH server listening on HOST:PORT".
 */
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from "node:fs"
import { chmod } from "node:fs/promises"
import { connect } from "node:net"
import { join } from "node:path"
import {
  benchEnv,
  helpersOf,
  isAlive,
  sleep,
  spawnTracked,
  stopTracked,
  type Tracked,
  waitFor,
} from "./procs.js"
import type { SshTarget } from "./ssh.js"
import { freePort } from "./sshd.js"
import { type ClientKey, mainScript, type ServerSpec, type Workspace } from "./workspace.js"

export interface GatewayOptions {
  readonly servers: Readonly<Record<string, ServerSpec>>
  readonly clientKeys: ReadonlyArray<ClientKey>
  /** More authorized_keys lines, as written (e.g. a `cert-authority` line). */
  readonly authorizedLines?: ReadonlyArray<string>
  /** Extra flags, e.g. ["--max-startups", "2000"]. */
  readonly flags?: ReadonlyArray<string>
  /** --log-level; the default (INFO, one audit line per call) is what users run and what is measured. */
  readonly logLevel?: "WARNING"
  readonly name?: string
  /** Node options before the script, e.g. ["--cpu-prof", "--cpu-prof-dir", DIR] to profile it. */
  readonly nodeArgs?: ReadonlyArray<string>
  /** A host key file shared with other gateways (replicas behind a load balancer); else its own. */
  readonly hostKeyPath?: string
  /** Variables on top of the bench's environment (a database password, the admin token). */
  readonly env?: Readonly<Record<string, string>>
  /** Run the key API on a free port and wait until it listens (its URL: `keyApiUrl`). */
  readonly keyApi?: boolean
}

export interface Gateway extends SshTarget {
  readonly process: Tracked
  readonly dir: string
  readonly logPath: string
  readonly logTail: () => string
  /** `http://HOST:PORT` of the key API, when it was asked for. */
  readonly keyApiUrl: string | undefined
  readonly stop: () => Promise<void>
}

const tail = (path: string, bytes = 3_000) => {
  try {
    const text = readFileSync(path, "utf8")
    return text.slice(-bytes)
  } catch {
    return ""
  }
}

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

/** Poll until something accepts TCP connections on the port (false if `pid` exits or time runs out). */
const waitForPort = async (port: number, pid: number, timeoutMs: number) => {
  const until = Date.now() + timeoutMs
  while (Date.now() < until && isAlive(pid)) {
    if (await accepts(port)) return true
    await sleep(20)
  }
  return false
}

export const startGateway = async (workspace: Workspace, options: GatewayOptions): Promise<Gateway> => {
  const dir = workspace.subdir(options.name ?? "gateway")
  const authorizedKeysPath = join(dir, "authorized_keys")
  const lines = [...options.clientKeys.map((key) => key.publicLine), ...(options.authorizedLines ?? [])]
  writeFileSync(authorizedKeysPath, `${lines.join("\n")}\n`)
  await chmod(authorizedKeysPath, 0o600)
  const hostKeyPath = options.hostKeyPath ?? join(dir, "host_key")
  const configPath = join(dir, "servers_config.json")
  const mcpServers = Object.fromEntries(
    Object.entries(options.servers).map(([name, spec]) => [
      name,
      { command: spec.command, args: spec.args, ...spec.config },
    ]),
  )
  writeFileSync(configPath, JSON.stringify({ mcpServers }, null, 2))
  const logPath = join(dir, "gateway.log")
  // Above INFO the gateway does not log where it listens: give it a port and wait for it to accept.
  const fixedPort = options.logLevel === undefined ? 0 : await freePort()
  const logFd = openSync(logPath, "a")
  const args = [
    ...(options.nodeArgs ?? []),
    mainScript,
    "--servers-config",
    configPath,
    "--port",
    String(fixedPort),
    "--server-key",
    hostKeyPath,
    "--authorized-clients",
    authorizedKeysPath,
    "--child-stop-timeout",
    "1",
    ...(options.logLevel === undefined ? [] : ["--log-level", options.logLevel]),
    ...(options.keyApi === true ? ["--run-key-server", "--key-server-port", "0"] : []),
    ...(options.flags ?? []),
  ]
  const gatewayProcess = (() => {
    try {
      return spawnTracked(options.name ?? "gateway", process.execPath, args, {
        stdio: ["ignore", logFd, logFd],
        cwd: dir,
        ...(options.env === undefined ? {} : { env: { ...benchEnv, ...options.env } }),
      })
    } finally {
      closeSync(logFd)
    }
  })()
  const listening = /SSH server listening on [^\s"]*:(\d+)/
  let port = 0
  const up =
    fixedPort === 0
      ? await waitFor(
          () => {
            if (!isAlive(gatewayProcess.pid)) return true
            const match = listening.exec(tail(logPath, 1_000_000))
            if (match?.[1] !== undefined) port = Number(match[1])
            return port !== 0
          },
          20_000,
          10,
        )
      : await waitForPort(fixedPort, gatewayProcess.pid, 20_000).then((listens) => {
          if (listens) port = fixedPort
          return listens || !isAlive(gatewayProcess.pid)
        })
  if (!up || port === 0) {
    await stopTracked(gatewayProcess, 1_000)
    throw new Error(`the gateway did not start listening${up ? " (it exited)" : ""}:\n${tail(logPath)}`)
  }
  let keyApiUrl: string | undefined
  if (options.keyApi === true) {
    // Its port is in its log line, as the SSH port is.
    const apiListening = /key API listening on (http:\/\/\S+)/
    const listens = await waitFor(
      () => {
        keyApiUrl = apiListening.exec(tail(logPath, 1_000_000))?.[1]
        return keyApiUrl !== undefined || !isAlive(gatewayProcess.pid)
      },
      20_000,
      10,
    )
    if (!listens || keyApiUrl === undefined) {
      await stopTracked(gatewayProcess, 1_000)
      throw new Error(`the gateway's key API did not start listening:\n${tail(logPath)}`)
    }
  }
  if (!existsSync(`${hostKeyPath}.pub`)) throw new Error(`the gateway wrote no ${hostKeyPath}.pub`)
  const hostKeyLine = readFileSync(`${hostKeyPath}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ")
  return {
    label: options.name ?? "gateway",
    port,
    pid: gatewayProcess.pid,
    hostKeyLine,
    username: "mcp",
    channel: { subsystem: "mcp" },
    process: gatewayProcess,
    dir,
    helpers: await helpersOf(gatewayProcess.pid),
    logPath,
    logTail: () => tail(logPath),
    keyApiUrl,
    // SIGTERM: the gateway stops its children itself; what is left after the grace is killed.
    stop: () => stopTracked(gatewayProcess, 10_000),
  }
}
