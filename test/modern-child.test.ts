/**
 * The connection of a modern child (modernChild.ts) over a scripted child, without processes: what it
 * sends the child, what it answers itself, and how an input_required becomes requests and a retry.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { makeModernChild, withClientCapabilities } from "../src/gateway/children/modernChild.js"
import type { CallOutcome } from "../src/gateway/children/pendingCalls.js"
import type { ChildMessage, UpstreamConnection } from "../src/gateway/children/Upstream.js"
import { requestThrough } from "../src/gateway/children/Upstream.js"
import { UpstreamError } from "../src/gateway/errors.js"
import {
  ErrorCode,
  isObject,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
  type OutgoingResponse,
} from "../src/shared/jsonRpc.js"

interface Sent {
  readonly request: JsonRpcRequest
  readonly done: (outcome: CallOutcome) => void
  cancelled: boolean
}

/** A child that records what it is sent; the test answers each request by hand. */
const scriptedChild = () => {
  const sent: Array<Sent> = []
  const call = (request: JsonRpcRequest, done: (outcome: CallOutcome) => void) => {
    const entry: Sent = { request, done, cancelled: false }
    sent.push(entry)
    return () => {
      entry.cancelled = true
    }
  }
  const raw: UpstreamConnection = {
    name: "m",
    call,
    request: requestThrough(call),
    send: () => Effect.void,
    exited: Effect.never as Effect.Effect<UpstreamError>,
    drain: () => Effect.void,
  }
  return { raw, sent }
}

const start = (capabilities: Record<string, unknown> = {}) => {
  const child = scriptedChild()
  const delivered: Array<ChildMessage> = []
  const modern = makeModernChild({
    raw: child.raw,
    capabilities,
    clientCapabilities: { elicitation: {}, sampling: {} },
    clientInfo: { name: "client", version: "1" },
    deliver: (_connection, message) => Effect.sync(() => delivered.push(message)),
    run: (effect) => Effect.runSync(effect),
  })
  return { ...child, delivered, modern }
}

const complete = (id: JsonRpcResponse["id"], result: Record<string, unknown>): JsonRpcResponse => ({
  jsonrpc: "2.0",
  id,
  result,
})

const outcomes = () => {
  const got: Array<OutgoingResponse | UpstreamError> = []
  return { got, done: (outcome: CallOutcome) => got.push(outcome) }
}

describe("a modern child's connection", () => {
  it("answers ping and logging/setLevel itself, and sends the level with each request", () => {
    const { modern, sent } = start()
    const { got, done } = outcomes()
    modern.connection.call({ jsonrpc: "2.0", id: 1, method: "ping" }, done)
    modern.connection.call(
      { jsonrpc: "2.0", id: 2, method: "logging/setLevel", params: { level: "debug" } },
      done,
    )
    expect(got).toEqual([complete(1, {}), complete(2, {})])
    modern.connection.call({ jsonrpc: "2.0", id: 3, method: "tools/list" }, done)
    expect(sent).toHaveLength(1)
    expect(sent[0]?.request.params?._meta).toEqual({
      "io.modelcontextprotocol/protocolVersion": "2026-07-28",
      "io.modelcontextprotocol/clientCapabilities": { elicitation: { form: {} }, sampling: {} },
      "io.modelcontextprotocol/clientInfo": { name: "client", version: "1" },
      "io.modelcontextprotocol/logLevel": "debug",
    })
    sent[0]?.done(complete(3, { tools: [], resultType: "complete", ttlMs: 0, cacheScope: "private" }))
    expect(got[2]).toEqual(complete(3, { tools: [] }))
  })

  it("turns input_required into requests, and retries with the answers and the requestState", () => {
    const { modern, sent, delivered } = start()
    const { got, done } = outcomes()
    modern.connection.call({ jsonrpc: "2.0", id: 7, method: "tools/call", params: { name: "ask" } }, done)
    sent[0]?.done(
      complete(7, {
        resultType: "input_required",
        inputRequests: {
          name: { method: "elicitation/create", params: { message: "Name?" } },
          model: { method: "sampling/createMessage", params: { maxTokens: 5 } },
        },
        requestState: "state-1",
      }),
    )
    expect(delivered.map((message) => message.method)).toEqual([
      "elicitation/create",
      "sampling/createMessage",
    ])
    const [elicit, sample] = delivered as Array<JsonRpcRequest>
    Effect.runSync(
      modern.connection.send(complete(elicit?.id ?? 0, { action: "accept", content: { name: "Di" } })),
    )
    expect(sent).toHaveLength(1)
    Effect.runSync(
      modern.connection.send(complete(sample?.id ?? 0, { content: { type: "text", text: "hi" } })),
    )
    expect(sent).toHaveLength(2)
    expect(sent[1]?.request.params).toMatchObject({
      name: "ask",
      requestState: "state-1",
      inputResponses: {
        name: { action: "accept", content: { name: "Di" } },
        model: { content: { type: "text", text: "hi" } },
      },
    })
    sent[1]?.done(complete(7, { content: [{ type: "text", text: "done" }], resultType: "complete" }))
    expect(got).toEqual([complete(7, { content: [{ type: "text", text: "done" }] })])
  })

  it("fails the call with the client's error, and withdraws open questions when cancelled", () => {
    const { modern, sent, delivered } = start()
    const { got, done } = outcomes()
    modern.connection.call({ jsonrpc: "2.0", id: 8, method: "tools/call", params: { name: "ask" } }, done)
    sent[0]?.done(
      complete(8, { resultType: "input_required", inputRequests: { a: { method: "roots/list" } } }),
    )
    const [question] = delivered as Array<JsonRpcRequest>
    Effect.runSync(
      modern.connection.send({
        jsonrpc: "2.0",
        id: question?.id ?? 0,
        error: { code: -32601, message: "no roots" },
      }),
    )
    expect(got).toEqual([{ jsonrpc: "2.0", id: 8, error: { code: -32601, message: "no roots" } }])

    const cancel = modern.connection.call({ jsonrpc: "2.0", id: 9, method: "tools/call", params: {} }, done)
    sent[1]?.done(
      complete(9, { resultType: "input_required", inputRequests: { b: { method: "roots/list" } } }),
    )
    cancel()
    const withdrawn = delivered.at(-1) as JsonRpcNotification
    expect(withdrawn.method).toBe("notifications/cancelled")
    expect(withdrawn.params?.requestId).toBe((delivered.at(-2) as JsonRpcRequest).id)
    expect(got).toHaveLength(1)
  })

  it("gives a marked call the child's answer as it is, input_required included", () => {
    const { modern, sent, delivered } = start()
    const { got, done } = outcomes()
    modern.connection.call(
      {
        jsonrpc: "2.0",
        id: 10,
        method: "tools/call",
        params: { name: "ask", _meta: { "mcp-ssh/answerAsGiven": true, progressToken: 1 } },
      },
      done,
    )
    expect(sent[0]?.request.params?._meta).not.toHaveProperty("mcp-ssh/answerAsGiven")
    expect(sent[0]?.request.params?._meta).toHaveProperty("progressToken", 1)
    const answer = complete(10, { resultType: "input_required", inputRequests: {}, requestState: "s" })
    sent[0]?.done(answer)
    expect(got).toEqual([answer])
    expect(delivered).toEqual([])
  })

  it("keeps subscriptions in one listen at the child, and hands its changes on as a 2025 child's", () => {
    const capabilities = { tools: { listChanged: true }, resources: { subscribe: true } }
    const { modern, sent, delivered } = start(capabilities)
    expect(sent[0]?.request.method).toBe("subscriptions/listen")
    expect(sent[0]?.request.params?.notifications).toMatchObject({
      toolsListChanged: true,
      resourceSubscriptions: [],
    })
    const { got, done } = outcomes()
    modern.connection.call(
      { jsonrpc: "2.0", id: 11, method: "resources/subscribe", params: { uri: "a://1" } },
      done,
    )
    // The old listen goes, a new one names the URI; the subscribe is answered once it is acknowledged.
    expect(sent[0]?.cancelled).toBe(true)
    expect(sent[1]?.request.params?.notifications).toMatchObject({ resourceSubscriptions: ["a://1"] })
    expect(got).toEqual([])
    const subscription = { "io.modelcontextprotocol/subscriptionId": 2 }
    Effect.runSync(
      modern.fromChild({
        jsonrpc: "2.0",
        method: "notifications/subscriptions/acknowledged",
        params: { _meta: subscription },
      }),
    )
    expect(got).toEqual([complete(11, {})])
    Effect.runSync(
      modern.fromChild({
        jsonrpc: "2.0",
        method: "notifications/resources/updated",
        params: { uri: "a://1", _meta: subscription },
      }),
    )
    expect(delivered).toEqual([
      { jsonrpc: "2.0", method: "notifications/resources/updated", params: { uri: "a://1" } },
    ])
  })

  it("answers a subscribe whose listen was withdrawn before its acknowledgement", () => {
    const { modern, sent } = start({ resources: { subscribe: true } })
    expect(sent).toHaveLength(0)
    const { got, done } = outcomes()
    modern.connection.call(
      { jsonrpc: "2.0", id: 13, method: "resources/subscribe", params: { uri: "a://1" } },
      done,
    )
    expect(sent[0]?.request.method).toBe("subscriptions/listen")
    // Unsubscribed before the child acknowledged: no listen is wanted any more, and both are answered.
    modern.connection.call(
      { jsonrpc: "2.0", id: 14, method: "resources/unsubscribe", params: { uri: "a://1" } },
      done,
    )
    expect(sent[0]?.cancelled).toBe(true)
    expect(got).toEqual([complete(13, {}), complete(14, {})])
  })

  it("adopted as a spare, sends the session's client capabilities, not the spare's", () => {
    const { modern, sent } = start()
    const session = withClientCapabilities(modern.connection, () => ({ roots: {} }))
    const { done } = outcomes()
    session.call({ jsonrpc: "2.0", id: 15, method: "tools/call", params: { name: "t" } }, done)
    const meta = sent.at(-1)?.request.params?._meta
    expect(isObject(meta) && meta["io.modelcontextprotocol/clientCapabilities"]).toEqual({ roots: {} })
  })

  it("opens the listen again after the gateway's deadline, and not after the child closed it", () => {
    const { sent } = start({ tools: { listChanged: true } })
    sent[0]?.done(new UpstreamError({ server: "m", code: ErrorCode.RequestTimeout, reason: "timed out" }))
    expect(sent.map((entry) => entry.request.method)).toEqual([
      "subscriptions/listen",
      "subscriptions/listen",
    ])
    sent[1]?.done(complete("listen", {}))
    expect(sent).toHaveLength(2)
  })

  it("ends its listen when it drains, so a reload waits only for the calls", () => {
    const { modern, sent } = start({ tools: { listChanged: true } })
    const reason = new UpstreamError({
      server: "m",
      code: ErrorCode.ServerUnavailable,
      reason: "was removed",
    })
    Effect.runSync(modern.connection.drain(Duration.seconds(1), reason))
    expect(sent[0]?.cancelled).toBe(true)
    const { got, done } = outcomes()
    modern.connection.call(
      { jsonrpc: "2.0", id: 12, method: "resources/subscribe", params: { uri: "a://1" } },
      done,
    )
    expect(got).toEqual([complete(12, {})])
    expect(sent).toHaveLength(1)
  })
})
