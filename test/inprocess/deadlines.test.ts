/**
 * A 2025-era client that never answers a child's request: at the server's timeout (on the TestClock)
 * the child gets -32001 and the client notifications/cancelled for the request it let lapse.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, TestClock } from "effect"
import { startGateway, type ToolCall, text } from "../support/inprocess/index.js"

const timeoutSeconds = 2

const asker = {
  timeout: timeoutSeconds,
  tools: [
    {
      name: "ask",
      run: (call: ToolCall) =>
        call
          .ask("roots/list")
          .pipe(Effect.map((answer) => text(JSON.stringify(answer.result ?? answer.error)))),
    },
  ],
}

describe("deadlines of the client's answers", () => {
  it.scoped(
    "answers the child with -32001 at the server's timeout and tells the client it is cancelled",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({ servers: { asker } })
        const client = yield* gateway.connect()
        yield* client.initialize({ capabilities: { roots: {} } })
        yield* client.sendRequest(1, "tools/call", { name: "asker__ask", arguments: {} })
        const asked = yield* client.serverRequest("roots/list")
        const answersToChild = () => gateway.child("asker").received.filter((m) => m.id === "ask-1")
        yield* TestClock.adjust(Duration.subtract(Duration.seconds(timeoutSeconds), Duration.millis(1)))
        expect(answersToChild()).toEqual([])
        expect(client.messages.filter((m) => m.method === "notifications/cancelled")).toEqual([])
        yield* TestClock.adjust(Duration.millis(1))
        const answer = yield* gateway.child("asker").received.waitFor((m) => m.id === "ask-1")
        expect(answer).toMatchObject({
          error: {
            code: -32001,
            message: expect.stringMatching(/the client did not answer roots\/list within 2s/),
          },
        })
        expect(yield* client.notification("notifications/cancelled")).toMatchObject({
          params: {
            requestId: asked.id,
            reason: expect.stringMatching(/did not answer roots\/list within 2s/),
          },
        })
        // The child's call goes on with the error it got, and a late answer reaches nobody.
        expect(JSON.stringify((yield* client.response(1)).result)).toContain("-32001")
        yield* client.respond(asked.id, { roots: [] })
        yield* gateway.logs.waitFor((line) =>
          line.includes(`ignored a response of the client to request id ${asked.id}`),
        )
        expect(answersToChild()).toHaveLength(1)
      }),
  )

  it.scoped("passes an answer in time back to the child, and nothing fires at the deadline", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { asker } })
      const client = yield* gateway.connect()
      yield* client.initialize({ capabilities: { roots: {} } })
      yield* client.sendRequest(1, "tools/call", { name: "asker__ask", arguments: {} })
      const asked = yield* client.serverRequest("roots/list")
      yield* TestClock.adjust(Duration.millis(1900))
      yield* client.respond(asked.id, { roots: [{ uri: "file:///in/time" }] })
      expect(JSON.stringify((yield* client.response(1)).result)).toContain("file:///in/time")
      yield* TestClock.adjust(Duration.seconds(10))
      expect(yield* client.request(2, "ping")).toMatchObject({ result: {} })
      expect(gateway.child("asker").received.filter((m) => m.id === "ask-1")).toHaveLength(1)
      expect(client.messages.filter((m) => m.method === "notifications/cancelled")).toEqual([])
    }),
  )
})
