/**
 * A client that stops reading while a child streams megabytes. The client is a real ssh2 client whose
 * channel is paused: ssh2 then stops sending WINDOW_ADJUST once its buffer is full, so the gateway's
 * channel stops draining. The gateway must then stop reading the child's stdout (the child's writes
 * block: mini-server's `stream` mode records how many bytes its stdout accepted), keep its own memory
 * bounded, serve other sessions, and once the client reads again deliver everything, complete and in
 * order.
 */
import { readFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { join } from "node:path"
import type { ClientChannel, Client as Ssh2Connection } from "ssh2"
import { afterEach, describe, expect, it } from "vitest"
import { disposeGateway, node, type RunningGateway, startGateway, tempDir } from "./support/gateway.js"
import {
  childrenOf,
  memoryKiB,
  openDescriptorCount,
  waitForDescriptorsBackTo,
  waitUntil,
} from "./support/processes.js"
import { connect, openLineChannel } from "./support/ssh.js"

const MiB = 1024 * 1024
const total = 200 * MiB
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

type Message = Record<string, unknown>

/**
 * An MCP session on a raw channel that keeps no message bodies (hundreds of MiB pass through): each
 * message goes to `onMessage` as it is parsed, and the channel can be paused like any stream.
 */
class StreamingSession {
  private pending: Array<Buffer> = []
  private readonly waiters = new Map<unknown, (message: Message) => void>()
  onMessage: (message: Message) => void = () => {}

  constructor(readonly channel: ClientChannel) {
    channel.on("data", (chunk: Buffer) => {
      let start = 0
      for (let newline = chunk.indexOf(10); newline !== -1; newline = chunk.indexOf(10, start)) {
        this.pending.push(chunk.subarray(start, newline))
        const line = Buffer.concat(this.pending).toString("utf8")
        this.pending = []
        start = newline + 1
        if (line.trim() !== "") this.dispatch(JSON.parse(line) as Message)
      }
      if (start < chunk.length) this.pending.push(chunk.subarray(start))
    })
  }

  private dispatch(message: Message) {
    const waiter = "method" in message ? undefined : this.waiters.get(message.id)
    if (waiter !== undefined) {
      this.waiters.delete(message.id)
      waiter(message)
    }
    this.onMessage(message)
  }

  send(message: Message) {
    this.channel.write(`${JSON.stringify(message)}\n`)
  }

  /** The response to request `id`, sent now or earlier. */
  response(id: unknown, timeoutMs = 10_000): Promise<Message> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no response ${JSON.stringify(id)}`)), timeoutMs)
      this.waiters.set(id, (message) => {
        clearTimeout(timer)
        resolve(message)
      })
    })
  }

  request(id: string | number, method: string, params: Message = {}) {
    const answer = this.response(id)
    this.send({ jsonrpc: "2.0", id, method, params })
    return answer
  }

  static async open(connection: Ssh2Connection, selection: string) {
    const channel = await new Promise<ClientChannel>((resolve, reject) =>
      connection.exec(selection, (error, channel) => (error ? reject(error) : resolve(channel))),
    )
    const session = new StreamingSession(channel)
    await session.request("init", "initialize", {
      protocolVersion: "2025-06-18",
      capabilities: {},
      clientInfo: { name: "backpressure-test", version: "1" },
    })
    session.send({ jsonrpc: "2.0", method: "notifications/initialized" })
    // With the names listed, tools/call takes the per-call path.
    await session.request("tools", "tools/list")
    return session
  }
}

let gateway: RunningGateway | undefined
let dir: string | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
  if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  dir = undefined
})

const start = async () => {
  dir = tempDir("mcp-ssh-backpressure-")
  const counter = join(dir, "accepted")
  const running = await startGateway({
    servers: { streamer: node("mini-server.mjs", "stream", counter), mini: node("mini-server.mjs") },
  })
  gateway = running
  await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "the probes to end")
  const accepted = () => Number(readFileSync(counter, "utf8") || "0")
  return { running, accepted, descriptors: openDescriptorCount(running.pid) }
}

/**
 * Wait until the child's accepted-bytes count has not moved for two seconds (its writes are blocked),
 * sampling the gateway's resident memory meanwhile; returns the count and the largest RSS seen.
 */
const waitForStall = async (running: RunningGateway, accepted: () => number) => {
  let last = -1
  let since = Date.now()
  let peakKiB = 0
  const until = Date.now() + 60_000
  while (Date.now() < until) {
    peakKiB = Math.max(peakKiB, memoryKiB(running.pid, "VmRSS"))
    const now = accepted()
    if (now !== last) {
      last = now
      since = Date.now()
    } else if (now > 0 && Date.now() - since >= 2000) {
      return { stalledAt: now, peakKiB }
    }
    await sleep(100)
  }
  throw new Error(`the child never stopped writing (at ${last} bytes)`)
}

/** Another session on the same gateway answers promptly meanwhile. */
const otherSessionAnswers = async (running: RunningGateway) => {
  const connection = await connect(running)
  const channel = await openLineChannel(connection, { exec: "mini" })
  await channel.initialize()
  const sent = Date.now()
  expect(
    await channel.request(1, "tools/call", { name: "mini__echo", arguments: { message: "hi" } }),
  ).toMatchObject({ result: { content: [{ text: "hi" }] } })
  expect(Date.now() - sent).toBeLessThan(3000)
  channel.channel.end()
  await channel.exit
  connection.end()
}

const finish = async (
  running: RunningGateway,
  connection: Ssh2Connection,
  session: StreamingSession,
  descriptors: number,
) => {
  session.channel.end()
  connection.end()
  await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "no child left")
  await waitForDescriptorsBackTo(running.pid, descriptors)
}

describe("a client that stops reading", () => {
  it("blocks a child streaming 200 MiB of notifications, then gets every one, in order", async () => {
    const { running, accepted, descriptors } = await start()
    const connection = await connect(running)
    const session = await StreamingSession.open(connection, "streamer")
    let received = 0
    let outOfOrder = 0
    session.onMessage = (message) => {
      if (message.method !== "notifications/message") return
      const params = message.params as { logger: string; data: { seq: number } }
      if (params.data.seq !== received || params.logger !== "streamer/stream") outOfOrder++
      received++
    }
    const rssBefore = memoryKiB(running.pid, "VmRSS")
    session.channel.pause()
    const answer = session.response("stream", 170_000)
    session.send({
      jsonrpc: "2.0",
      id: "stream",
      method: "tools/call",
      params: { name: "streamer__stream", arguments: { bytes: total, chunk: 64 * 1024 } },
    })

    const { stalledAt, peakKiB } = await waitForStall(running, accepted)
    expect(stalledAt).toBeLessThan(32 * MiB)
    expect(peakKiB - rssBefore).toBeLessThan(64 * 1024)
    await otherSessionAnswers(running)

    session.channel.resume()
    const response = await answer
    const streamed = Number(
      /^streamed (\d+)$/.exec(
        (response.result as { content: Array<{ text: string }> }).content[0]?.text ?? "",
      )?.[1],
    )
    // Every notification, in order, and all of them before the answer that followed them.
    expect(received).toBe(streamed)
    expect(outOfOrder).toBe(0)
    expect(streamed).toBeGreaterThan(3000)
    await waitUntil(() => accepted() >= total, 10_000, "the child to see all its output taken")
    await finish(running, connection, session, descriptors)
  }, 180_000)

  it("blocks a child answering 100 calls of 2 MiB each (the per-call path), then gets every answer", async () => {
    const { running, accepted, descriptors } = await start()
    const connection = await connect(running)
    const session = await StreamingSession.open(connection, "streamer")
    const order: Array<unknown> = []
    const calls = 100
    const size = 2 * MiB
    let wrong = 0
    session.onMessage = (message) => {
      if (typeof message.id !== "number") return
      order.push(message.id)
      const text = (message.result as { content?: Array<{ text?: string }> } | undefined)?.content?.[0]?.text
      if (text?.length !== size || !text.startsWith(`seq:${message.id}:`)) wrong++
    }
    const rssBefore = memoryKiB(running.pid, "VmRSS")
    session.channel.pause()
    const last = session.response(calls, 170_000)
    for (let id = 1; id <= calls; id++) {
      session.send({
        jsonrpc: "2.0",
        id,
        method: "tools/call",
        params: { name: "streamer__blob", arguments: { bytes: size, seq: id } },
      })
    }

    const { stalledAt, peakKiB } = await waitForStall(running, accepted)
    expect(stalledAt).toBeLessThan(32 * MiB)
    expect(peakKiB - rssBefore).toBeLessThan(64 * 1024)
    await otherSessionAnswers(running)

    session.channel.resume()
    await last
    expect(order).toEqual(Array.from({ length: calls }, (_, index) => index + 1))
    expect(wrong).toBe(0)
    await finish(running, connection, session, descriptors)
  }, 180_000)
})
