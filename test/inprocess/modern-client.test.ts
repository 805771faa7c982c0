/**
 * A client of MCP 2026-07-28 against 2025-era children, in process: results dressed for 2026, changes
 * only on subscriptions/listen, and a child's requests of the client turned into input_required rounds.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, TestClock } from "effect"
import type { JsonObject } from "../../src/shared/jsonRpc.js"
import {
  advanceUntil,
  modernEnvelope,
  startGateway,
  type TestClient,
  type ToolCall,
  text,
} from "../support/inprocess/index.js"

const envelope = modernEnvelope

/** A tool that asks the client what its arguments say, all at once, and answers with the answers. */
const ask = {
  name: "ask",
  run: (call: ToolCall) =>
    Effect.forEach(
      call.arguments.asks as Array<{ method: string; params?: JsonObject }>,
      (question) => call.ask(question.method, question.params),
      { concurrency: "unbounded" },
    ).pipe(
      Effect.map((answers) => text(JSON.stringify(answers.map((answer) => answer.result ?? answer.error)))),
    ),
}
const mini = {
  tools: [
    { name: "echo" },
    {
      name: "updated",
      run: (call: ToolCall) =>
        Effect.gen(function* () {
          for (const uri of ["mini://a", "mini://b"])
            yield* call.notify("notifications/resources/updated", { uri })
          return text("announced")
        }),
    },
  ],
  resources: [{ uri: "mini://a" }, { uri: "mini://b" }],
}

interface InputRound {
  readonly resultType: string
  readonly inputRequests: Record<string, { method: string; params: JsonObject }>
  readonly requestState: string
}

const callAsk = (
  client: TestClient,
  id: number,
  asks: ReadonlyArray<{ method: string; params?: JsonObject }>,
) => client.request(id, "tools/call", { name: "asker__ask", arguments: { asks }, _meta: envelope() })

describe("raw 2026-07-28 requests", () => {
  it.scopedLive("dresses results with resultType and cache hints", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { mini } })
      const client = yield* gateway.connect()
      const listed = yield* client.request(1, "tools/list", { _meta: envelope() })
      expect(listed.result).toMatchObject({ resultType: "complete", ttlMs: 0, cacheScope: "private" })
    }),
  )

  it.scopedLive("refuses what 2026-07-28 does not have, and requests without an envelope", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { mini } })
      const client = yield* gateway.connect()
      yield* client.request(1, "tools/list", { _meta: envelope() })
      expect(yield* client.request(2, "ping", { _meta: envelope() })).toMatchObject({
        error: { code: -32601 },
      })
      expect(
        yield* client.request(3, "initialize", {
          protocolVersion: "2025-11-25",
          capabilities: {},
          clientInfo: {},
        }),
      ).toMatchObject({ error: { code: -32022, data: { supported: ["2026-07-28"] } } })
      expect(yield* client.request(4, "tools/list", {})).toMatchObject({ error: { code: -32602 } })
      expect(
        yield* client.request(5, "tools/list", {
          _meta: envelope({ "io.modelcontextprotocol/protocolVersion": "2099-01-01" }),
        }),
      ).toMatchObject({ error: { code: -32022, data: { requested: "2099-01-01" } } })
    }),
  )

  it.scopedLive(
    "delivers changes on subscriptions/listen only, tagged with its id, and ends it when input ends",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({ servers: { mini } })
        const client = yield* gateway.connect()
        yield* client.sendRequest("listen-1", "subscriptions/listen", {
          _meta: envelope(),
          notifications: { toolsListChanged: true, resourceSubscriptions: ["mini://a"] },
        })
        const ack = yield* client.notification("notifications/subscriptions/acknowledged")
        expect(ack.params).toMatchObject({
          notifications: { toolsListChanged: true, resourceSubscriptions: ["mini://a"] },
          _meta: { "io.modelcontextprotocol/subscriptionId": "listen-1" },
        })
        yield* client.request(6, "tools/call", { _meta: envelope(), name: "mini__updated", arguments: {} })
        const updated = yield* client.notification("notifications/resources/updated")
        expect(updated.params).toMatchObject({
          uri: "mini://a",
          _meta: { "io.modelcontextprotocol/subscriptionId": "listen-1" },
        })
        // The child announced mini://b before it answered call 6: had it been delivered, it would be here.
        expect(client.messages.filter((m) => m.method === "notifications/resources/updated")).toHaveLength(1)
        yield* client.endInput
        expect(yield* client.response("listen-1")).toMatchObject({
          result: { resultType: "complete", _meta: { "io.modelcontextprotocol/subscriptionId": "listen-1" } },
        })
        expect(yield* client.exit).toBe(0)
      }),
  )
})

describe("input_required", () => {
  it.scopedLive(
    "turns each of a child's sampling, elicitation and roots requests into a round, and resumes the call",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({ servers: { asker: { tools: [ask] } } })
        const client = yield* gateway.connect()
        const cases = [
          {
            method: "sampling/createMessage",
            params: { messages: [{ role: "user", content: { type: "text", text: "hello" } }], maxTokens: 5 },
            answer: { model: "test-model", role: "assistant", content: { type: "text", text: "sampled" } },
          },
          {
            method: "elicitation/create",
            params: { message: "Proceed?", requestedSchema: { type: "object" } },
            answer: { action: "accept", content: { ok: true } },
          },
          {
            method: "roots/list",
            params: {},
            answer: { roots: [{ uri: "file:///srv/modern", name: "modern" }] },
          },
        ]
        for (const [index, { method, params, answer }] of cases.entries()) {
          const id = 10 * (index + 1)
          const paused = yield* callAsk(client, id, [
            { method, params: { ...params, _meta: { childOnly: true } } },
          ])
          const round = paused.result as InputRound
          // The child's own _meta is its own business: the client sees the question only.
          expect(round).toMatchObject({
            resultType: "input_required",
            inputRequests: { "input-1": { method, params } },
          })
          expect(round.inputRequests["input-1"]?.params).not.toHaveProperty("_meta")
          const resumed = yield* client.request(id + 1, "tools/call", {
            name: "asker__ask",
            arguments: {},
            requestState: round.requestState,
            inputResponses: { "input-1": answer },
            _meta: envelope(),
          })
          expect(resumed.result).toMatchObject({
            resultType: "complete",
            content: [{ text: JSON.stringify([answer]) }],
          })
          // The child got the answer under the id it asked with.
          const answered = yield* gateway.child("asker").received.waitFor((m) => m.id === `ask-${index + 1}`)
          expect(answered).toMatchObject({ result: answer })
        }
      }),
  )

  it.scopedLive("asks what a child asks in one burst in one round, and answers each question", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { asker: { tools: [ask] } } })
      const client = yield* gateway.connect()
      const paused = yield* callAsk(client, 1, [
        { method: "elicitation/create", params: { message: "Name?" } },
        { method: "roots/list" },
      ])
      const round = paused.result as InputRound
      expect(round.resultType).toBe("input_required")
      expect(
        Object.values(round.inputRequests)
          .map((request) => request.method)
          .sort(),
      ).toEqual(["elicitation/create", "roots/list"])
      const answers = Object.fromEntries(
        Object.entries(round.inputRequests).map(([key, request]) => [
          key,
          request.method === "roots/list" ? { roots: [] } : { action: "accept", content: { name: "Ada" } },
        ]),
      )
      const resumed = yield* client.request(2, "tools/call", {
        name: "asker__ask",
        arguments: {},
        requestState: round.requestState,
        inputResponses: answers,
        _meta: envelope(),
      })
      expect(resumed.result).toMatchObject({
        resultType: "complete",
        content: [{ text: JSON.stringify([{ action: "accept", content: { name: "Ada" } }, { roots: [] }]) }],
      })
    }),
  )

  it.scopedLive("refuses an unknown requestState, and a requestState used once already", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { asker: { tools: [ask] } } })
      const client = yield* gateway.connect()
      const retry = (id: number, requestState: string) =>
        client.request(id, "tools/call", {
          name: "asker__ask",
          arguments: {},
          requestState,
          inputResponses: { "input-1": { roots: [] } },
          _meta: envelope(),
        })
      expect(yield* retry(1, "made-up")).toMatchObject({
        error: { code: -32602, message: expect.stringMatching(/unknown or expired requestState/) },
      })
      const round = (yield* callAsk(client, 2, [{ method: "roots/list" }])).result as InputRound
      expect(yield* retry(3, round.requestState)).toMatchObject({ result: { resultType: "complete" } })
      expect(yield* retry(4, round.requestState)).toMatchObject({
        error: { code: -32602, message: expect.stringMatching(/unknown or expired requestState/) },
      })
    }),
  )
})

describe("a paused call whose client never comes back", () => {
  it.scoped(
    "answers the child's question with -32001 at the server's timeout and forgets the requestState",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({ servers: { asker: { tools: [ask], timeout: 1 } } })
        const client = yield* gateway.connect()
        // The round is gathered over a few milliseconds of the clock: move it until the answer comes.
        const paused = yield* advanceUntil(callAsk(client, 1, [{ method: "roots/list" }]))
        expect(paused.result).toMatchObject({ resultType: "input_required" })
        const requestState = (paused.result as InputRound).requestState
        yield* TestClock.adjust(Duration.seconds(1))
        yield* gateway.logs.waitFor((line) =>
          /level=WARN .*cancelled a paused call of server 'asker': the client did not answer input_required within 1s/.test(
            line,
          ),
        )
        const answer = yield* gateway.child("asker").received.waitFor((m) => m.id === "ask-1")
        expect(answer).toMatchObject({ error: { code: -32001 } })
        expect(
          yield* client.request(2, "tools/call", {
            name: "asker__ask",
            arguments: {},
            requestState,
            inputResponses: { "input-1": { roots: [] } },
            _meta: envelope(),
          }),
        ).toMatchObject({
          error: { code: -32602, message: expect.stringMatching(/unknown or expired requestState/) },
        })
        expect(yield* client.request(3, "tools/list", { _meta: envelope() })).toHaveProperty("result")
      }),
  )
})
