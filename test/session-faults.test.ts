/**
 * Bad input from clients and misbehaving children: every case gets a clear JSON-RPC error, the
 * session goes on, and other sessions are untouched.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { disposeGateway, node, type RunningGateway, startGateway } from "./support/gateway.js"
import { type LineChannel, openSession } from "./support/ssh.js"

let gateway: RunningGateway

beforeAll(async () => {
  gateway = await startGateway({
    servers: {
      mini: node("mini-server.mjs"),
      crashing: node("mini-server.mjs", "crash-on-call"),
      garbage: node("mini-server.mjs", "garbage"),
      missing: { command: "/nonexistent/mcp-server" },
      "exits-at-start": node("mini-server.mjs", "exit-at-start"),
    },
    flags: ["--max-line-bytes", "4096"],
  })
})
afterAll(() => disposeGateway(gateway))

const session = (server: string): Promise<LineChannel> => openSession(gateway, server)

const stillServes = async (channel: LineChannel, id: number) =>
  expect(await channel.request(id, "ping")).toMatchObject({ id, result: {} })

describe("bad input from a client", () => {
  it("answers a line that is not JSON with -32700 and goes on", async () => {
    const channel = await session("mini")
    channel.sendRaw("{this is not json\n")
    expect(await channel.response(null)).toMatchObject({ error: { code: -32700 } })
    await stillServes(channel, 1)
    channel.channel.end()
  })

  it("answers invalid UTF-8 with -32700", async () => {
    const channel = await session("mini")
    channel.sendRaw(
      Buffer.concat([
        Buffer.from('{"jsonrpc":"2.0","id":1,"method":"ping","x":"'),
        Buffer.from([0xc3, 0x28]),
        Buffer.from('"}\n'),
      ]),
    )
    expect(await channel.response(null)).toMatchObject({
      error: { code: -32700, message: expect.stringMatching(/UTF-8/) },
    })
    await stillServes(channel, 2)
    channel.channel.end()
  })

  it("refuses a line over --max-line-bytes with -32600, answering its id", async () => {
    const channel = await session("mini")
    const big = JSON.stringify({
      jsonrpc: "2.0",
      method: "tools/call",
      params: { name: "mini__echo", arguments: { message: "x".repeat(10_000) } },
      id: 77,
    })
    channel.sendRaw(`${big}\n`)
    expect(await channel.response(77)).toMatchObject({
      error: { code: -32600, message: expect.stringMatching(/exceeds the limit of 4096 bytes/) },
    })
    await stillServes(channel, 3)
    channel.channel.end()
  })

  it("refuses batches, non-objects and messages without jsonrpc 2.0", async () => {
    const channel = await session("mini")
    channel.sendRaw('[{"jsonrpc":"2.0","id":1,"method":"ping"}]\n')
    channel.sendRaw("42\n")
    channel.sendRaw('{"jsonrpc":"1.0","id":"old","method":"ping"}\n')
    await channel.waitFor((m) => m.id === "old")
    const errors = channel.messages.filter((m) => "error" in m)
    expect(errors).toHaveLength(3)
    for (const error of errors) expect(error).toMatchObject({ error: { code: -32600 } })
    await stillServes(channel, 4)
    channel.channel.end()
  })

  it("passes the child's answer to an unknown method", async () => {
    const channel = await session("mini")
    await channel.initialize()
    expect(await channel.request(5, "no/such/method")).toMatchObject({ error: { code: -32601 } })
    await stillServes(channel, 6)
    channel.channel.end()
  })

  it("refuses an id that is already in use by a request in progress", async () => {
    const channel = await session("mini")
    await channel.initialize()
    channel.send({
      jsonrpc: "2.0",
      id: 9,
      method: "tools/call",
      params: { name: "mini__sleep", arguments: { ms: 500 } },
    })
    channel.send({ jsonrpc: "2.0", id: 9, method: "ping" })
    expect(await channel.waitFor((m) => m.id === 9 && "error" in m)).toMatchObject({
      error: { code: -32600, message: expect.stringMatching(/already used/) },
    })
    expect(await channel.waitFor((m) => m.id === 9 && "result" in m)).toMatchObject({
      result: { content: [{ text: "slept" }] },
    })
    channel.channel.end()
  })

  it("answers a cancelled request with nothing and keeps serving", async () => {
    const channel = await session("mini")
    await channel.initialize()
    await channel.request(9, "tools/list")
    channel.send({
      jsonrpc: "2.0",
      id: 10,
      method: "tools/call",
      params: { name: "mini__sleep", arguments: { ms: 400 } },
    })
    // Cancel once the call has reached the child (a call cancelled before that just never goes out).
    await new Promise((resolve) => setTimeout(resolve, 100))
    channel.send({
      jsonrpc: "2.0",
      method: "notifications/cancelled",
      params: { requestId: 10, reason: "test" },
    })
    await stillServes(channel, 11)
    // The child hears of it with the id the gateway gave the request.
    await gateway.waitForLog(/mini-server: cancelled request \d+/)
    await new Promise((resolve) => setTimeout(resolve, 600))
    expect(channel.messages.filter((m) => m.id === 10)).toEqual([])
    channel.channel.end()
  })

  it("answers a request whose last line has no newline before the client closes its side", async () => {
    const channel = await session("mini")
    channel.sendRaw('{"jsonrpc":"2.0","id":12,"method":"ping"}')
    channel.channel.end()
    expect(await channel.response(12)).toMatchObject({ result: {} })
    expect(await channel.exit).toBe(0)
  })
})

const call = (channel: LineChannel, id: number, name: string, args: Record<string, unknown> = {}) =>
  channel.request(id, "tools/call", { name, arguments: args })

describe("children that fail", () => {
  it("answers with an error naming the server when its command does not exist", async () => {
    const channel = await session("missing")
    await channel.initialize()
    expect(await call(channel, 1, "missing__echo")).toMatchObject({
      error: {
        code: -32000,
        message: expect.stringMatching(/server 'missing' is not running: server 'missing' could not start/),
      },
    })
    channel.channel.end()
  })

  it("answers with an error when the child exits at start", async () => {
    const channel = await session("exits-at-start")
    await channel.initialize()
    expect(await call(channel, 1, "exits-at-start__echo")).toMatchObject({
      error: { code: -32000, message: expect.stringMatching(/exited with code 7; restarting in/) },
    })
    channel.channel.end()
  })

  it("fails the pending call when the child crashes mid-call, then restarts it", async () => {
    const channel = await session("crashing")
    await channel.initialize()
    expect(await call(channel, 2, "crashing__echo", { message: "boom" })).toMatchObject({
      error: { code: -32000, message: expect.stringMatching(/server 'crashing' exited with code 3/) },
    })
    // Its tools vanish while it is down and come back when it is up again.
    // One list_changed when it goes down, one when it is back.
    await channel.waitForCount((m) => m.method === "notifications/tools/list_changed", 2)
    expect(await channel.request(3, "tools/list")).toMatchObject({
      result: { tools: expect.arrayContaining([expect.objectContaining({ name: "crashing__echo" })]) },
    })
    channel.channel.end()
  })

  it("turns an invalid response into an error for that call", async () => {
    const channel = await session("garbage")
    await channel.initialize()
    expect(await call(channel, 1, "garbage__echo")).toMatchObject({
      error: {
        code: -32000,
        message: expect.stringMatching(
          /server 'garbage' is not running: server 'garbage' sent an invalid response/,
        ),
      },
    })
    await gateway.waitForLog(/ignored stdout line that is not JSON-RPC: this is not json/)
    channel.channel.end()
  })

  it("says which servers exist when the exec command names an unknown one", async () => {
    const channel = await session("nope")
    expect(await channel.exit).toBe(1)
    expect(channel.stderr).toMatch(/unknown server\(s\): nope; available: mini, crashing/)
  })

  it("keeps serving other sessions while children fail", async () => {
    const [healthy, crashing] = await Promise.all([session("mini"), session("crashing")])
    await Promise.all([healthy.initialize(), crashing.initialize()])
    crashing.send({
      jsonrpc: "2.0",
      id: 1,
      method: "tools/call",
      params: { name: "crashing__echo", arguments: {} },
    })
    expect(await call(healthy, 1, "mini__echo", { message: "still here" })).toMatchObject({
      result: { content: [{ text: "still here" }] },
    })
    await crashing.response(1)
    await stillServes(healthy, 2)
    healthy.channel.end()
    crashing.channel.end()
  })
})
