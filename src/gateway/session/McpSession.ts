/**
 * One client's MCP session on a byte channel (an SSH channel): newline-delimited JSON-RPC in and
 * out. Bad input is answered with a JSON-RPC error and the session goes on; requests run
 * concurrently, each cancellable by notifications/cancelled.
 */
import type { Readable, Writable } from "node:stream"
import { Context, Effect, FiberMap, Layer } from "effect"
import {
  classifyLine,
  ErrorCode,
  encodeMessage,
  errorResponse,
  isNotificationMethod,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcRequest,
  recoverId,
} from "../../shared/jsonRpc.js"
import { type Frame, LineFramer } from "../../shared/lineFramer.js"
import { forEachChunk, whenDrained, writeWithBackpressure } from "../../shared/streams.js"
import { outputReady } from "../children/Upstream.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { type ClientIdentity, Hub } from "../hub/Hub.js"

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

/** Requests of one session in progress at once; more are refused rather than buffered. */
const maxRequestsInFlight = 1024

export const McpSessionLive = Layer.effect(
  McpSession,
  Effect.gen(function* () {
    const hub = yield* Hub
    const { settings } = yield* GatewayConfig
    const maxLineBytes = settings.maxLineBytes

    const serve = (channel: SessionChannel, selection: ReadonlyArray<string>, client: ClientIdentity) =>
      Effect.gen(function* () {
        // Everything for the client goes straight into the channel, whose buffer keeps it in order.
        // Messages the servers send on their own wait for a full buffer to drain (backpressure to
        // the child); answers to the client's own requests are written at once, and while the buffer
        // is full the children's output is not read further (outputReady), answers included.
        const output = channel.output
        const writeNow = (message: JsonRpcMessage) => {
          if (!output.destroyed && !output.writableEnded) output.write(encodeMessage(message))
        }
        const write = (message: JsonRpcMessage) =>
          writeWithBackpressure(output, encodeMessage(message)).pipe(Effect.ignore)
        const opened = yield* hub
          .open(selection, client, write)
          .pipe(Effect.locally(outputReady, whenDrained(output)), Effect.either)
        if (opened._tag === "Left") {
          yield* writeWithBackpressure(channel.diagnostics, `mcp-ssh: ${opened.left.message}\n`).pipe(
            Effect.ignore,
          )
          return 1
        }
        const session = opened.right

        const inFlight = yield* FiberMap.make<string, void, never>()
        /** Requests answered by callback (the per-call path), with how to cancel each. */
        const fastInFlight = new Map<string, () => void>()
        let whenFastDone: (() => void) | undefined
        // Runs before the FiberMap's own finalizer (finalizers run in reverse), while its requests are
        // still listed. A session ended under its client (gateway shutdown, key revoked) answers every
        // request still in progress, so no caller waits for an answer that cannot come.
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            const unanswered = [...fastInFlight.keys(), ...[...inFlight].map(([key]) => key)]
            for (const cancel of fastInFlight.values()) cancel()
            fastInFlight.clear()
            for (const key of unanswered) {
              writeNow(
                errorResponse(JSON.parse(key) as JsonRpcId, {
                  code: ErrorCode.ServerUnavailable,
                  message: "Server unavailable: the session ended before this request was answered",
                }),
              )
            }
          }),
        )
        const fastDrained = Effect.async<void>((resume) => {
          if (fastInFlight.size === 0) return resume(Effect.void)
          whenFastDone = () => resume(Effect.void)
        })

        const startRequest = (request: JsonRpcRequest, key: string): Effect.Effect<void> => {
          let answered = false
          const cancel = session.fastRequest(request, (response) => {
            answered = true
            fastInFlight.delete(key)
            writeNow(response)
            if (fastInFlight.size === 0) whenFastDone?.()
          })
          if (cancel === undefined) {
            return FiberMap.run(inFlight, key, Effect.flatMap(session.request(request), write), {
              onlyIfMissing: true,
            }).pipe(Effect.asVoid)
          }
          if (!answered) fastInFlight.set(key, cancel)
          return Effect.void
        }

        const handleFrame = (frame: Frame): Effect.Effect<void> => {
          if (frame._tag === "Oversized") {
            return Effect.logWarning(
              `refused a message of ${frame.size} bytes from the client, over the limit of ${maxLineBytes} bytes`,
            ).pipe(
              Effect.zipRight(
                write(
                  errorResponse(recoverId(frame.head, frame.tail), {
                    code: ErrorCode.InvalidRequest,
                    message: `Invalid Request: message of ${frame.size} bytes exceeds the limit of ${maxLineBytes} bytes`,
                  }),
                ),
              ),
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
                // Cancelling the call cancels it at the child, which gets its own request id.
                const key = requestKey(message.message.params?.requestId)
                const cancelFast = fastInFlight.get(key)
                if (cancelFast === undefined) return FiberMap.remove(inFlight, key)
                fastInFlight.delete(key)
                cancelFast()
                if (fastInFlight.size === 0) whenFastDone?.()
                return Effect.void
              }
              return session.notify(message.message)
            }
            case "Request": {
              const request = message.message
              if (isNotificationMethod(request.method)) {
                // Answered (it has an id) but never forwarded: a child would take it as a request.
                return write(
                  errorResponse(request.id, {
                    code: ErrorCode.InvalidRequest,
                    message: `Invalid Request: ${request.method} is a notification and must not have an "id"`,
                  }),
                )
              }
              const key = requestKey(request.id)
              return Effect.zip(FiberMap.has(inFlight, key), FiberMap.size(inFlight)).pipe(
                Effect.flatMap(([busy, slowCount]) => {
                  if (busy || fastInFlight.has(key)) {
                    return write(
                      errorResponse(request.id, {
                        code: ErrorCode.InvalidRequest,
                        message: `Invalid Request: id ${key} is already used by a request in progress`,
                      }),
                    )
                  }
                  if (fastInFlight.size + slowCount >= maxRequestsInFlight) {
                    return write(
                      errorResponse(request.id, {
                        code: ErrorCode.InvalidRequest,
                        message: `Invalid Request: more than ${maxRequestsInFlight} requests in progress`,
                      }),
                    )
                  }
                  return startRequest(request, key)
                }),
              )
            }
          }
        }

        const framer = new LineFramer(maxLineBytes)
        const untilEndOfInput = forEachChunk(channel.input, (chunk) =>
          Effect.forEach(framer.push(chunk), handleFrame, { discard: true }),
        ).pipe(
          // A last line without its newline is still a message.
          Effect.zipRight(Effect.suspend(() => Effect.forEach(framer.end(), handleFrame, { discard: true }))),
          // The client said it has nothing more to send: answer what is still in progress, then end.
          Effect.zipRight(session.endOfInput),
          Effect.zipRight(FiberMap.awaitEmpty(inFlight)),
          Effect.zipRight(fastDrained),
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
