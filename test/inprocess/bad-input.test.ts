/** Bad input from a client, handled by the session: a JSON-RPC error each time, and the session goes on. */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import { startGateway, type TestClient, type ToolCall, text } from "../support/inprocess/index.js"

/** A tool that answers once the test lets it, so "in progress" lasts exactly as long as needed. */
const gatedSession = Effect.gen(function* () {
  const gate = yield* Deferred.make<void>()
  const gateway = yield* startGateway({
    servers: {
      mini: {
        tools: [
          { name: "echo" },
          { name: "sleep", run: (_call: ToolCall) => Deferred.await(gate).pipe(Effect.as(text("slept"))) },
        ],
      },
    },
    settings: { maxLineBytes: 4096 },
  })
  const client = yield* gateway.connect()
  return { gateway, client, release: Deferred.succeed(gate, undefined) }
})

const stillServes = (client: TestClient, id: number) =>
  client
    .request(id, "ping")
    .pipe(Effect.map((response) => expect(response).toMatchObject({ id, result: {} })))

describe("bad input from a client", () => {
  it.scopedLive("answers a line that is not JSON with -32700 and goes on", () =>
    Effect.gen(function* () {
      const { client } = yield* gatedSession
      yield* client.sendRaw("{this is not json\n")
      expect(yield* client.response(null)).toMatchObject({ error: { code: -32700 } })
      yield* stillServes(client, 1)
    }),
  )

  it.scopedLive("answers invalid UTF-8 with -32700", () =>
    Effect.gen(function* () {
      const { client } = yield* gatedSession
      yield* client.sendRaw(
        Buffer.concat([
          Buffer.from('{"jsonrpc":"2.0","id":1,"method":"ping","x":"'),
          Buffer.from([0xc3, 0x28]),
          Buffer.from('"}\n'),
        ]),
      )
      expect(yield* client.response(null)).toMatchObject({
        error: { code: -32700, message: expect.stringMatching(/UTF-8/) },
      })
      yield* stillServes(client, 2)
    }),
  )

  it.scopedLive("refuses a line over --max-line-bytes with -32600, answering its id", () =>
    Effect.gen(function* () {
      const { client } = yield* gatedSession
      const big = JSON.stringify({
        jsonrpc: "2.0",
        method: "tools/call",
        params: { name: "mini__echo", arguments: { message: "x".repeat(10_000) } },
        id: 77,
      })
      yield* client.sendRaw(`${big}\n`)
      expect(yield* client.response(77)).toMatchObject({
        error: { code: -32600, message: expect.stringMatching(/exceeds the limit of 4096 bytes/) },
      })
      yield* stillServes(client, 3)
    }),
  )

  it.scopedLive("refuses batches, non-objects and messages without jsonrpc 2.0", () =>
    Effect.gen(function* () {
      const { client } = yield* gatedSession
      yield* client.sendRaw('[{"jsonrpc":"2.0","id":1,"method":"ping"}]\n')
      yield* client.sendRaw("42\n")
      yield* client.sendRaw('{"jsonrpc":"1.0","id":"old","method":"ping"}\n')
      yield* client.response("old")
      const errors = client.messages.filter((m) => "error" in m)
      expect(errors).toHaveLength(3)
      for (const error of errors) expect(error).toMatchObject({ error: { code: -32600 } })
      yield* stillServes(client, 4)
    }),
  )

  it.scopedLive("refuses an id that is already in use by a request in progress", () =>
    Effect.gen(function* () {
      const { gateway, client, release } = yield* gatedSession
      yield* client.initialize()
      yield* client.sendRequest(9, "tools/call", { name: "mini__sleep", arguments: { ms: 500 } })
      yield* gateway.child("mini").received.waitFor((m) => m.method === "tools/call")
      yield* client.sendRequest(9, "ping")
      expect(yield* client.messages.waitFor((m) => m.id === 9 && "error" in m)).toMatchObject({
        error: { code: -32600, message: expect.stringMatching(/already used/) },
      })
      yield* release
      expect(yield* client.messages.waitFor((m) => m.id === 9 && "result" in m)).toMatchObject({
        result: { content: [{ text: "slept" }] },
      })
    }),
  )

  it.scopedLive(
    "refuses a notification that carries an id with -32600, and neither forwards nor acts on it",
    () =>
      Effect.gen(function* () {
        const { gateway, client } = yield* gatedSession
        yield* client.initialize()
        yield* client.sendRequest(5, "notifications/cancelled", { requestId: 4 })
        expect(yield* client.response(5)).toMatchObject({
          error: { code: -32600, message: expect.stringMatching(/notification and must not have an "id"/) },
        })
        yield* stillServes(client, 6)
        expect(gateway.child("mini").received.filter((m) => m.method === "notifications/cancelled")).toEqual(
          [],
        )
      }),
  )

  it.scopedLive("answers ping before initialize, refuses anything else, then serves once initialized", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* gatedSession
      yield* stillServes(client, 1)
      expect(yield* client.request(2, "tools/list")).toMatchObject({
        error: {
          code: -32600,
          message: expect.stringMatching(/tools\/list before initialize; send initialize first/),
        },
      })
      // Nothing reached the session's child: it is not even started before initialize.
      expect(gateway.child("mini").received.filter((m) => m.method === "tools/list")).toHaveLength(1)
      yield* client.initialize()
      expect(yield* client.request(3, "tools/list")).toMatchObject({
        result: { tools: [{ name: "mini__echo" }, { name: "mini__sleep" }] },
      })
    }),
  )

  it.scopedLive("answers a request whose last line has no newline before the client closes its side", () =>
    Effect.gen(function* () {
      const { client } = yield* gatedSession
      yield* client.sendRaw('{"jsonrpc":"2.0","id":12,"method":"ping"}')
      yield* client.endInput
      expect(yield* client.response(12)).toMatchObject({ result: {} })
      expect(yield* client.exit).toBe(0)
    }),
  )
})
