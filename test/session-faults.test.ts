/**
 * Misbehaving real children: every case gets a clear JSON-RPC error, the session goes on, and other
 * sessions are untouched. Bad input from clients is tested in process (test/inprocess/bad-input).
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
  })
})
afterAll(() => disposeGateway(gateway))

const session = (server: string): Promise<LineChannel> => openSession(gateway, server)

const stillServes = async (channel: LineChannel, id: number) =>
  expect(await channel.request(id, "ping")).toMatchObject({ id, result: {} })

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
