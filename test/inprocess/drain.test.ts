/**
 * The drain in process, on the TestClock: what SIGTERM starts (ops/shutdown.ts) without a signal.
 * New requests are refused, calls in flight finish or the timeout passes, listens end at once.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Fiber, TestClock } from "effect"
import { modernEnvelope, startGateway, type ToolCall, text } from "../support/inprocess/index.js"

/** A tool that answers after `seconds` of the Effect clock. */
const slowServer = {
  tools: [
    { name: "echo" },
    {
      name: "slow",
      run: (call: ToolCall) =>
        Effect.sleep(Duration.seconds(Number(call.arguments.seconds ?? 5))).pipe(Effect.as(text("slept"))),
    },
  ],
}

describe("the drain", () => {
  it.scoped("refuses new requests, lets the call in flight finish, and ends when it has", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { alpha: slowServer }, settings: { drainTimeout: 30 } })
      const client = yield* gateway.connect()
      yield* client.initialize()
      yield* client.sendRequest(1, "tools/call", { name: "alpha__slow", arguments: { seconds: 5 } })
      yield* gateway.child("alpha").received.waitFor((m) => m.method === "tools/call")
      expect(gateway.drain.inFlight()).toBe(1)

      const drain = yield* Effect.fork(gateway.drain.run(Effect.never))
      yield* gateway.logs.waitFor((line) => line.includes("drain started: 1 call in flight"))
      expect(gateway.drain.draining()).toBe(true)
      expect(yield* client.request(2, "tools/call", { name: "alpha__echo", arguments: {} })).toMatchObject({
        error: { code: -32000, message: "the gateway is shutting down" },
      })
      expect(yield* client.request(3, "ping")).toMatchObject({ error: { code: -32000 } })
      // Refused requests never reach a child, nor count as in flight.
      expect(gateway.child("alpha").received.filter((m) => m.method === "tools/call")).toHaveLength(1)
      expect(gateway.drain.inFlight()).toBe(1)

      yield* TestClock.adjust(Duration.seconds(5))
      expect(yield* client.response(1)).toMatchObject({ result: { content: [{ text: "slept" }] } })
      expect(yield* Fiber.join(drain)).toMatchObject({ _tag: "Finished" })
      expect(gateway.drain.inFlight()).toBe(0)
    }),
  )

  it.scoped("gives up at the drain timeout, saying how many calls are still in flight", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { alpha: slowServer }, settings: { drainTimeout: 2 } })
      const client = yield* gateway.connect()
      yield* client.initialize()
      for (const id of [1, 2]) {
        yield* client.sendRequest(id, "tools/call", { name: "alpha__slow", arguments: { seconds: 60 } })
      }
      yield* gateway.child("alpha").received.waitForCount((m) => m.method === "tools/call", 2)
      const drain = yield* Effect.fork(gateway.drain.run(Effect.never))
      yield* gateway.logs.waitFor((line) => line.includes("drain started: 2 calls in flight"))
      yield* TestClock.adjust(Duration.seconds(2))
      expect(yield* Fiber.join(drain)).toEqual({ _tag: "TimedOut", remaining: 2 })
      yield* gateway.logs.waitFor((line) =>
        line.includes("drain timed out after 2s: 2 calls still in flight"),
      )
    }),
  )

  it.scoped("with a timeout of 0, does not wait at all", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { alpha: slowServer }, settings: { drainTimeout: 0 } })
      const client = yield* gateway.connect()
      yield* client.initialize()
      yield* client.sendRequest(1, "tools/call", { name: "alpha__slow", arguments: { seconds: 60 } })
      yield* gateway.child("alpha").received.waitFor((m) => m.method === "tools/call")
      expect(yield* gateway.drain.run(Effect.never)).toEqual({ _tag: "TimedOut", remaining: 1 })
    }),
  )

  it.scoped("is cut short when asked (a second signal)", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { alpha: slowServer }, settings: { drainTimeout: 30 } })
      const client = yield* gateway.connect()
      yield* client.initialize()
      yield* client.sendRequest(1, "tools/call", { name: "alpha__slow", arguments: { seconds: 60 } })
      yield* gateway.child("alpha").received.waitFor((m) => m.method === "tools/call")
      expect(yield* gateway.drain.run(Effect.void)).toEqual({ _tag: "Cut", remaining: 1 })
    }),
  )

  it.scopedLive("ends a modern client's subscriptions/listen at once, so it does not hold the drain", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { alpha: slowServer }, settings: { drainTimeout: 30 } })
      const client = yield* gateway.connect()
      yield* client.sendRequest("listen-1", "subscriptions/listen", {
        _meta: modernEnvelope(),
        notifications: { toolsListChanged: true },
      })
      yield* client.notification("notifications/subscriptions/acknowledged")
      expect(gateway.drain.inFlight()).toBe(1)
      expect(yield* gateway.drain.run(Effect.never)).toMatchObject({ _tag: "Finished" })
      expect(yield* client.response("listen-1")).toMatchObject({ result: { resultType: "complete" } })
    }),
  )

  it.scoped(
    "refuses a session opened once the drain has begun, on its stderr, without starting children",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({
          servers: { alpha: slowServer },
          settings: { drainTimeout: 30 },
        })
        yield* gateway.drain.run(Effect.never)
        const started = gateway.child("alpha").starts()
        const client = yield* gateway.connect()
        expect(yield* client.exit).toBe(1)
        expect(client.stderr()).toBe("mcp-ssh: the gateway is shutting down\n")
        expect(gateway.child("alpha").starts()).toBe(started)
      }),
  )
})
