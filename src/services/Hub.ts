/**
 * The MCP server a client session talks to. A session opens the Hub with the servers it selected and
 * gets requests answered, notifications relayed, and the servers' own messages on `outgoing`.
 *
 * This Hub serves one child per session (the original tool's model), started for the session and
 * stopped with it; the session's protocol flows through unchanged, with ids remapped both ways.
 */
import { Context, Data, Duration, Effect, Layer, Option, Queue, type Scope } from "effect"
import type { UpstreamError } from "../domain/errors.js"
import {
  ErrorCode,
  errorResponse,
  isRequest,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../domain/jsonRpc.js"
import { GatewayConfig } from "./GatewayConfig.js"
import { Upstream, type UpstreamConnection } from "./Upstream.js"

/** Who is on the other end of a session, for the log. */
export interface ClientIdentity {
  readonly fingerprint: string
  readonly username: string
  readonly address: string
}

export interface HubSession {
  /** Answer one client request; failures become JSON-RPC error responses, never defects. */
  readonly request: (request: JsonRpcRequest) => Effect.Effect<JsonRpcResponse>
  readonly notify: (notification: JsonRpcNotification) => Effect.Effect<void>
  /** The client's answer to a request a server made. */
  readonly respond: (response: JsonRpcResponse) => Effect.Effect<void>
  /** Requests and notifications from the servers to the client. */
  readonly outgoing: Queue.Dequeue<JsonRpcMessage>
}

/** The session asked for servers that cannot be served; `message` says why, for the client's stderr. */
export class SelectionError extends Data.TaggedError("SelectionError")<{ readonly message: string }> {}

export class Hub extends Context.Tag("mcp-ssh/Hub")<
  Hub,
  {
    /** Open a session over the named servers (empty: the default). Closing the scope ends it. */
    readonly open: (
      selection: ReadonlyArray<string>,
      client: ClientIdentity,
    ) => Effect.Effect<HubSession, SelectionError, Scope.Scope>
  }
>() {}

/** `ssh host NAME[,NAME...]`: the servers an exec command selects (empty: all). */
export const parseSelection = (command: string): ReadonlyArray<string> =>
  command
    .split(/[\s,]+/)
    .map((name) => name.trim())
    .filter((name) => name.length > 0)

const toErrorResponse = (request: JsonRpcRequest, error: UpstreamError): JsonRpcResponse =>
  errorResponse(request.id, { code: error.code, message: error.message })

export const HubLive = Layer.effect(
  Hub,
  Effect.gen(function* () {
    const config = yield* GatewayConfig
    const upstream = yield* Upstream
    const names = config.servers.map((server) => server.name)
    const options = {
      maxLineBytes: config.settings.maxLineBytes,
      stopTimeout: Duration.seconds(config.settings.childStopTimeout),
      requestTimeout: Duration.seconds(60),
    }

    const open = (selection: ReadonlyArray<string>, client: ClientIdentity) =>
      Effect.gen(function* () {
        const unknown = selection.filter((name) => !names.includes(name))
        if (unknown.length > 0) {
          return yield* new SelectionError({
            message: `unknown server(s): ${unknown.join(", ")}; available: ${names.join(", ")}`,
          })
        }
        if (selection.length > 1) {
          return yield* new SelectionError({
            message: "this gateway serves one server per session; name one",
          })
        }
        const server =
          config.servers.find((candidate) => candidate.name === selection[0]) ?? config.servers[0]
        if (server === undefined) return yield* new SelectionError({ message: "no server is configured" })
        const outgoing = yield* Queue.bounded<JsonRpcMessage>(1024)
        const started = yield* upstream.start(server, options).pipe(Effect.either)
        if (started._tag === "Left") {
          yield* Effect.logError(started.left.message).pipe(
            Effect.annotateLogs({ client: client.fingerprint }),
          )
        }
        const connection = Option.getRight(started)

        /** Child-to-client requests, by the id the gateway gave them towards the client. */
        const serverRequests = new Map<number, JsonRpcRequest>()
        let nextServerRequestId = 1

        if (Option.isSome(connection)) {
          yield* relayChildMessages(connection.value, outgoing, serverRequests, () => nextServerRequestId++)
        }

        return {
          request: (request) =>
            Option.match(connection, {
              onNone: () =>
                Effect.succeed(
                  started._tag === "Left"
                    ? toErrorResponse(request, started.left)
                    : errorResponse(request.id, {
                        code: ErrorCode.ServerUnavailable,
                        message: "server unavailable",
                      }),
                ),
              onSome: (child) =>
                child
                  .request(request)
                  .pipe(
                    Effect.catchTag("UpstreamError", (error) =>
                      Effect.succeed(toErrorResponse(request, error)),
                    ),
                  ),
            }),
          notify: (notification) =>
            Option.match(connection, {
              onNone: () => Effect.void,
              onSome: (child) => child.send(notification).pipe(Effect.ignore),
            }),
          respond: (response) =>
            Effect.gen(function* () {
              const original = typeof response.id === "number" ? serverRequests.get(response.id) : undefined
              if (original === undefined || typeof response.id !== "number" || Option.isNone(connection)) {
                return yield* Effect.logWarning(
                  `ignored a response to unknown request id ${JSON.stringify(response.id)}`,
                )
              }
              serverRequests.delete(response.id)
              yield* connection.value.send({ ...response, id: original.id }).pipe(Effect.ignore)
            }),
          outgoing,
        } satisfies HubSession
      })

    return { open }
  }),
)

/** Forward what the child sends on its own to the client; its requests get ids of the gateway's. */
const relayChildMessages = (
  child: UpstreamConnection,
  outgoing: Queue.Queue<JsonRpcMessage>,
  serverRequests: Map<number, JsonRpcRequest>,
  nextId: () => number,
) =>
  Queue.take(child.incoming).pipe(
    Effect.flatMap((message) => {
      if (!isRequest(message)) return Queue.offer(outgoing, message)
      const id = nextId()
      serverRequests.set(id, message)
      return Queue.offer(outgoing, { ...message, id })
    }),
    Effect.forever,
    Effect.forkScoped,
  )
