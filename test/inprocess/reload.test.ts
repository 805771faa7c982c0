/**
 * A config reload under a live session, in process: added servers join, removed ones finish their
 * calls in flight (up to their timeout) and go, changed ones restart, and the rest is not touched.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import {
  type FakeServerScript,
  type FakeTool,
  type InProcessGateway,
  startGateway,
  type TestClient,
  text,
  toolNames,
} from "../support/inprocess/index.js"

const echo: FakeTool = {
  name: "echo",
  run: (call) => Effect.succeed(text(`echo ${String(call.arguments.message)}`)),
}

/** Answers once the test lets it. */
const gated = (gate: Deferred.Deferred<void>): FakeTool => ({
  name: "gated",
  run: () => Deferred.await(gate).pipe(Effect.as(text("let through"))),
})

/** Never answers, but keeps reporting progress, so only a drain's deadline ends it. */
const busy: FakeTool = {
  name: "busy",
  run: (call) => Effect.forever(call.progress(1).pipe(Effect.zipRight(Effect.sleep("50 millis")))),
}

const call = (client: TestClient, id: number, name: string, args: Record<string, unknown> = {}) =>
  client.request(id, "tools/call", { name, arguments: args })

const startWith = (servers: Record<string, FakeServerScript>) =>
  Effect.gen(function* () {
    const gateway: InProcessGateway = yield* startGateway({ servers })
    const client = yield* gateway.connect()
    yield* client.initialize()
    return { gateway, client }
  })

describe("config reload under a live session", () => {
  it.scopedLive("adds a server: list_changed, its tools, and the other child is not restarted", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* startWith({ alpha: { tools: [echo] } })
      expect(yield* toolNames(client, 1)).toEqual(["alpha__echo"])
      const alphaStarts = gateway.child("alpha").starts()

      const diff = yield* gateway.reload({ alpha: { tools: [echo] }, beta: { tools: [echo] } })
      expect(diff.added.map((server) => server.name)).toEqual(["beta"])
      yield* client.notification("notifications/tools/list_changed")
      expect(yield* toolNames(client, 2)).toEqual(["alpha__echo", "beta__echo"])
      expect(yield* call(client, 3, "beta__echo", { message: "hi" })).toMatchObject({
        result: text("echo hi"),
      })
      expect(gateway.child("alpha").starts()).toBe(alphaStarts)
    }),
  )

  it.scopedLive("removes a server: its call in flight finishes, then its names are unknown", () =>
    Effect.gen(function* () {
      const gate = yield* Deferred.make<void>()
      const { gateway, client } = yield* startWith({
        alpha: { tools: [echo] },
        beta: { tools: [gated(gate)] },
      })
      expect(yield* toolNames(client, 1)).toEqual(["alpha__echo", "beta__gated"])
      const inFlight = yield* Effect.fork(call(client, 2, "beta__gated"))
      yield* Effect.sleep("50 millis")

      yield* gateway.reload({ alpha: { tools: [echo] } })
      yield* client.notification("notifications/tools/list_changed")
      expect(yield* toolNames(client, 3)).toEqual(["alpha__echo"])
      // The unchanged server answers while the removed one drains.
      expect(yield* call(client, 4, "alpha__echo", { message: "still here" })).toMatchObject({
        result: text("echo still here"),
      })

      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(inFlight)).toMatchObject({ result: text("let through") })
      expect(yield* call(client, 5, "beta__gated")).toMatchObject({
        error: { code: -32602, message: "Unknown tool: beta__gated" },
      })
      // Its child stops once it is drained.
      yield* Effect.sleep("100 millis")
      expect(gateway.child("beta").running()).toBe(false)
    }),
  )

  it.scopedLive("removes a server: a call still running at the server's timeout gets -32000", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* startWith({
        alpha: { tools: [echo] },
        beta: { tools: [busy], timeout: 0.4 },
      })
      const inFlight = yield* Effect.fork(
        client.request(2, "tools/call", { name: "beta__busy", arguments: {}, _meta: { progressToken: "p" } }),
      )
      yield* Effect.sleep("50 millis")
      yield* gateway.reload({ alpha: { tools: [echo] } })
      expect(yield* Fiber.join(inFlight)).toMatchObject({
        error: { code: -32000, message: "server 'beta' was removed" },
      })
    }),
  )

  it.scopedLive("changes a server: it restarts with its new config; the unchanged one does not", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* startWith({ alpha: { tools: [echo] }, beta: { tools: [echo] } })
      expect(yield* call(client, 1, "beta__echo", { message: "before" })).toMatchObject({
        result: text("echo before"),
      })
      const alphaStarts = gateway.child("alpha").starts()
      const betaStarts = gateway.child("beta").starts()

      const diff = yield* gateway.reload({
        alpha: { tools: [echo] },
        beta: { tools: [echo], version: "2" },
      })
      expect(diff.changed.map((server) => server.name)).toEqual(["beta"])
      expect(diff.unchanged.map((server) => server.name)).toEqual(["alpha"])
      yield* client.notification("notifications/tools/list_changed")
      expect(yield* call(client, 2, "beta__echo", { message: "after" })).toMatchObject({
        result: text("echo after"),
      })
      expect(gateway.child("alpha").starts()).toBe(alphaStarts)
      // The reload's probe and the session's new child.
      expect(gateway.child("beta").starts()).toBe(betaStarts + 2)
    }),
  )

  it.scopedLive("refuses a reload whose merged names collide, and changes nothing", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* startWith({ alpha: { tools: [echo] } })
      const refused = yield* gateway
        .reload({ alpha: { tools: [echo] }, copy: { tools: [echo], prefix: "alpha" } })
        .pipe(Effect.exit)
      expect(Exit.isFailure(refused)).toBe(true)
      expect(JSON.stringify(refused)).toContain("'alpha__echo'")
      expect(yield* toolNames(client, 1)).toEqual(["alpha__echo"])
      expect(
        client.messages.all().some((message) => message.method === "notifications/tools/list_changed"),
      ).toBe(false)
    }),
  )

  it.scopedLive("a session that named its servers keeps to them: an added server does not join it", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { alpha: { tools: [echo] }, beta: { tools: [echo] } } })
      const client = yield* gateway.connect({ selection: ["alpha"] })
      yield* client.initialize()
      yield* gateway.reload({ alpha: { tools: [echo] }, beta: { tools: [echo] }, gamma: { tools: [echo] } })
      yield* Effect.sleep("100 millis")
      expect(yield* toolNames(client, 1)).toEqual(["alpha__echo"])
    }),
  )
})
