/**
 * One client's MCP session on a byte channel (an SSH channel): newline-delimited JSON-RPC in and
 * out. Bad input is answered with a JSON-RPC error and the session goes on; requests run
 * concurrently, each cancellable by notifications/cancelled.
 *
 * One write policy: every message is written to the channel in order, those of one turn together
 * (coalescedWriter), and whoever produces
 * messages waits while the channel is full: this input loop before reading the client's next chunk,
 * the readers of the children's output before their next chunk (Hub, Upstream). A client that stops
 * reading thus stops everything that writes to it, and the gateway's memory stays flat.
 */
import type { Readable, Writable } from "node:stream"
import { Context, Effect, Layer, Runtime } from "effect"
import {
  classifyLine,
  ErrorCode,
  encodePieces,
  errorResponse,
  isNotificationMethod,
  type JsonRpcId,
  type JsonRpcRequest,
  type OutgoingMessage,
  recoverId,
} from "../../shared/jsonRpc.js"
import { type Frame, LineFramer } from "../../shared/lineFramer.js"
import { gateOf, type Handled, readFrames, writeWithBackpressure } from "../../shared/streams.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { type ClientIdentity, Hub, type HubSession } from "../hub/Hub.js"
import { Drain, type DrainShape } from "../ops/Drain.js"
import { Metrics, type MetricsShape } from "../ops/Metrics.js"

export interface SessionChannel {
  readonly input: Readable
  readonly output: Writable
  /** Where a session that cannot start says why (the SSH channel's stderr). */
  readonly diagnostics: Writable
  /**
   * Completes when the peer has closed the channel outright. `input` must then end or close too
   * (an SSH channel does): the reader stops on that, this only cuts the wait for answers after it.
   */
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

/**
 * The requests of a session in progress, by id, each with how to cancel it: the only registry, so
 * a duplicate id, the in-flight cap, a cancellation, the drain at end of input and the answers owed
 * when the session ends all look at the same entries.
 */
class InFlight {
  private readonly cancels = new Map<string, Effect.Effect<void>>()
  private whenEmpty: (() => void) | undefined

  /** The gateway's count of calls in flight, which a drain waits on. */
  constructor(private readonly counter: Pick<DrainShape, "callStarted" | "callSettled">) {}

  get size(): number {
    return this.cancels.size
  }

  has(key: string): boolean {
    return this.cancels.has(key)
  }

  /** Start a request through the Hub; its answer is written unless it is cancelled first. */
  start(
    session: HubSession,
    request: JsonRpcRequest,
    key: string,
    write: (message: OutgoingMessage) => void,
  ) {
    let answered = false
    const cancel = session.request(request, (response) => {
      answered = true
      this.settle(key)
      write(response)
    })
    // The fast path may answer before it returns.
    if (!answered) {
      this.cancels.set(key, cancel)
      this.counter.callStarted()
    }
  }

  /** Cancel one request, at its child too; nothing when no such request is in progress. */
  cancel(key: string): Effect.Effect<void> {
    const cancel = this.cancels.get(key)
    if (cancel === undefined) return Effect.void
    this.settle(key)
    return cancel
  }

  /** Cancel every request; their ids, which are owed an answer. */
  readonly cancelAll: Effect.Effect<ReadonlyArray<string>> = Effect.suspend(() => {
    const keys = [...this.cancels.keys()]
    return Effect.forEach(keys, (key) => this.cancel(key), { discard: true }).pipe(Effect.as(keys))
  })

  /** Completes once no request is in progress. */
  readonly drained = Effect.async<void>((resume) => {
    if (this.cancels.size === 0) return resume(Effect.void)
    this.whenEmpty = () => resume(Effect.void)
    return Effect.sync(() => {
      this.whenEmpty = undefined
    })
  })

  private settle(key: string) {
    if (!this.cancels.delete(key)) return
    this.counter.callSettled()
    if (this.cancels.size > 0) return
    const whenEmpty = this.whenEmpty
    this.whenEmpty = undefined
    whenEmpty?.()
  }
}

/** A piece at least this large is written on its own, as it is: joining it would copy it. */
const ownWriteBytes = 64 * 1024

/**
 * Messages written in the same turn reach the channel as one write, so one SSH packet, one
 * encryption and one syscall carry them all (answers to a burst of calls, notifications around an
 * answer). Flushed on a microtask, before any I/O, and at the session's end. A forwarded answer's
 * bytes join the others when small; a large one goes as its own write, uncopied.
 */
export const coalescedWriter = (output: Writable) => {
  let pieces: Array<string | Uint8Array> = []
  let hasBytes = false
  const flush = () => {
    const all = pieces
    pieces = []
    const bytes = hasBytes
    hasBytes = false
    if (all.length === 0 || output.destroyed || output.writableEnded) return
    // The common cases: only messages the gateway made (one string), or one small answer.
    if (!bytes) return void output.write(all.length === 1 ? all[0] : all.join(""))
    let run: Array<Buffer> = []
    let runBytes = 0
    const writeRun = () => {
      if (run.length === 0) return
      output.write(run.length === 1 ? run[0] : Buffer.concat(run, runBytes))
      run = []
      runBytes = 0
    }
    for (const piece of all) {
      const buffer =
        typeof piece === "string"
          ? Buffer.from(piece)
          : Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength)
      if (buffer.length >= ownWriteBytes) {
        writeRun()
        output.write(buffer)
      } else {
        run.push(buffer)
        runBytes += buffer.length
        // A long answer in small pieces is joined a run at a time, never into one copy of it all.
        if (runBytes >= ownWriteBytes) writeRun()
      }
    }
    writeRun()
  }
  const write = (message: OutgoingMessage) => {
    if (pieces.length === 0) queueMicrotask(flush)
    const encoded = encodePieces(message)
    if (encoded.length > 1) hasBytes = true
    for (const piece of encoded) pieces.push(piece)
  }
  return { write, flush }
}

export const McpSessionLive = Layer.effect(
  McpSession,
  Effect.gen(function* () {
    const hub = yield* Hub
    const drain = yield* Drain
    const { settings } = yield* GatewayConfig
    const metrics = yield* Metrics
    const maxLineBytes = settings.maxLineBytes
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())

    const serve = (channel: SessionChannel, selection: ReadonlyArray<string>, client: ClientIdentity) =>
      Effect.gen(function* () {
        const output = channel.output
        const { write, flush } = coalescedWriter(output)
        // Registered first, so it runs last: what the other finalizers write goes out before the end.
        yield* Effect.addFinalizer(() => Effect.sync(flush))
        const ready = gateOf(output)
        // A session opened on a connection that was already in when the drain began: no children for it.
        if (drain.draining()) {
          yield* writeWithBackpressure(channel.diagnostics, `mcp-ssh: ${shuttingDown}\n`).pipe(Effect.ignore)
          return 1
        }
        const opened = yield* hub.open(selection, client, { write, ready }).pipe(Effect.either)
        if (opened._tag === "Left") {
          yield* writeWithBackpressure(channel.diagnostics, `mcp-ssh: ${opened.left.message}\n`).pipe(
            Effect.ignore,
          )
          return 1
        }
        const session = opened.right
        yield* Effect.acquireRelease(Effect.sync(metrics.sessionOpened), (closed) => Effect.sync(closed))
        const inFlight = new InFlight(drain)
        // Runs before the Hub's own finalizers (finalizers run in reverse). A session ended under its
        // client (gateway shutdown, key revoked) answers every request still in progress, so no
        // caller waits for an answer that cannot come.
        yield* Effect.addFinalizer(() =>
          Effect.map(inFlight.cancelAll, (keys) => {
            for (const key of keys) {
              write(
                errorResponse(JSON.parse(key) as JsonRpcId, {
                  code: ErrorCode.ServerUnavailable,
                  // After a drain: the call did not finish in time (or a second signal cut the wait).
                  message: drain.draining()
                    ? `Server unavailable: ${shuttingDown} before this request was answered`
                    : "Server unavailable: the session ended before this request was answered",
                }),
              )
            }
          }),
        )
        // Long-lived requests (subscriptions/listen) would hold the drain to its timeout: end them then.
        yield* Effect.acquireRelease(
          Effect.sync(() => drain.whenStarted(() => runFork(session.endOfInput))),
          (forget) => Effect.sync(forget),
        )
        const handleFrame = makeFrameHandler({
          session,
          inFlight,
          write,
          maxLineBytes,
          draining: drain.draining,
          metrics,
        })
        // Requests are handled in the channel's 'data' callback, without a fiber; the rest in order after.
        // A last line without its newline is still a message.
        // The reader ends at the end of input, or when the channel closes (a closed stream ends too).
        yield* readFrames(channel.input, new LineFramer(maxLineBytes), handleFrame, ready)
        // The client said it has nothing more to send: answer what is still in progress, then end;
        // a channel closed outright has nobody left to answer: stop at once.
        yield* Effect.raceFirst(Effect.zipRight(session.endOfInput, inFlight.drained), channel.closed)
        return 0
      }).pipe(
        Effect.scoped,
        Effect.annotateLogs({ client: client.fingerprint, user: client.username, remote: client.address }),
      )

    return { serve }
  }),
)

interface FrameContext {
  readonly session: HubSession
  readonly inFlight: InFlight
  readonly write: (message: OutgoingMessage) => void
  readonly maxLineBytes: number
  readonly draining: () => boolean
  readonly metrics: MetricsShape
}

/** What a request gets once the gateway drains (and a session opened then, on its stderr). */
const shuttingDown = "the gateway is shutting down"

const invalidRequest = (id: JsonRpcId | null, message: string) =>
  errorResponse(id, { code: ErrorCode.InvalidRequest, message: `Invalid Request: ${message}` })

/**
 * What each line of the client does: answered at once when it is bad, else handed to the Hub. A
 * request is handled at once; what needs an Effect (notifications, answers to servers) is returned.
 */
const makeFrameHandler =
  ({ session, inFlight, write, maxLineBytes, draining, metrics }: FrameContext) =>
  (frame: Frame): Handled<never> => {
    if (frame._tag === "Oversized") {
      return Effect.logWarning(
        `refused a message of ${frame.size} bytes from the client, over the limit of ${maxLineBytes} bytes`,
      ).pipe(
        Effect.zipRight(
          Effect.sync(() =>
            write(
              invalidRequest(
                recoverId(frame.head, frame.tail),
                `message of ${frame.size} bytes exceeds the limit of ${maxLineBytes} bytes`,
              ),
            ),
          ),
        ),
      )
    }
    const message = classifyLine(frame.bytes)
    switch (message._tag) {
      case "Invalid":
        write(errorResponse(message.id, message.error))
        return undefined
      case "Response":
        return session.respond(message.message)
      case "Notification":
        // Cancelling the call cancels it at the child, which gets its own request id.
        if (message.message.method === "notifications/cancelled") {
          return inFlight.cancel(requestKey(message.message.params?.requestId))
        }
        return session.notify(message.message)
      case "Request": {
        const request = message.message
        const key = requestKey(request.id)
        if (isNotificationMethod(request.method)) {
          // Answered (it has an id) but never forwarded: a child would take it as a request.
          write(invalidRequest(request.id, `${request.method} is a notification and must not have an "id"`))
        } else if (draining()) {
          // Notifications and the client's answers to servers still flow; only new work is refused.
          write(errorResponse(request.id, { code: ErrorCode.ServerUnavailable, message: shuttingDown }))
        } else if (inFlight.has(key)) {
          write(invalidRequest(request.id, `id ${key} is already used by a request in progress`))
        } else if (inFlight.size >= maxRequestsInFlight) {
          metrics.callLimited()
          write(invalidRequest(request.id, `more than ${maxRequestsInFlight} requests in progress`))
        } else {
          inFlight.start(session, request, key, write)
        }
        return undefined
      }
    }
  }
