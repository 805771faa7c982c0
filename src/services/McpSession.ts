/**
 * One client's MCP session on a byte channel (an SSH channel): newline-delimited JSON-RPC in and
 * out. Bad input is answered with a JSON-RPC error and the session goes on; requests run
 * concurrently, each cancellable by notifications/cancelled.
 */
import type { Readable, Writable } from "node:stream"
import { Context, Effect, FiberMap, Layer, Queue, Stream } from "effect"
import {
  classifyLine,
  ErrorCode,
  encodeMessage,
  errorResponse,
  type JsonRpcMessage,
  recoverId,
} from "../domain/jsonRpc.js"
import { type Frame, LineFramer } from "../domain/lineFramer.js"
import { readChunks, writeWithBackpressure } from "../platform/streams.js"
import { GatewayConfig } from "./GatewayConfig.js"
import { type ClientIdentity, Hub } from "./Hub.js"

export interface SessionChannel {
  readonly input: Readable
  readonly output: Writable
  /** Where a session that cannot start says why (the SSH channel's stderr). */
  readonly diagnostics: Writable
  /** Completes when the peer has closed the channel outright. */
  readonly closed: Effect.Effect<void>
}

export class McpSession extends Context.Tag("mcp-ssh/McpSession")<
  McpSession,
  {
    /** Serve one session until the client ends it; returns the exit status for the channel. */
    readonly serve: (
      channel: SessionChannel,
      selection: ReadonlyArray<string>,
      client: ClientIdentity,
    ) => Effect.Effect<number>
  }
>() {}

const requestKey = (id: unknown): string => JSON.stringify(id)

/** Messages waiting for a slow client before the servers are made to wait. */
const outboundQueueSize = 256

export const McpSessionLive = Layer.effect(
  McpSession,
  Effect.gen(function* () {
    const hub = yield* Hub
    const { settings } = yield* GatewayConfig
    const maxLineBytes = settings.maxLineBytes

    const serve = (channel: SessionChannel, selection: ReadonlyArray<string>, client: ClientIdentity) =>
      Effect.gen(function* () {
        // Everything for the client, responses and notifications alike, leaves through one queue in
        // order; a client that stops reading fills it, and that slows the servers down.
        const outbound = yield* Queue.bounded<JsonRpcMessage>(outboundQueueSize)
        const write = (message: JsonRpcMessage) => Queue.offer(outbound, message).pipe(Effect.asVoid)
        yield* Queue.take(outbound).pipe(
          Effect.flatMap((message) => writeWithBackpressure(channel.output, encodeMessage(message))),
          Effect.forever,
          Effect.ignore,
          Effect.forkScoped,
        )
        const opened = yield* hub.open(selection, client, write).pipe(Effect.either)
        if (opened._tag === "Left") {
          yield* writeWithBackpressure(channel.diagnostics, `mcp-ssh: ${opened.left.message}\n`).pipe(
            Effect.ignore,
          )
          return 1
        }
        const session = opened.right

        const inFlight = yield* FiberMap.make<string, void, never>()

        const handleFrame = (frame: Frame): Effect.Effect<void> => {
          if (frame._tag === "Oversized") {
            return write(
              errorResponse(recoverId(frame.head, frame.tail), {
                code: ErrorCode.InvalidRequest,
                message: `Invalid Request: message of ${frame.size} bytes exceeds the limit of ${maxLineBytes} bytes`,
              }),
            )
          }
          const message = classifyLine(frame.bytes)
          switch (message._tag) {
            case "Invalid":
              return write(errorResponse(message.id, message.error))
            case "Response":
              return session.respond(message.message)
            case "Notification": {
              if (message.message.method === "notifications/cancelled") {
                // Interrupting the call cancels it at the child, which gets its own request id.
                return FiberMap.remove(inFlight, requestKey(message.message.params?.requestId))
              }
              return session.notify(message.message)
            }
            case "Request": {
              const request = message.message
              const key = requestKey(request.id)
              return FiberMap.has(inFlight, key).pipe(
                Effect.flatMap((busy) =>
                  busy
                    ? write(
                        errorResponse(request.id, {
                          code: ErrorCode.InvalidRequest,
                          message: `Invalid Request: id ${key} is already used by a request in progress`,
                        }),
                      )
                    : FiberMap.run(inFlight, key, Effect.flatMap(session.request(request), write), {
                        onlyIfMissing: true,
                      }).pipe(Effect.asVoid),
                ),
              )
            }
          }
        }

        const framer = new LineFramer(maxLineBytes)
        const untilEndOfInput = readChunks(channel.input).pipe(
          Stream.runForEach((chunk) => Effect.forEach(framer.push(chunk), handleFrame, { discard: true })),
          // A last line without its newline is still a message.
          Effect.zipRight(Effect.suspend(() => Effect.forEach(framer.end(), handleFrame, { discard: true }))),
          // The client said it has nothing more to send: answer what is still in progress, then end.
          Effect.zipRight(session.endOfInput),
          Effect.zipRight(FiberMap.awaitEmpty(inFlight)),
          Effect.as(0),
        )
        // A channel closed outright has nobody left to answer: stop at once.
        return yield* Effect.raceFirst(untilEndOfInput, channel.closed.pipe(Effect.as(0)))
      }).pipe(
        Effect.scoped,
        Effect.annotateLogs({ client: client.fingerprint, user: client.username, remote: client.address }),
      )

    return { serve }
  }),
)
