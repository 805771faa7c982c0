/**
 * One child MCP server over stdio, as a scoped resource. The child runs in its own process group;
 * releasing it closes stdin, then SIGTERMs and finally SIGKILLs the whole group, and the processes it
 * moved out of the group, so nothing it started outlives it. Requests get gateway-assigned ids, a
 * deadline that progress extends, and a notifications/cancelled to the child when the caller gives up.
 * Its stdout is read only as fast as the session's client takes the output, and its stderr reaches
 * the log within a budget.
 */
import { Context, Deferred, Duration, Effect, Exit, Layer, type Scope } from "effect"
import {
  classifyLine,
  ErrorCode,
  encodeMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
  type OutgoingResponse,
  parsedResponse,
  recoverId,
} from "../../shared/jsonRpc.js"
import { forwardableAnswer, forwardablePieces, Pieces } from "../../shared/jsonScan.js"
import { type LineFrame, LineFramer } from "../../shared/lineFramer.js"
import { type Handled, type OutputGate, readFrames, writeWithBackpressure } from "../../shared/streams.js"
import type { ChildServer } from "../config/GatewayConfig.js"
import { UpstreamError } from "../errors.js"
import { ChildReaper, type ChildReaperShape } from "./ChildReaper.js"
import { describeExit, signalGroup, spawnChild, stopChild } from "./childProcess.js"
import { relayStderr } from "./childStderr.js"
import { type CallOutcome, PendingCalls } from "./pendingCalls.js"

export type ChildMessage = JsonRpcRequest | JsonRpcNotification

export interface UpstreamConnection {
  readonly name: string
  /** The child's process id, where there is a process (the metrics read its memory). */
  readonly pid?: number
  /**
   * Send a request and wait for the child's response (returned with the caller's id). Interrupting
   * the caller cancels the request at the child.
   */
  readonly request: (request: JsonRpcRequest) => Effect.Effect<JsonRpcResponse, UpstreamError>
  /**
   * The same as a callback, for the per-call path: `done` gets the answer (with the caller's id) or
   * the error, once. The returned function cancels the request at the child. With `takesBytes`, a
   * successful answer that announces no task may come as the child's bytes (ForwardedResponse).
   */
  readonly call: (
    request: JsonRpcRequest,
    done: (outcome: OutgoingResponse | UpstreamError) => void,
    takesBytes?: boolean,
  ) => () => void
  /** Send a notification, or the answer to a request the child made. */
  readonly send: (message: JsonRpcNotification | JsonRpcResponse) => Effect.Effect<void, UpstreamError>
  /** Completes when the child has exited; the value says how. */
  readonly exited: Effect.Effect<UpstreamError>
  /**
   * Let the calls in flight finish, for at most `within`; then fail those left with `reason`. For a
   * child about to be stopped on purpose (its server was removed or changed by a reload).
   */
  readonly drain: (within: Duration.Duration, reason: UpstreamError) => Effect.Effect<void>
}

export interface UpstreamOptions {
  /**
   * Takes the requests and notifications the child sends on its own, one at a time in order; the
   * child's output is not read further until it returns (backpressure).
   */
  readonly onMessage: (connection: UpstreamConnection, message: ChildMessage) => Effect.Effect<void>
  readonly maxLineBytes: number
  readonly stopTimeout: Duration.Duration
  readonly requestTimeout: Duration.Duration
  /**
   * Asked after each chunk of the child's stdout; while it is closed the stdout is not read. A
   * session's children wait while its client's channel is full, so a client that stops reading stops
   * its children's output too, answers included: their stdout pipes fill, their writes block, and
   * memory does not grow.
   */
  readonly outputReady: OutputGate
}

/**
 * `request` over a connection's `call`: the answer parsed (a forwarded one too), the call cancelled
 * at the child when the caller is interrupted.
 */
export const requestThrough =
  (call: UpstreamConnection["call"]) =>
  (message: JsonRpcRequest): Effect.Effect<JsonRpcResponse, UpstreamError> =>
    Effect.async<JsonRpcResponse, UpstreamError>((resume) => {
      const cancel = call(message, (outcome) =>
        resume(
          outcome instanceof UpstreamError ? Effect.fail(outcome) : Effect.succeed(parsedResponse(outcome)),
        ),
      )
      return Effect.sync(cancel)
    })

export class Upstream extends Context.Tag("mcp-ssh/Upstream")<
  Upstream,
  {
    readonly start: (
      server: ChildServer,
      options: UpstreamOptions,
    ) => Effect.Effect<UpstreamConnection, UpstreamError, Scope.Scope>
  }
>() {}

/** How long output may still be read after the child exited (a grandchild may hold stdout open). */
const outputDrainTime = Duration.millis(500)

const unavailable = (server: string, reason: string) =>
  new UpstreamError({ server, code: ErrorCode.ServerUnavailable, reason })

/** The child's process, stopped with everything it started when the scope closes. */
const acquireProcess = (
  reaper: ChildReaperShape,
  server: ChildServer,
  exited: Deferred.Deferred<UpstreamError>,
  stopTimeout: Duration.Duration,
) =>
  Effect.acquireRelease(
    spawnChild(server).pipe(Effect.tap(({ pid }) => Effect.sync(() => reaper.register(pid)))),
    ({ child, pid }) =>
      stopChild(child, pid, exited, stopTimeout).pipe(
        Effect.ensuring(
          Effect.sync(() => {
            reaper.unregister(pid)
            // A process that escaped the stop may still hold the pipes' other ends: ours close now.
            child.stdin.destroy()
            child.stdout.destroy()
            child.stderr.destroy()
          }),
        ),
      ),
  )

/**
 * What each line of the child's stdout does: settle a call (at once, no Effect), or go to the
 * session as it is (an Effect, run before the next line).
 */
const makeLineHandler = (
  name: string,
  calls: PendingCalls,
  onMessage: (message: ChildMessage) => Effect.Effect<void>,
  log: (effect: Effect.Effect<void>) => Effect.Effect<void>,
) => {
  const invalid = (reason: string) =>
    new UpstreamError({ server: name, code: ErrorCode.InternalError, reason })
  const line = (frame: LineFrame): Handled<never> => {
    // A plain success answer to a caller that takes bytes goes as it is, without a parse; a long one
    // as the pieces it came in, never joined.
    if (calls.takesBytes) {
      const pieces = frame.pieces
      const answer =
        pieces.length === 1 ? forwardableAnswer(frame.bytes) : forwardablePieces(new Pieces(pieces))
      if (answer !== undefined && calls.settleBytes(answer.id, pieces, answer.idStart, answer.idEnd)) {
        return undefined
      }
    }
    const bytes = frame.bytes
    const message = classifyLine(bytes)
    switch (message._tag) {
      case "Response": {
        const id = message.message.id
        if (calls.settle(id, message.message)) return undefined
        return log(Effect.logWarning(`ignored a response to unknown request id ${JSON.stringify(id)}`))
      }
      case "Invalid": {
        calls.settle(message.id, invalid(`sent an invalid response (${message.error.message})`))
        const text = Buffer.from(bytes.subarray(0, 200)).toString("utf8")
        return log(Effect.logWarning(`ignored stdout line that is not JSON-RPC: ${text}`))
      }
      case "Notification":
        if (message.message.method === "notifications/progress")
          calls.progressed(message.message.params?.progressToken)
        return onMessage(message.message)
      case "Request":
        return onMessage(message.message)
    }
  }
  const oversized = (size: number, head: string, tail: string, maxLineBytes: number) => {
    calls.settle(
      recoverId(head, tail),
      invalid(`sent a response of ${size} bytes, over the ${maxLineBytes}-byte limit`),
    )
    return log(Effect.logWarning(`dropped a ${size}-byte message, over the ${maxLineBytes}-byte limit`))
  }
  return { line, oversized }
}

export const startUpstream = (reaper: ChildReaperShape, server: ChildServer, options: UpstreamOptions) =>
  Effect.gen(function* () {
    const name = server.name
    const exitedSignal = yield* Deferred.make<UpstreamError>()
    const { child, pid } = yield* acquireProcess(reaper, server, exitedSignal, options.stopTimeout)
    const log = (effect: Effect.Effect<void>) => effect.pipe(Effect.annotateLogs({ server: name, pid }))
    yield* log(Effect.logDebug(`started: ${server.command} ${server.args.join(" ")}`))

    // Pipe errors (EPIPE after the child died) are reported through 'exit'; keep them from crashing us.
    child.stdin.on("error", () => {})
    child.stdout.on("error", () => {})
    child.stderr.on("error", () => {})

    const stdinOpen = () => !child.stdin.destroyed && !child.stdin.writableEnded
    const cancelAtChild = (id: number, reason: string) => {
      if (stdinOpen()) {
        const cancelled: JsonRpcNotification = {
          jsonrpc: "2.0",
          method: "notifications/cancelled",
          params: { requestId: id, reason },
        }
        child.stdin.write(encodeMessage(cancelled))
      }
    }
    const calls = new PendingCalls(
      Duration.toMillis(options.requestTimeout),
      (id) =>
        new UpstreamError({
          server: name,
          code: ErrorCode.RequestTimeout,
          reason: `did not answer request ${id} within ${Duration.format(options.requestTimeout)}`,
        }),
      cancelAtChild,
    )
    const outputEnded = yield* Deferred.make<void>()
    const closed = yield* Deferred.make<UpstreamError>()
    // Whoever stops the child first, nothing waiting on it is left hanging.
    yield* Effect.addFinalizer(() => Effect.sync(() => calls.failAll(unavailable(name, "was stopped"))))

    let exitError: UpstreamError | undefined
    child.once("exit", (code, signal) => {
      const error = unavailable(name, describeExit(code, signal))
      exitError = error
      Deferred.unsafeDone(exitedSignal, Exit.succeed(error))
      // Whatever it left running in its group goes with it.
      signalGroup(pid, "SIGTERM")
    })

    yield* relayStderr(child.stderr, name, log)

    const send = (message: JsonRpcNotification | JsonRpcResponse) =>
      writeWithBackpressure(child.stdin, encodeMessage(message)).pipe(
        // A write fails when the child has just died: say how it died rather than "closed its input".
        Effect.catchAll(() =>
          Deferred.await(exitedSignal).pipe(
            Effect.timeout(outputDrainTime),
            Effect.catchAll(() => Effect.succeed(unavailable(name, "closed its input"))),
            Effect.flatMap(Effect.fail),
          ),
        ),
      )

    // The per-call path is plain callbacks: no fiber, no Deferred, a Node timer for the deadline
    // (progress refreshes it). It is what a tools/call costs, so it is kept lean.
    const call = (message: JsonRpcRequest, done: (outcome: CallOutcome) => void, takesBytes = false) => {
      const refused = exitError ?? (stdinOpen() ? undefined : unavailable(name, "closed its input"))
      if (refused !== undefined) {
        done(refused)
        return () => {}
      }
      const id = calls.open(message, done, takesBytes)
      child.stdin.write(encodeMessage({ ...message, id }))
      return () => {
        if (calls.withdraw(id)) cancelAtChild(id, "cancelled by the client")
      }
    }

    const request = requestThrough(call)

    const drain = (within: Duration.Duration, reason: UpstreamError) =>
      Effect.async<void>((resume) => {
        calls.whenIdle(() => resume(Effect.void))
      }).pipe(
        Effect.timeout(within),
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => calls.failAll(reason))),
      )

    const connection: UpstreamConnection = {
      name,
      call,
      request,
      send,
      exited: Deferred.await(closed),
      drain,
      pid,
    }

    // One reader hands every message on in the order the child wrote it: a notification the child
    // sent before a response reaches the client before that response. It reads on only when the
    // client can take more. Answers are settled in the pipe's 'data' callback, without a fiber.
    const handle = makeLineHandler(name, calls, (message) => options.onMessage(connection, message), log)
    yield* readFrames(
      child.stdout,
      new LineFramer(options.maxLineBytes),
      (frame) =>
        frame._tag === "Line"
          ? handle.line(frame)
          : handle.oversized(frame.size, frame.head, frame.tail, options.maxLineBytes),
      options.outputReady,
    ).pipe(Effect.zipRight(Deferred.succeed(outputEnded, undefined)), Effect.forkScoped)
    // The child is gone once it has exited and its output is read (answers still in the pipe are
    // delivered first), or shortly after exiting if something it started holds its stdout open.
    yield* Deferred.await(exitedSignal).pipe(
      Effect.tap(() => Deferred.await(outputEnded).pipe(Effect.timeout(outputDrainTime), Effect.ignore)),
      Effect.tap((error) => Effect.sync(() => calls.failAll(error))),
      Effect.flatMap((error) => Deferred.succeed(closed, error)),
      Effect.forkScoped,
    )
    return connection
  })

export const UpstreamLive = Layer.effect(
  Upstream,
  Effect.map(ChildReaper, (reaper) => ({
    start: (server: ChildServer, options: UpstreamOptions) => startUpstream(reaper, server, options),
  })),
)
