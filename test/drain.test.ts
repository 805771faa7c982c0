/**
 * Readiness and the graceful drain, on the real gateway: /ready and /health from start to stop,
 * and SIGTERM with calls in flight (they finish, or get -32000 at the drain timeout), a second
 * signal, SIGINT. Each checks the exit status and that no child is left.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { chmodSync, rmSync, writeFileSync } from "node:fs"
import { createConnection, type Socket } from "node:net"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import {
  disposeGateway,
  mainScript,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { checkedPid, childrenOf, isRunning, membersOfGroups, signalProcess } from "./support/processes.js"
import { connect, type LineChannel, openLineChannel } from "./support/ssh.js"

let gateway: RunningGateway | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
})

interface Reply {
  readonly status: number
  readonly body: Record<string, unknown>
}

const get = async (baseUrl: string | undefined, path: string): Promise<Reply> => {
  if (baseUrl === undefined) throw new Error("the key API is not running")
  const response = await fetch(`${baseUrl}${path}`)
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

const sleepCall = (id: string, ms: number) => ({
  jsonrpc: "2.0",
  id,
  method: "tools/call",
  params: { name: "mini__sleep", arguments: { ms } },
})

/** A session on `mini` with a sleep of `ms` under way (the child reads in order: a later echo proves it). */
const sessionWithSlowCall = async (running: RunningGateway, ms: number) => {
  const connection = await connect(running)
  const channel = await openLineChannel(connection, { exec: "mini" })
  await channel.initialize()
  channel.send(sleepCall("slow", ms))
  await channel.request("after", "tools/call", { name: "mini__echo", arguments: { message: "hi" } })
  return { connection, channel }
}

/** Every child of the gateway, and every member of their process groups, has ended. */
const expectNoChildLeft = (children: ReadonlyArray<number>) => {
  for (const child of children) expect(isRunning(child)).toBe(false)
  expect(membersOfGroups(children)).toEqual([])
}

const drainingGateway = (drainTimeout: number) =>
  startGateway({
    servers: { mini: node("mini-server.mjs") },
    keyApi: true,
    flags: ["--drain-timeout", String(drainTimeout)],
  })

describe("graceful drain on SIGTERM", () => {
  it("lets the call in flight finish while refusing new connections and requests, then exits 0", async () => {
    gateway = await drainingGateway(20)
    const running = gateway
    expect(await get(running.keyApiUrl, "/ready")).toEqual({ status: 200, body: { status: "ready" } })
    const { channel } = await sessionWithSlowCall(running, 2500)
    const children = childrenOf(running.pid)
    expect(children).toHaveLength(1)

    const sent = Date.now()
    signalProcess(running.pid, "SIGTERM")
    await running.waitForLog(/drain started: 1 call in flight/)

    const ready = await get(running.keyApiUrl, "/ready")
    expect(ready).toEqual({
      status: 503,
      body: { error: "the gateway is shutting down", state: "draining" },
    })
    const health = await get(running.keyApiUrl, "/health")
    expect(health.status).toBe(200)
    expect(health.body).toMatchObject({
      status: "healthy",
      state: "draining",
      ssh: { listening: false },
      servers: { configured: 1, states: { mini: { state: "up" } } },
    })
    // The listener is closed: a new connection is refused outright.
    await expect(connect(running)).rejects.toThrow(/ECONNREFUSED/)
    // The open session: a new request is refused, a notification still goes through quietly.
    const late = await channel.request("late", "tools/call", {
      name: "mini__echo",
      arguments: { message: "too late" },
    })
    expect(late).toMatchObject({ error: { code: -32000, message: "the gateway is shutting down" } })
    channel.send({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: "nothing" } })

    // The call in flight gets its real answer, then the gateway stops on its own.
    expect(await channel.response("slow", 10_000)).toMatchObject({
      result: { content: [{ type: "text", text: "slept" }] },
    })
    expect(await running.exited).toEqual({ code: 0, signal: null })
    expect(Date.now() - sent).toBeLessThan(10_000)
    expect(running.log()).toMatch(/drain finished: every call answered in \d+ ms/)
    expectNoChildLeft(children)
    // Nothing was answered twice, and nothing but the late request was refused.
    expect(channel.messages.filter((message) => message.id === "slow")).toHaveLength(1)
    expect(channel.messages.filter((message) => "error" in message).map((message) => message.id)).toEqual([
      "late",
    ])
  })

  it("stops at the drain timeout: the call still in flight gets -32000, the gateway exits 0", async () => {
    gateway = await drainingGateway(1)
    const running = gateway
    const { channel } = await sessionWithSlowCall(running, 60_000)
    const children = childrenOf(running.pid)
    const sent = Date.now()
    signalProcess(running.pid, "SIGTERM")
    expect(await running.exited).toEqual({ code: 0, signal: null })
    const took = Date.now() - sent
    expect(took).toBeGreaterThanOrEqual(1000)
    expect(took).toBeLessThan(8000)
    expect(await channel.response("slow", 1000)).toMatchObject({
      error: { code: -32000, message: expect.stringMatching(/shutting down/) },
    })
    expect(running.log()).toMatch(/drain timed out after 1s: 1 call still in flight get an error/)
    expectNoChildLeft(children)
  })

  it("stops at once on a second SIGTERM during the drain", async () => {
    gateway = await drainingGateway(60)
    const running = gateway
    const { channel } = await sessionWithSlowCall(running, 60_000)
    const children = childrenOf(running.pid)
    signalProcess(running.pid, "SIGTERM")
    await running.waitForLog(/drain started: 1 call in flight/)
    const second = Date.now()
    signalProcess(running.pid, "SIGTERM")
    expect(await running.exited).toEqual({ code: 0, signal: null })
    expect(Date.now() - second).toBeLessThan(5000)
    expect(await channel.response("slow", 1000)).toMatchObject({ error: { code: -32000 } })
    expect(running.log()).toMatch(/drain cut short by a second signal: 1 call still in flight/)
    expectNoChildLeft(children)
  })

  it("stops at once on SIGINT, without a drain, as before", async () => {
    gateway = await drainingGateway(60)
    const running = gateway
    const { channel } = await sessionWithSlowCall(running, 60_000)
    const children = childrenOf(running.pid)
    const sent = Date.now()
    signalProcess(running.pid, "SIGINT")
    expect(await running.exited).toEqual({ code: 0, signal: null })
    expect(Date.now() - sent).toBeLessThan(5000)
    expect(await channel.response("slow", 1000)).toMatchObject({ error: { code: -32000 } })
    expect(running.log()).not.toMatch(/drain started/)
    expectNoChildLeft(children)
  })

  it("with nothing in flight, stops at once and says so", async () => {
    gateway = await drainingGateway(60)
    const running = gateway
    const connection = await connect(running)
    const channel: LineChannel = await openLineChannel(connection, { exec: "mini" })
    await channel.initialize()
    const sent = Date.now()
    signalProcess(running.pid, "SIGTERM")
    expect(await running.exited).toEqual({ code: 0, signal: null })
    expect(Date.now() - sent).toBeLessThan(5000)
    expect(running.log()).toMatch(/drain started: 0 calls in flight/)
    expect(running.log()).toMatch(/drain finished/)
  })
})

/**
 * A gateway started by hand, to look at it before its servers are probed (the shared helper waits
 * until SSH listens). Its key API is on a free port; SIGKILL and the directory go in `dispose`.
 */
const startUnwaited = async (servers: Record<string, ReturnType<typeof node>>, flags: Array<string>) => {
  const dir = tempDir()
  const client = makeKey(dir, "client")
  const authorized = join(dir, "authorized_keys")
  writeFileSync(authorized, `${client.publicLine}\n`)
  chmodSync(authorized, 0o600)
  const configPath = join(dir, "servers_config.json")
  writeFileSync(configPath, JSON.stringify({ mcpServers: servers }))
  const child: ChildProcess = spawn(
    process.execPath,
    [
      mainScript,
      ...["--servers-config", configPath, "--port", "0", "--server-key", join(dir, "host_key")],
      ...["--authorized-clients", authorized, "--child-stop-timeout", "1"],
      ...["--run-key-server", "--key-server-port", "0", ...flags],
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  )
  const pid = checkedPid(child.pid, "gateway")
  let output = ""
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString()
  })
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString()
  })
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)))
  const waitForLog = async (pattern: RegExp, timeoutMs = 15_000) => {
    const until = Date.now() + timeoutMs
    for (;;) {
      const line = output.split("\n").find((candidate) => pattern.test(candidate))
      if (line !== undefined) return line
      if (child.exitCode !== null || Date.now() > until) throw new Error(`no ${pattern} in:\n${output}`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
  const dispose = async () => {
    if (child.exitCode === null && child.signalCode === null) signalProcess(pid, "SIGKILL")
    await exited
    rmSync(dir, { recursive: true, force: true })
  }
  return { pid, waitForLog, exited, dispose, log: () => output }
}

describe("/ready and /health through the gateway's life", () => {
  it("says starting while a server is probed, then ready with the slow server's failure shown", async () => {
    const started = await startUnwaited(
      { mini: node("mini-server.mjs"), slow: node("mini-server.mjs", "no-answer") },
      ["--startup-timeout", "3"],
    )
    try {
      const url = /key API listening on (http:\/\/\S+)/.exec(
        await started.waitForLog(/key API listening on/),
      )?.[1]
      // The probe of `slow` takes its whole 3 s: the key API already answers, and says why not yet.
      expect(await get(url, "/ready")).toEqual({
        status: 503,
        body: { error: "the gateway is starting: its servers are being probed", state: "starting" },
      })
      const starting = await get(url, "/health")
      expect(starting.status).toBe(200)
      expect(starting.body).toMatchObject({
        status: "healthy",
        state: "starting",
        ssh: { listening: false },
        servers: { configured: 2, states: { mini: { state: "starting" }, slow: { state: "starting" } } },
      })
      const listening = await started.waitForLog(/SSH server listening on/)
      const port = /:(\d+)\s*$/.exec(listening.replace(/"$/, ""))?.[1]
      expect(await get(url, "/ready")).toEqual({ status: 200, body: { status: "ready" } })
      const ready = await get(url, "/health")
      expect(ready.body).toMatchObject({
        status: "healthy",
        state: "ready",
        ssh: { listening: true, address: `127.0.0.1:${port}` },
        servers: {
          configured: 2,
          states: {
            mini: { state: "up" },
            slow: { state: "failed", reason: "no answer within 3s" },
          },
        },
      })
    } finally {
      await started.dispose()
    }
  })

  it("is not ready when no configured server can start, but stays healthy and says why", async () => {
    gateway = await startGateway({
      servers: { broken: node("mini-server.mjs", "exit-at-start") },
      keyApi: true,
    })
    expect(await get(gateway.keyApiUrl, "/ready")).toEqual({
      status: 503,
      body: { error: "no configured server could start", state: "no_server_can_start" },
    })
    const health = await get(gateway.keyApiUrl, "/health")
    expect(health.status).toBe(200)
    expect(health.body).toMatchObject({
      status: "healthy",
      state: "no_server_can_start",
      ssh: { listening: true },
      servers: { configured: 1, states: { broken: { state: "failed", reason: expect.any(String) } } },
    })
  })

  it("is never rate-limited, like /health", async () => {
    gateway = await startGateway({
      servers: { mini: node("mini-server.mjs") },
      keyApi: true,
      flags: ["--key-server-rate-burst", "1", "--key-server-rate-limit", "1"],
    })
    const statuses = await Promise.all(Array.from({ length: 20 }, () => get(gateway?.keyApiUrl, "/ready")))
    expect(statuses.map((reply) => reply.status)).toEqual(Array.from({ length: 20 }, () => 200))
  })
})

describe("connections still in their handshake", () => {
  it("are closed when the gateway stops, and do not hold it up", async () => {
    gateway = await drainingGateway(60)
    const running = gateway
    // Each has sent its identification line and had the gateway's: ssh2 holds it, mid key exchange.
    const sockets = await Promise.all(
      [1, 2, 3].map(
        () =>
          new Promise<Socket>((resolve, reject) => {
            const socket = createConnection({ host: "127.0.0.1", port: running.port })
            socket.once("error", reject)
            socket.once("data", () => resolve(socket))
            socket.write("SSH-2.0-test\r\n")
          }),
      ),
    )
    const closed = sockets.map(
      (socket) => new Promise<void>((resolve) => socket.once("close", () => resolve())),
    )
    signalProcess(running.pid, "SIGTERM")
    expect(await running.exited).toEqual({ code: 0, signal: null })
    await Promise.all(closed)
  })
})
