/**
 * A shared server in process: one child for every session, and what multiplexing it must keep
 * apart: answers, progress, cancellation of a session that goes, subscriptions counted per URI, log
 * levels per session, the child's own requests, crashes, and the idle stop.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  type FakeServerScript,
  type FakeTool,
  startGateway,
  text,
  toolNames,
} from "../support/inprocess/index.js"

const echo: FakeTool = {
  name: "echo",
  run: (call) => Effect.succeed(text(`Echo: ${String(call.arguments.message)}`)),
}
const steps: FakeTool = {
  name: "steps",
  run: (call) =>
    Effect.gen(function* () {
      yield* call.progress(1, 2)
      yield* call.progress(2, 2)
      return text("done")
    }),
}
const hangs: FakeTool = { name: "hangs", run: () => Effect.never }
const asks: FakeTool = {
  name: "asks",
  run: (call) =>
    call
      .ask(String(call.arguments.method ?? "sampling/createMessage"), {})
      .pipe(Effect.map((answer) => text(JSON.stringify(answer.result ?? answer.error)))),
}
const logs: FakeTool = {
  name: "logs",
  run: (call) =>
    Effect.gen(function* () {
      yield* call.log("debug", "a debug line")
      yield* call.log("error", "an error line")
      return text("logged")
    }),
}
const updates: FakeTool = {
  name: "updates",
  run: (call) =>
    call.notify("notifications/resources/updated", { uri: "mini://a" }).pipe(Effect.as(text("ok"))),
}

const shared: FakeServerScript = {
  scope: "shared",
  tools: [echo, steps, hangs, asks, logs, updates],
  resources: [{ uri: "mini://a" }],
  logging: true,
}

const twoSessions = (script: FakeServerScript = shared) =>
  Effect.gen(function* () {
    const gateway = yield* startGateway({ servers: { hub: script } })
    const a = yield* gateway.connect({ as: { identity: "alice" } })
    yield* a.initialize({ capabilities: { sampling: {} } })
    const b = yield* gateway.connect({ as: { identity: "bob" } })
    yield* b.initialize()
    return { gateway, a, b }
  })

const callsAtChild = (messages: ReadonlyArray<object>, method: string) =>
  messages.filter((message) => "method" in message && message.method === method).length

describe("shared scope", () => {
  it.scopedLive("one child serves both sessions, each gets its own answers and its own progress", () =>
    Effect.gen(function* () {
      const { gateway, a, b } = yield* twoSessions()
      // One start for the probe at gateway start, one for the shared child: not one per session.
      expect(gateway.child("hub").starts()).toBe(2)
      const [fromA, fromB] = yield* Effect.all(
        [
          a.request(1, "tools/call", { name: "hub__echo", arguments: { message: "from-a" } }),
          b.request(1, "tools/call", { name: "hub__echo", arguments: { message: "from-b" } }),
        ],
        { concurrency: "unbounded" },
      )
      expect(JSON.stringify(fromA.result)).toContain("from-a")
      expect(JSON.stringify(fromB.result)).toContain("from-b")
      yield* Effect.all(
        [
          a.request(2, "tools/call", { name: "hub__steps", arguments: {}, _meta: { progressToken: "same" } }),
          b.request(2, "tools/call", { name: "hub__steps", arguments: {}, _meta: { progressToken: "same" } }),
        ],
        { concurrency: "unbounded" },
      )
      for (const client of [a, b]) {
        const progress = client.messages.filter((m) => m.method === "notifications/progress")
        expect(progress.map((m) => (m.params as { progressToken: unknown }).progressToken)).toEqual([
          "same",
          "same",
        ])
      }
      // The child saw tokens of the gateway's, never the clients' own.
      const tokens = gateway
        .child("hub")
        .received.filter((m) => m.method === "tools/call")
        .map((m) => JSON.stringify(m.params))
      expect(tokens.some((t) => t.includes('"progressToken":"same"'))).toBe(false)
    }),
  )

  it.scopedLive("a session that closes cancels its call at the child; the other's goes on", () =>
    Effect.gen(function* () {
      const { gateway, a, b } = yield* twoSessions()
      yield* a.sendRequest(7, "tools/call", { name: "hub__hangs", arguments: {} })
      const child = gateway.child("hub")
      const sent = yield* child.received.waitFor((m) => m.method === "tools/call")
      yield* a.close
      const cancelled = yield* child.received.waitFor((m) => m.method === "notifications/cancelled")
      expect((cancelled.params as { requestId: unknown }).requestId).toBe((sent as { id: unknown }).id)
      const answer = yield* b.request(1, "tools/call", { name: "hub__echo", arguments: { message: "still" } })
      expect(JSON.stringify(answer.result)).toContain("still")
    }),
  )

  it.scopedLive("subscriptions are counted per URI and updates go to subscribers only", () =>
    Effect.gen(function* () {
      const { gateway, a, b } = yield* twoSessions()
      const child = gateway.child("hub").received
      yield* a.request(1, "resources/subscribe", { uri: "mini://a" })
      yield* b.request(1, "resources/subscribe", { uri: "mini://a" })
      expect(callsAtChild(child.all(), "resources/subscribe")).toBe(1)
      yield* b.request(2, "resources/unsubscribe", { uri: "mini://a" })
      expect(callsAtChild(child.all(), "resources/unsubscribe")).toBe(0)
      yield* b.request(3, "tools/call", { name: "hub__updates", arguments: {} })
      yield* a.notification("notifications/resources/updated")
      expect(b.messages.filter((m) => m.method === "notifications/resources/updated")).toEqual([])
      yield* a.request(2, "resources/unsubscribe", { uri: "mini://a" })
      expect(callsAtChild(child.all(), "resources/unsubscribe")).toBe(1)
    }),
  )

  it.scopedLive("the child logs at the most verbose level asked; each session gets its own level", () =>
    Effect.gen(function* () {
      const { gateway, a, b } = yield* twoSessions()
      yield* a.request(1, "logging/setLevel", { level: "debug" })
      yield* b.request(1, "logging/setLevel", { level: "error" })
      const levels = gateway
        .child("hub")
        .received.filter((m) => m.method === "logging/setLevel")
        .map((m) => (m.params as { level: string }).level)
      expect(levels.at(-1)).toBe("debug")
      yield* a.request(2, "tools/call", { name: "hub__logs", arguments: {} })
      yield* b.request(2, "tools/call", { name: "hub__logs", arguments: {} })
      const levelsOf = (client: typeof a) =>
        client.messages
          .filter((m) => m.method === "notifications/message")
          .map((m) => (m.params as { level: string }).level)
      expect(levelsOf(b)).not.toContain("debug")
      expect(levelsOf(b)).toContain("error")
      expect(levelsOf(a)).toContain("debug")
    }),
  )

  it.scopedLive(
    "a child's request goes to the one session calling; a client without the capability gets -32601",
    () =>
      Effect.gen(function* () {
        const { a, b } = yield* twoSessions()
        yield* a.sendRequest(1, "tools/call", { name: "hub__asks", arguments: {} })
        const asked = yield* a.serverRequest("sampling/createMessage")
        yield* a.respond(asked.id, { model: "m", role: "assistant", content: { type: "text", text: "hi" } })
        expect(JSON.stringify((yield* a.response(1)).result)).toContain("assistant")
        // b's client did not declare sampling.
        const refused = yield* b.request(1, "tools/call", { name: "hub__asks", arguments: {} })
        expect(JSON.stringify(refused.result)).toContain("-32601")
        const roots = yield* b.request(2, "tools/call", {
          name: "hub__asks",
          arguments: { method: "roots/list" },
        })
        expect(JSON.stringify(roots.result)).toContain('{\\"roots\\":[]}')
      }),
  )

  it.scopedLive(
    "with two sessions calling, the child's request is refused and a warning names the server",
    () =>
      Effect.gen(function* () {
        const { gateway, a, b } = yield* twoSessions()
        yield* b.sendRequest(1, "tools/call", { name: "hub__hangs", arguments: {} })
        yield* gateway.child("hub").received.waitFor((m) => m.method === "tools/call")
        const answer = yield* a.request(1, "tools/call", { name: "hub__asks", arguments: {} })
        expect(JSON.stringify(answer.result)).toContain("cannot tell which session")
        yield* gateway.logs.waitFor((line) => line.includes("shared server 'hub'"))
      }),
  )

  it.scopedLive("a crash fails every session's calls with -32000 naming the server, and it comes back", () =>
    Effect.gen(function* () {
      const { gateway, a, b } = yield* twoSessions()
      yield* a.sendRequest(1, "tools/call", { name: "hub__hangs", arguments: {} })
      yield* b.sendRequest(1, "tools/call", { name: "hub__hangs", arguments: {} })
      const child = gateway.child("hub")
      yield* child.received.waitFor((m, i) => m.method === "tools/call" && i > 0)
      yield* child.crash(1)
      for (const client of [a, b]) {
        expect(yield* client.response(1)).toMatchObject({
          error: { code: -32000, message: expect.stringContaining("server 'hub'") },
        })
      }
      yield* a.notification("notifications/tools/list_changed")
      yield* a.notification("notifications/tools/list_changed")
      const again = yield* b.request(2, "tools/call", { name: "hub__echo", arguments: { message: "back" } })
      expect(JSON.stringify(again.result)).toContain("back")
    }),
  )

  it.scopedLive("stops when idle and starts again for the next session", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { hub: { ...shared, idleTimeout: 0.2 } } })
      const first = yield* gateway.connect()
      yield* first.initialize()
      const child = gateway.child("hub")
      expect(child.running()).toBe(true)
      yield* first.close
      yield* Effect.sleep("600 millis")
      expect(child.running()).toBe(false)
      const second = yield* gateway.connect()
      yield* second.initialize()
      const answer = yield* second.request(1, "tools/call", {
        name: "hub__echo",
        arguments: { message: "again" },
      })
      expect(JSON.stringify(answer.result)).toContain("again")
      expect(child.starts()).toBe(3)
    }),
  )

  it.scopedLive("identity scope: one child per identity", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { hub: { ...shared, scope: "identity" } } })
      for (const who of ["alice", "alice", "bob"]) {
        const client = yield* gateway.connect({ as: { identity: who } })
        yield* client.initialize()
      }
      expect(gateway.child("hub").starts()).toBe(3)
    }),
  )

  it.scopedLive("a reload that changes a shared server restarts its one child under every session", () =>
    Effect.gen(function* () {
      const { gateway, a, b } = yield* twoSessions()
      const child = gateway.child("hub")
      const before = child.starts()
      yield* gateway.reload({ hub: { ...shared, version: "2" } })
      // The probe of the new version, and one new shared child for both sessions.
      for (const client of [a, b]) {
        const answer = yield* client.request(9, "tools/call", {
          name: "hub__echo",
          arguments: { message: "v2" },
        })
        expect(JSON.stringify(answer.result)).toContain("v2")
      }
      expect(child.starts()).toBe(before + 2)
      yield* gateway.reload({ other: { tools: [echo] } })
      for (const client of [a, b]) {
        // Each session follows the published config in its own fiber; once its view has lost the
        // server, a call to it is a call to an unknown tool.
        let id = 100
        while ((yield* toolNames(client, id++)).includes("hub__echo")) yield* Effect.sleep("10 millis")
        const answer = yield* client.request(10, "tools/call", {
          name: "hub__echo",
          arguments: { message: "x" },
        })
        expect(answer.error).toBeDefined()
      }
    }),
  )
})
