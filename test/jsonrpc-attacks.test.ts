/**
 * Attacks on the JSON-RPC layer, each over a real ssh2 session against the real gateway and real
 * children: the exact error the client sees, what the gateway logs, that the session goes on, that a
 * session opened before the attack is untouched, and that nothing (descriptor, child) is left behind.
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import type { ClientChannel } from "ssh2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  type ClientKey,
  disposeGateway,
  everything,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import {
  childrenOf,
  memoryKiB,
  openDescriptorCount,
  waitForDescriptorsBackTo,
  waitUntil,
} from "./support/processes.js"
import { type LineChannel, openSession } from "./support/ssh.js"

const MiB = 1024 * 1024
const defaultMaxLineBytes = 16 * MiB

let gateway: RunningGateway
let keysDir: string
let otherKey: ClientKey
/** A session opened before any attack, which every attack must leave working. */
let bystander: LineChannel

const session = (servers = "mini", key?: ClientKey): Promise<LineChannel> =>
  openSession(gateway, servers, key === undefined ? {} : { privateKey: readFileSync(key.privatePath) })

beforeAll(async () => {
  keysDir = tempDir()
  otherKey = makeKey(keysDir, "other")
  gateway = await startGateway({
    servers: { mini: node("mini-server.mjs"), everything },
    authorizedLines: [otherKey.publicLine],
  })
  bystander = await session("mini")
  await bystander.initialize()
})
afterAll(async () => {
  bystander?.channel.end()
  await disposeGateway(gateway)
  await rm(keysDir, { recursive: true, force: true })
})

const fingerprint = (key: ClientKey) =>
  execFileSync("ssh-keygen", ["-lf", `${key.privatePath}.pub`])
    .toString()
    .split(" ")[1] ?? ""
const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

let callCount = 0
/** A call through the session is answered: it goes on. */
const answersCalls = async (channel: LineChannel) => {
  const id = `check-${++callCount}`
  expect(await channel.request(id, "tools/call", { name: "mini__echo", arguments: { message: id } })).toEqual(
    { jsonrpc: "2.0", id, result: { content: [{ type: "text", text: id }] } },
  )
}

/** What the gateway holds with only the bystander open; every test must come back to it. */
const snapshot = () => ({ descriptors: openDescriptorCount(gateway.pid), children: childrenOf(gateway.pid) })

const closeAndCheck = async (
  channels: ReadonlyArray<LineChannel>,
  before: { readonly descriptors: number; readonly children: ReadonlyArray<number> },
) => {
  for (const channel of channels) channel.channel.end()
  await Promise.all(channels.map((channel) => channel.exit))
  await waitUntil(
    () => childrenOf(gateway.pid).length === before.children.length,
    15_000,
    "the sessions' children to stop",
  )
  expect(childrenOf(gateway.pid).sort()).toEqual([...before.children].sort())
  await waitForDescriptorsBackTo(gateway.pid, before.descriptors, 15_000)
  await answersCalls(bystander)
}

/** Write respecting the channel's flow control, as a client that sends as fast as it may. */
const write = (channel: ClientChannel, data: string | Buffer) =>
  new Promise<void>((resolve) => {
    if (channel.write(data)) resolve()
    else channel.once("drain", () => resolve())
  })

/** One line of `head`, `bytes` filler bytes, `tail` and a newline; returns its size without the newline. */
const sendHugeLine = async (channel: LineChannel, head: string, bytes: number, tail: string) => {
  await write(channel.channel, head)
  const chunk = Buffer.alloc(MiB, "x")
  for (let sent = 0; sent < bytes; sent += chunk.length) {
    await write(channel.channel, chunk.subarray(0, Math.min(chunk.length, bytes - sent)))
  }
  await write(channel.channel, `${tail}\n`)
  return Buffer.byteLength(head) + bytes + Buffer.byteLength(tail)
}

describe("a line far over the size cap", () => {
  it("refuses a 100 MiB request with -32600 for its id, without holding it in memory", async () => {
    const before = snapshot()
    const channel = await session()
    await channel.initialize()
    const peakBefore = memoryKiB(gateway.pid, "VmHWM")
    const started = Date.now()
    const [size] = await Promise.all([
      sendHugeLine(
        channel,
        '{"jsonrpc":"2.0","id":101,"method":"tools/call","params":{"name":"mini__echo","arguments":{"message":"',
        100 * MiB,
        '"}}}',
      ),
      // Other sessions are served while it streams in.
      answersCalls(bystander),
    ])
    expect(await channel.response(101, 60_000)).toEqual({
      jsonrpc: "2.0",
      id: 101,
      error: {
        code: -32600,
        message: `Invalid Request: message of ${size} bytes exceeds the limit of ${defaultMaxLineBytes} bytes`,
      },
    })
    const millis = Date.now() - started
    // Measured: 0.4 s, and a peak 41-48 MiB above the baseline for lines of 30 to 300 MiB (as much
    // with a 1 MiB cap: it is mostly decrypted SSH data V8 has not collected yet), never the line.
    const grewMiB = (memoryKiB(gateway.pid, "VmHWM") - peakBefore) / 1024
    expect(grewMiB).toBeLessThan(64)
    expect(millis).toBeLessThan(30_000)
    await gateway.waitForLog(
      new RegExp(
        `refused a message of ${size} bytes from the client, over the limit of ${defaultMaxLineBytes}`,
      ),
    )
    await answersCalls(channel)
    await closeAndCheck([channel], before)
  })

  it("finds the id at the end of the line too, and keeps its type", async () => {
    const before = snapshot()
    const channel = await session()
    await channel.initialize()
    const size = await sendHugeLine(
      channel,
      '{"jsonrpc":"2.0","method":"tools/call","params":{"name":"mini__echo","arguments":{"message":"',
      20 * MiB,
      '"}},"id":"101"}',
    )
    expect(await channel.response("101", 60_000)).toEqual({
      jsonrpc: "2.0",
      id: "101",
      error: {
        code: -32600,
        message: `Invalid Request: message of ${size} bytes exceeds the limit of ${defaultMaxLineBytes} bytes`,
      },
    })
    expect(channel.messages.filter((message) => message.id === 101)).toEqual([])
    await answersCalls(channel)
    await closeAndCheck([channel], before)
  })
})

describe("responses to requests never made", () => {
  it("drops them with a warning naming the id and the client, and answers nothing", async () => {
    const before = snapshot()
    const channel = await session()
    await channel.initialize()
    channel.send({ jsonrpc: "2.0", id: 99, result: {} })
    channel.send({ jsonrpc: "2.0", id: "never-asked", error: { code: -32603, message: "made up" } })
    channel.send({ jsonrpc: "2.0", id: null, error: { code: -32700, message: "Parse error" } })
    await answersCalls(channel)
    const client = escapeRegExp(fingerprint(gateway.clientKey))
    for (const id of ["99", '\\"never-asked\\"', "null"]) {
      await gateway.waitForLog(
        new RegExp(
          `level=WARN .*ignored a response of the client to request id ${escapeRegExp(id)}, which no server awaits.*client=${client}`,
        ),
      )
    }
    // A response is never answered, whatever its id.
    expect(
      channel.messages.filter((message) => [99, "never-asked", null].includes(message.id as never)),
    ).toEqual([])
    await closeAndCheck([channel], before)
  })

  it("drops a second answer to a request of a server, once the first has reached it", async () => {
    const before = snapshot()
    const channel = await session("everything")
    await channel.request("init", "initialize", {
      protocolVersion: "2025-06-18",
      capabilities: { sampling: {} },
      clientInfo: { name: "mcp-ssh-tests", version: "1" },
    })
    channel.send({ jsonrpc: "2.0", method: "notifications/initialized" })
    channel.send({
      jsonrpc: "2.0",
      id: "sample",
      method: "tools/call",
      params: { name: "everything__trigger-sampling-request", arguments: { prompt: "hi", maxTokens: 5 } },
    })
    const asked = await channel.waitFor((message) => message.method === "sampling/createMessage")
    expect(typeof asked.id).toBe("number")
    const answer = {
      jsonrpc: "2.0",
      id: asked.id,
      result: { model: "test", role: "assistant", content: { type: "text", text: "first answer" } },
    }
    channel.send(answer)
    expect(JSON.stringify(await channel.response("sample"))).toContain("first answer")
    channel.send({
      ...answer,
      result: { ...answer.result, content: { type: "text", text: "second answer" } },
    })
    await gateway.waitForLog(
      new RegExp(
        `level=WARN .*ignored a response of the client to request id ${asked.id}, which no server awaits`,
      ),
    )
    expect(channel.messages.filter((message) => message.id === asked.id)).toEqual([asked])
    const echoed = await channel.request("echo", "tools/call", {
      name: "everything__echo",
      arguments: { message: "on" },
    })
    expect(echoed).toMatchObject({ result: { content: [{ type: "text", text: "Echo: on" }] } })
    await closeAndCheck([channel], before)
  })
})

describe("notifications that carry an id", () => {
  it("refuses them with -32600, and neither forwards nor acts on them", async () => {
    const before = snapshot()
    const channel = await session()
    await channel.initialize()
    const logFrom = gateway.log().length
    channel.send({
      jsonrpc: "2.0",
      id: "slow",
      method: "tools/call",
      params: { name: "mini__sleep", arguments: { ms: 800 } },
    })
    await sleep(100)
    expect(await channel.request(5, "notifications/initialized")).toEqual({
      jsonrpc: "2.0",
      id: 5,
      error: {
        code: -32600,
        message: 'Invalid Request: notifications/initialized is a notification and must not have an "id"',
      },
    })
    expect(await channel.request(6, "notifications/cancelled", { requestId: "slow" })).toEqual({
      jsonrpc: "2.0",
      id: 6,
      error: {
        code: -32600,
        message: 'Invalid Request: notifications/cancelled is a notification and must not have an "id"',
      },
    })
    // Not taken as a cancellation: the call is answered, and the child heard of no cancellation.
    expect(await channel.response("slow")).toMatchObject({ result: { content: [{ text: "slept" }] } })
    expect(gateway.log().slice(logFrom)).not.toMatch(/mini-server: cancelled request/)
    await answersCalls(channel)
    await closeAndCheck([channel], before)
  })
})

const envelope = {
  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
  "io.modelcontextprotocol/clientCapabilities": {},
  "io.modelcontextprotocol/clientInfo": { name: "raw-modern", version: "1" },
}

describe("requests before initialize", () => {
  it("answers ping, refuses anything else with -32600 saying to initialize, then serves once initialized", async () => {
    const before = snapshot()
    const channel = await session()
    expect(await channel.request(1, "ping")).toEqual({ jsonrpc: "2.0", id: 1, result: {} })
    for (const [id, method, params] of [
      [2, "tools/list", undefined],
      [3, "tools/call", { name: "mini__echo", arguments: { message: "early" } }],
      [4, "resources/read", { uri: "mini://a" }],
    ] as const) {
      expect(await channel.request(id, method, params)).toEqual({
        jsonrpc: "2.0",
        id,
        error: {
          code: -32600,
          message: `Invalid Request: ${method} before initialize; send initialize first (or, in MCP 2026-07-28, the protocol version in _meta on every request)`,
        },
      })
    }
    expect(await channel.initialize()).toMatchObject({ result: { protocolVersion: "2025-06-18" } })
    expect(await channel.request(5, "tools/list")).toMatchObject({
      result: { tools: expect.arrayContaining([expect.objectContaining({ name: "mini__echo" })]) },
    })
    await answersCalls(channel)
    await closeAndCheck([channel], before)
  })

  it("answers a request sent right behind initialize once the children are up", async () => {
    const before = snapshot()
    // The reference server takes a while to start: a list sent before it is up would be empty.
    const channel = await session("everything")
    channel.send({
      jsonrpc: "2.0",
      id: "init",
      method: "initialize",
      params: {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "eager", version: "1" },
      },
    })
    channel.send({ jsonrpc: "2.0", id: "list", method: "tools/list" })
    const listed = await channel.response("list")
    const names = (listed.result as { tools: Array<{ name: string }> }).tools.map((tool) => tool.name)
    expect(names).toContain("everything__echo")
    expect(await channel.response("init")).toHaveProperty("result")
    await closeAndCheck([channel], before)
  })

  it("serves a 2026-07-28 request, whose envelope stands for initialize", async () => {
    const before = snapshot()
    const channel = await session()
    expect(
      await channel.request(1, "tools/call", {
        name: "mini__echo",
        arguments: { message: "modern" },
        _meta: envelope,
      }),
    ).toMatchObject({ id: 1, result: { content: [{ type: "text", text: "modern" }] } })
    await closeAndCheck([channel], before)
  })
})

describe("a second initialize", () => {
  it("is refused with -32600 and the session keeps what the first negotiated", async () => {
    const before = snapshot()
    const channel = await session("everything")
    expect(await channel.initialize()).toMatchObject({ result: { protocolVersion: "2025-06-18" } })
    const children = childrenOf(gateway.pid)
    const refused = {
      code: -32600,
      message: "Invalid Request: this session is already initialized",
    }
    // Sampling offered now would make the child register a tool that needs it.
    expect(
      await channel.request("again", "initialize", {
        protocolVersion: "2025-03-26",
        capabilities: { sampling: {} },
        clientInfo: { name: "other", version: "2" },
      }),
    ).toEqual({ jsonrpc: "2.0", id: "again", error: refused })
    const listed = await channel.request("list", "tools/list")
    const names = (listed.result as { tools: Array<{ name: string }> }).tools.map((tool) => tool.name)
    expect(names).toContain("everything__echo")
    expect(names).not.toContain("everything__trigger-sampling-request")
    expect(childrenOf(gateway.pid)).toEqual(children)
    expect(
      await channel.request("echo", "tools/call", {
        name: "everything__echo",
        arguments: { message: "kept" },
      }),
    ).toMatchObject({ result: { content: [{ type: "text", text: "Echo: kept" }] } })
    await closeAndCheck([channel], before)
  })

  it("answers only the first of two sent at once", async () => {
    const before = snapshot()
    const channel = await session()
    const params = {
      protocolVersion: "2025-06-18",
      capabilities: {},
      clientInfo: { name: "twice", version: "1" },
    }
    channel.send({ jsonrpc: "2.0", id: "first", method: "initialize", params })
    channel.send({ jsonrpc: "2.0", id: "second", method: "initialize", params })
    expect(await channel.response("second")).toEqual({
      jsonrpc: "2.0",
      id: "second",
      error: { code: -32600, message: "Invalid Request: this session is already initialized" },
    })
    expect(await channel.response("first")).toMatchObject({ result: { protocolVersion: "2025-06-18" } })
    await answersCalls(channel)
    await closeAndCheck([channel], before)
  })
})

describe("ids that two clients choose alike", () => {
  // The gateway numbers its own requests to each child 1, 2, 3... and its requests to a client the
  // same way: these ids are those too.
  const ids: ReadonlyArray<string | number> = [1, "1", 0, "0", -1, 1.5, 2, 3]
  const longCall = (
    channel: LineChannel,
    id: string | number,
    duration: number,
    steps: number,
    token: number,
  ) =>
    channel.send({
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: {
        name: "everything__trigger-long-running-operation",
        arguments: { duration, steps },
        _meta: { progressToken: token },
      },
    })
  const completed = (duration: number, steps: number) => ({
    content: [
      {
        type: "text",
        text: `Long running operation completed. Duration: ${duration} seconds, Steps: ${steps}.`,
      },
    ],
  })

  it("gives each session its own answers and progress, with each id's type kept", async () => {
    const before = snapshot()
    // Two connections of one key and one of another key.
    const sessions = await Promise.all([
      session("everything"),
      session("everything"),
      session("everything", otherKey),
    ])
    await Promise.all(sessions.map((channel) => channel.initialize()))
    // Every session uses the same ids and progress tokens; durations and steps tell the calls apart.
    const plan = sessions.flatMap((channel, s) =>
      ids.map((id, i) => ({ channel, id, duration: (5 + i) / 10, steps: 2 + s, token: i })),
    )
    for (const call of plan) longCall(call.channel, call.id, call.duration, call.steps, call.token)
    for (const call of plan) {
      expect(await call.channel.response(call.id, 20_000)).toEqual({
        jsonrpc: "2.0",
        id: call.id,
        result: completed(call.duration, call.steps),
      })
    }
    for (const [s, channel] of sessions.entries()) {
      for (const id of ids) {
        expect(channel.messages.filter((message) => message.id === id)).toHaveLength(1)
      }
      for (const token of ids.keys()) {
        const progress = channel.messages.filter(
          (message) =>
            message.method === "notifications/progress" &&
            (message.params as { progressToken: unknown }).progressToken === token,
        )
        expect(progress.map((message) => message.params)).toEqual(
          Array.from({ length: 2 + s }, (_, step) => ({
            progress: step + 1,
            total: 2 + s,
            progressToken: token,
          })),
        )
      }
    }
    await closeAndCheck(sessions, before)
  })

  it("cancels only the call of the session that cancels it", async () => {
    const before = snapshot()
    const [cancelling, other] = await Promise.all([session("everything"), session("everything", otherKey)])
    await Promise.all([cancelling.initialize(), other.initialize()])
    longCall(cancelling, 7, 1.5, 3, 7)
    longCall(cancelling, "7", 1.1, 3, 8)
    longCall(other, 7, 1.2, 3, 7)
    await sleep(300)
    cancelling.send({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: 7 } })
    expect(await other.response(7, 10_000)).toEqual({ jsonrpc: "2.0", id: 7, result: completed(1.2, 3) })
    // The string id "7" is another request, which goes on.
    expect(await cancelling.response("7", 10_000)).toEqual({
      jsonrpc: "2.0",
      id: "7",
      result: completed(1.1, 3),
    })
    // A call as long as the cancelled one, started after it on the same child, ends after it would have.
    longCall(cancelling, "after", 1.5, 3, 9)
    await cancelling.response("after", 10_000)
    expect(cancelling.messages.filter((message) => message.id === 7)).toEqual([])
    expect(
      await cancelling.request("echo", "tools/call", {
        name: "everything__echo",
        arguments: { message: "on" },
      }),
    ).toMatchObject({ result: { content: [{ type: "text", text: "Echo: on" }] } })
    await closeAndCheck([cancelling, other], before)
  })
})

describe("malformed requests", () => {
  it("answers each with its code and goes on", async () => {
    const before = snapshot()
    const channel = await session()
    await channel.initialize()
    const paramsMustBeObject = { code: -32602, message: 'Invalid params: "params" must be an object' }
    for (const [id, params] of [
      [11, [1]],
      [12, "text"],
      [13, null],
      [14, 42],
    ] as const) {
      channel.send({ jsonrpc: "2.0", id, method: "tools/list", params })
      expect(await channel.response(id)).toEqual({ jsonrpc: "2.0", id, error: paramsMustBeObject })
    }
    const methodMustBeString = {
      code: -32600,
      message: 'Invalid Request: "method" must be a non-empty string',
    }
    for (const [id, method] of [
      [21, 42],
      [22, ""],
      [23, { name: "ping" }],
      [24, null],
    ] as const) {
      channel.send({ jsonrpc: "2.0", id, method })
      expect(await channel.response(id)).toEqual({ jsonrpc: "2.0", id, error: methodMustBeString })
    }
    // An id that is not a string or a number cannot be echoed: the answer has id null.
    for (const id of [null, { n: 1 }, [1], true]) {
      channel.send({ jsonrpc: "2.0", id, method: "ping" })
    }
    await channel.waitForCount((message) => message.id === null, 4)
    expect(channel.messages.filter((message) => message.id === null)).toEqual(
      Array.from({ length: 4 }, () => ({
        jsonrpc: "2.0",
        id: null,
        error: { code: -32600, message: 'Invalid Request: "id" must be a string or a number' },
      })),
    )
    channel.send({ jsonrpc: "2.0", id: 31, result: {}, error: { code: 1, message: "both" } })
    expect(await channel.response(31)).toEqual({
      jsonrpc: "2.0",
      id: 31,
      error: {
        code: -32600,
        message: 'Invalid Request: expected "method", or exactly one of "result" and "error"',
      },
    })
    await answersCalls(channel)
    await closeAndCheck([channel], before)
  })

  it("ignores a flood of a million empty lines", async () => {
    const before = snapshot()
    const channel = await session()
    await channel.initialize()
    const answered = channel.messages.length
    const started = Date.now()
    await write(channel.channel, "\n".repeat(500_000))
    await write(channel.channel, "\r\n \n\t\n".repeat(166_667))
    expect(await channel.request("after-flood", "ping")).toEqual({
      jsonrpc: "2.0",
      id: "after-flood",
      result: {},
    })
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(channel.messages.slice(answered)).toEqual([{ jsonrpc: "2.0", id: "after-flood", result: {} }])
    await answersCalls(channel)
    await closeAndCheck([channel], before)
  })
})
