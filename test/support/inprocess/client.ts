/**
 * A client of an in-process session: it writes lines into the session's input stream and reads the
 * JSON-RPC lines the session writes, as an SSH client would on its channel.
 */
import { PassThrough } from "node:stream"
import { Deferred, Effect, Fiber, type Scope } from "effect"
import type { ClientIdentity } from "../../../src/gateway/hub/Hub.js"
import type { McpSession } from "../../../src/gateway/session/McpSession.js"
import type { JsonObject, JsonRpcId, JsonRpcRequest, JsonRpcResponse } from "../../../src/shared/jsonRpc.js"
import { Recorded } from "./recorded.js"

/** A message as the client read it off the wire. */
export type WireMessage = JsonObject

export interface TestClient {
  /** Everything the session wrote, parsed, in order. */
  readonly messages: Recorded<WireMessage>
  /** What the session wrote on its diagnostics stream (an SSH channel's stderr). */
  readonly stderr: () => string
  /** Raw bytes, newline included or not: for bad input. */
  readonly sendRaw: (data: string | Uint8Array) => Effect.Effect<void>
  /** One message as one line. */
  readonly send: (message: JsonObject) => Effect.Effect<void>
  readonly sendRequest: (id: JsonRpcId, method: string, params?: JsonObject) => Effect.Effect<void>
  /** Send a request and wait for its response. */
  readonly request: (id: JsonRpcId, method: string, params?: JsonObject) => Effect.Effect<JsonRpcResponse>
  readonly notify: (method: string, params?: JsonObject) => Effect.Effect<void>
  /** Answer a request the gateway made of the client. */
  readonly respond: (id: JsonRpcId, result: JsonObject) => Effect.Effect<void>
  /** The response to this id (null: to a line whose id could not be read). */
  readonly response: (id: JsonRpcId | null) => Effect.Effect<JsonRpcResponse>
  /** The next notification of this method (that matches) not returned by an earlier call. */
  readonly notification: (
    method: string,
    match?: (params: JsonObject) => boolean,
  ) => Effect.Effect<WireMessage>
  /** The next request of the gateway to the client of this method not returned by an earlier call. */
  readonly serverRequest: (method: string) => Effect.Effect<JsonRpcRequest>
  /** initialize (2025-era) and notifications/initialized. */
  readonly initialize: (options?: {
    readonly protocolVersion?: string
    readonly capabilities?: JsonObject
  }) => Effect.Effect<JsonRpcResponse>
  /** The client has nothing more to send (end of its input). */
  readonly endInput: Effect.Effect<void>
  /** The client closes the channel outright. */
  readonly close: Effect.Effect<void>
  /** The session's exit status, once it has ended. */
  readonly exit: Effect.Effect<number>
}

const isResponseTo = (id: JsonRpcId | null) => (message: WireMessage) =>
  message.id === id && message.method === undefined && ("result" in message || "error" in message)

export const connectClient = (
  session: McpSession["Type"],
  selection: ReadonlyArray<string>,
  identity: ClientIdentity,
): Effect.Effect<TestClient, never, Scope.Scope> =>
  Effect.gen(function* () {
    const input = new PassThrough()
    const output = new PassThrough()
    const diagnostics = new PassThrough()
    const closed = yield* Deferred.make<void>()
    const messages = new Recorded<WireMessage>("message from the gateway")
    let pendingText = ""
    output.setEncoding("utf8")
    output.on("data", (chunk: string) => {
      pendingText += chunk
      let newline = pendingText.indexOf("\n")
      while (newline !== -1) {
        const line = pendingText.slice(0, newline)
        pendingText = pendingText.slice(newline + 1)
        if (line.trim() !== "") messages.push(JSON.parse(line) as WireMessage)
        newline = pendingText.indexOf("\n")
      }
    })
    let stderr = ""
    diagnostics.setEncoding("utf8")
    diagnostics.on("data", (chunk: string) => {
      stderr += chunk
    })

    const served = yield* session
      .serve({ input, output, diagnostics, closed: Deferred.await(closed) }, selection, identity)
      .pipe(Effect.forkScoped)

    /** Messages already handed out by notification/serverRequest, so each is handed out once. */
    const taken = new Set<number>()
    const takeNext = (match: (message: WireMessage) => boolean) =>
      messages
        .waitForIndex((message, index) => !taken.has(index) && match(message))
        .pipe(
          Effect.map((index) => {
            taken.add(index)
            return messages.all()[index] as WireMessage
          }),
        )

    const sendRaw = (data: string | Uint8Array) =>
      Effect.sync(() => {
        input.write(data)
      })
    const send = (message: JsonObject) => sendRaw(`${JSON.stringify(message)}\n`)
    const sendRequest = (id: JsonRpcId, method: string, params?: JsonObject) =>
      send({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) })
    const response = (id: JsonRpcId | null) =>
      messages.waitFor(isResponseTo(id)).pipe(Effect.map((message) => message as JsonRpcResponse))
    const request = (id: JsonRpcId, method: string, params?: JsonObject) =>
      sendRequest(id, method, params).pipe(Effect.zipRight(response(id)))
    const notify = (method: string, params?: JsonObject) =>
      send({ jsonrpc: "2.0", method, ...(params === undefined ? {} : { params }) })

    return {
      messages,
      stderr: () => stderr,
      sendRaw,
      send,
      sendRequest,
      request,
      notify,
      respond: (id, result) => send({ jsonrpc: "2.0", id, result }),
      response,
      notification: (method, match) =>
        takeNext(
          (message) =>
            message.method === method &&
            message.id === undefined &&
            (match === undefined || match((message.params ?? {}) as JsonObject)),
        ),
      serverRequest: (method) =>
        takeNext((message) => message.method === method && message.id !== undefined).pipe(
          Effect.map((message) => message as JsonRpcRequest),
        ),
      initialize: (options = {}) =>
        request("init", "initialize", {
          protocolVersion: options.protocolVersion ?? "2025-06-18",
          capabilities: options.capabilities ?? {},
          clientInfo: { name: "mcp-ssh-tests", version: "1" },
        }).pipe(Effect.tap(() => notify("notifications/initialized"))),
      endInput: Effect.sync(() => {
        input.end()
      }),
      // As an SSH channel does: closed, and its input with it.
      close: Deferred.succeed(closed, undefined).pipe(Effect.zipRight(Effect.sync(() => input.destroy()))),
      exit: Fiber.join(served),
    } satisfies TestClient
  })
