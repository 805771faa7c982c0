/**
 * A real HAProxy in front of gateways, as the README's "Running several gateways" sets it up: TCP
 * mode, a PROXY header to each backend, a health check on each gateway's metrics listener
 * (`GET /ready`). Its config lives in a temporary directory, it runs in the foreground (`-db`) as a
 * child of the test, and `stop` ends it (the pid checked first) and removes the directory.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { createConnection, createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { checkedPid, signalProcess } from "./processes.js"

export const haproxyPath = ["/usr/sbin/haproxy", "/usr/local/sbin/haproxy"].find((path) => existsSync(path))

export interface HaproxyBackend {
  readonly name: string
  readonly port: number
  /** The gateway's metrics port: checked with `GET /ready`. Without it, no health check. */
  readonly checkPort?: number
}

export interface HaproxyOptions {
  readonly backends: ReadonlyArray<HaproxyBackend>
  /** The PROXY header HAProxy puts before each connection: v2 (`send-proxy-v2`) or v1 (`send-proxy`). */
  readonly proxyProtocol?: "v1" | "v2"
  /** Milliseconds between health checks (HAProxy's `inter`). */
  readonly checkInterval?: number
  /**
   * The address HAProxy connects to the backends from (`source`): the one the gateways trust, so
   * that other local clients (127.0.0.1) still reach them directly.
   */
  readonly sourceAddress?: string
}

/**
 * The config: one TCP frontend on `port`, round robin over the backends. A connection that cannot
 * reach its backend (a replica that died, before the check marks it down) is retried on another one
 * (`option redispatch 1`), so a client reconnecting through HAProxy lands on a survivor.
 */
export const haproxyConfig = (options: HaproxyOptions, port: number, statsSocket: string): string => {
  const send = options.proxyProtocol === "v1" ? "send-proxy" : "send-proxy-v2"
  const inter = options.checkInterval ?? 500
  const servers = options.backends.map(
    (backend) =>
      `  server ${backend.name} 127.0.0.1:${backend.port} ${send}` +
      (backend.checkPort === undefined
        ? ""
        : ` check port ${backend.checkPort} inter ${inter}ms fall 2 rise 1`),
  )
  return [
    "global",
    "  maxconn 4096",
    `  stats socket ${statsSocket} mode 600 level admin`,
    "defaults",
    "  mode tcp",
    "  timeout connect 2s",
    // SSH sessions are long and may be idle: the gateway's keepalives decide when one is dead.
    "  timeout client 1h",
    "  timeout server 1h",
    "  retries 3",
    "  option redispatch 1",
    "frontend ssh",
    `  bind 127.0.0.1:${port}`,
    "  default_backend gateways",
    "backend gateways",
    "  balance roundrobin",
    ...(options.sourceAddress === undefined ? [] : [`  source ${options.sourceAddress}`]),
    "  option httpchk GET /ready",
    "  http-check expect status 200",
    ...servers,
    "",
  ].join("\n")
}

/** A port nothing listens on right now (HAProxy needs one in its config). */
export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => (port === 0 ? reject(new Error("no free port")) : resolve(port)))
    })
  })

const accepts = (port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resolve(true)
    })
    socket.once("error", () => resolve(false))
  })

export interface RunningHaproxy {
  readonly port: number
  readonly pid: number
  readonly process: ChildProcess
  /** What HAProxy wrote (warnings, alerts). */
  readonly output: () => string
  /** Each server's operational state as HAProxy sees it: `UP`, `DOWN`... */
  readonly serverStates: () => Promise<Record<string, string>>
  readonly stop: () => Promise<void>
}

/** A command on HAProxy's stats socket, and its answer. */
const statsCommand = (socketPath: string, command: string) =>
  new Promise<string>((resolve, reject) => {
    let answer = ""
    const socket = createConnection(socketPath)
    socket.on("data", (chunk: Buffer) => {
      answer += chunk.toString("utf8")
    })
    socket.once("error", reject)
    socket.once("close", () => resolve(answer))
    socket.end(`${command}\n`)
  })

export const startHaproxy = async (options: HaproxyOptions): Promise<RunningHaproxy> => {
  if (haproxyPath === undefined) throw new Error("haproxy is not installed (.ci/run installs it)")
  const dir = mkdtempSync(join(tmpdir(), "mcp-ssh-haproxy-"))
  const port = await freePort()
  const statsSocket = join(dir, "stats.sock")
  const configPath = join(dir, "haproxy.cfg")
  writeFileSync(configPath, haproxyConfig(options, port, statsSocket))
  const child = spawn(haproxyPath, ["-db", "-f", configPath], { stdio: ["ignore", "pipe", "pipe"] })
  let output = ""
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8")
  })
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString("utf8")
  })
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve()
    child.once("exit", () => resolve())
    child.once("error", () => resolve())
  })
  const running = () => child.exitCode === null && child.signalCode === null
  const stop = async () => {
    if (child.pid !== undefined && running()) {
      signalProcess(checkedPid(child.pid, "haproxy"), "SIGTERM")
      const timer = setTimeout(() => {
        if (child.pid !== undefined && running()) signalProcess(checkedPid(child.pid, "haproxy"), "SIGKILL")
      }, 5_000)
      await exited
      clearTimeout(timer)
    }
    await rm(dir, { recursive: true, force: true })
  }
  try {
    const pid = checkedPid(child.pid, "haproxy")
    const until = Date.now() + 10_000
    while (!(await accepts(port))) {
      if (!running()) throw new Error(`haproxy exited at start:\n${output}`)
      if (Date.now() > until) throw new Error(`haproxy did not listen on ${port} within 10 s:\n${output}`)
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
    const serverStates = async () => {
      // `show servers state`: a version line, a header, then one line per server; field 4 is its
      // name, field 6 its operational state (0 stopped, 1 starting, 2 running, 3 stopping...).
      const answer = await statsCommand(statsSocket, "show servers state gateways")
      const states: Record<string, string> = {}
      for (const line of answer.split("\n")) {
        const fields = line.trim().split(/\s+/)
        if (fields.length < 7 || line.startsWith("#")) continue
        const name = fields[3] ?? ""
        states[name] = fields[5] === "2" ? "UP" : fields[5] === "0" ? "DOWN" : `state ${fields[5]}`
      }
      return states
    }
    return { port, pid, process: child, output: () => output, serverStates, stop }
  } catch (error) {
    await stop()
    throw error
  }
}
