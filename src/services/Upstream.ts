/**
 * One child MCP server over stdio, as a scoped resource. The child runs in its own process group;
 * releasing it closes stdin, then SIGTERMs and finally SIGKILLs the whole group, so nothing it
 * started outlives it. Requests get gateway-assigned ids, a deadline that progress extends, and a
 * notifications/cancelled to the child when the caller gives up.
 */
import { type ChildProcessByStdio, spawn } from "node:child_process"
import type { Readable, Writable } from "node:stream"
import { Context, Deferred, Duration, Effect, Exit, Layer, type Scope } from "effect"
import { UpstreamError } from "../domain/errors.js"
import {
  classifyLine,
  ErrorCode,
  encodeMessage,
  type JsonObject,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
  recoverId,
} from "../domain/jsonRpc.js"
import { LineFramer } from "../domain/lineFramer.js"
import { isObject } from "../domain/mcp.js"
import { forEachChunk, writeWithBackpressure } from "../platform/streams.js"
import { ChildReaper, type ChildReaperShape } from "./ChildReaper.js"
import type { ChildServer } from "./GatewayConfig.js"

export type ChildMessage = JsonRpcRequest | JsonRpcNotification

export interface UpstreamConnection {
  readonly name: string
  readonly pid: number
  /**
   * Send a request and wait for the child's response (returned with the caller's id). Interrupting
   * the caller cancels the request at the child.
   */
  readonly request: (request: JsonRpcRequest) => Effect.Effect<JsonRpcResponse, UpstreamError>
  /**
   * The same as a callback, for the per-call path: `done` gets the answer (with the caller's id) or
   * the error, once. The returned function cancels the request at the child.
   */
  readonly call: (
    request: JsonRpcRequest,
    done: (outcome: JsonRpcResponse | UpstreamError) => void,
  ) => () => void
  /** Send a notification, or the answer to a request the child made. */
  readonly send: (message: JsonRpcNotification | JsonRpcResponse) => Effect.Effect<void, UpstreamError>
  /** Completes when the child has exited; the value says how. */
  readonly exited: Effect.Effect<UpstreamError>
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
}

export class Upstream extends Context.Tag("mcp-ssh/Upstream")<
  Upstream,
  {
    readonly start: (
      server: ChildServer,
      options: UpstreamOptions,
    ) => Effect.Effect<UpstreamConnection, UpstreamError, Scope.Scope>
  }
>() {}

type Child = ChildProcessByStdio<Writable, Readable, Readable>

interface Pending {
  /** Takes the child's answer or why there is none; called once. */
  readonly settle: (outcome: JsonRpcResponse | UpstreamError) => void
  /** Fires when the request has been silent (no answer, no progress) for the whole timeout. */
  readonly timer: NodeJS.Timeout
}

/** How long output may still be read after the child exited (a grandchild may hold stdout open). */
const outputDrainTime = Duration.millis(500)

const describeExit = (code: number | null, signal: NodeJS.Signals | null): string =>
  signal !== null ? `exited on ${signal}` : `exited with code ${code ?? "unknown"}`

/** Signal a whole process group; a group that is already gone is not an error. */
const signalGroup = (pid: number, signal: NodeJS.Signals | 0): boolean => {
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return false
  }
}

const spawnChild = (server: ChildServer) =>
  Effect.async<Child, UpstreamError>((resume) => {
    let child: Child
    try {
      child = spawn(server.command, [...server.args], {
        cwd: server.cwd,
        env: server.env,
        stdio: ["pipe", "pipe", "pipe"],
        // Its own process group, so stopping it reaches everything it started.
        detached: true,
      })
    } catch (error) {
      resume(
        Effect.fail(
          new UpstreamError({
            server: server.name,
            code: ErrorCode.ServerUnavailable,
            reason: `could not start: ${error instanceof Error ? error.message : String(error)}`,
          }),
        ),
      )
      return
    }
    const onSpawn = () => {
      child.off("error", onError)
      resume(Effect.succeed(child))
    }
    const onError = (error: Error) => {
      child.off("spawn", onSpawn)
      resume(
        Effect.fail(
          new UpstreamError({
            server: server.name,
            code: ErrorCode.ServerUnavailable,
            reason: `could not start '${server.command}': ${error.message}`,
          }),
        ),
      )
    }
    child.once("spawn", onSpawn)
    child.once("error", onError)
  })

export const startUpstream = (reaper: ChildReaperShape, server: ChildServer, options: UpstreamOptions) =>
  Effect.gen(function* () {
    const name = server.name
    const exitedSignal = yield* Deferred.make<UpstreamError>()
    const child = yield* Effect.acquireRelease(
      spawnChild(server).pipe(Effect.tap((child) => Effect.sync(() => reaper.register(child.pid ?? -1)))),
      (child) =>
        stopChild(child, exitedSignal, options.stopTimeout).pipe(
          Effect.ensuring(Effect.sync(() => reaper.unregister(child.pid ?? -1))),
        ),
    )
    const pid = child.pid ?? -1
    const log = (effect: Effect.Effect<void>) => effect.pipe(Effect.annotateLogs({ server: name, pid }))
    yield* log(Effect.logDebug(`started: ${server.command} ${server.args.join(" ")}`))

    // Pipe errors (EPIPE after the child died) are reported through 'exit'; keep them from crashing us.
    child.stdin.on("error", () => {})
    child.stdout.on("error", () => {})
    child.stderr.on("error", () => {})

    const pending = new Map<number, Pending>()
    const progressOwners = new Map<string, number>()
    let nextId = 1

    /** Hand a request its outcome, once; false when it was already settled or given up. */
    const settle = (id: unknown, outcome: JsonRpcResponse | UpstreamError): boolean => {
      const entry = typeof id === "number" ? pending.get(id) : undefined
      if (entry === undefined || typeof id !== "number") return false
      pending.delete(id)
      entry.settle(outcome)
      return true
    }
    const failAllPending = (error: UpstreamError) => {
      for (const id of [...pending.keys()]) settle(id, error)
    }
    const outputEnded = yield* Deferred.make<void>()
    const closed = yield* Deferred.make<UpstreamError>()
    // Whoever stops the child first, nothing waiting on it is left hanging.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() =>
        failAllPending(
          new UpstreamError({ server: name, code: ErrorCode.ServerUnavailable, reason: "was stopped" }),
        ),
      ),
    )

    let exitError: UpstreamError | undefined
    child.once("exit", (code, signal) => {
      const error = new UpstreamError({
        server: name,
        code: ErrorCode.ServerUnavailable,
        reason: describeExit(code, signal),
      })
      exitError = error
      Deferred.unsafeDone(exitedSignal, Exit.succeed(error))
      // Whatever it left running in its group goes with it.
      signalGroup(pid, "SIGTERM")
    })

    const progressKey = (token: unknown) => JSON.stringify(token)

    const handleLine = (line: Uint8Array): Effect.Effect<void> => {
      const message = classifyLine(line)
      switch (message._tag) {
        case "Response": {
          const id = message.message.id
          if (settle(id, message.message)) return Effect.void
          return log(Effect.logWarning(`ignored a response to unknown request id ${JSON.stringify(id)}`))
        }
        case "Invalid": {
          settle(
            message.id,
            new UpstreamError({
              server: name,
              code: ErrorCode.InternalError,
              reason: `sent an invalid response (${message.error.message})`,
            }),
          )
          const text = Buffer.from(line.subarray(0, 200)).toString("utf8")
          return log(Effect.logWarning(`ignored stdout line that is not JSON-RPC: ${text}`))
        }
        case "Notification": {
          if (message.message.method === "notifications/progress") {
            const owner = progressOwners.get(progressKey(message.message.params?.progressToken))
            const entry = owner === undefined ? undefined : pending.get(owner)
            entry?.timer.refresh()
          }
          return options.onMessage(connection, message.message)
        }
        case "Request":
          return options.onMessage(connection, message.message)
      }
    }

    const framer = new LineFramer(options.maxLineBytes)
    const handleOversized = (size: number, head: string, tail: string) => {
      settle(
        recoverId(head, tail),
        new UpstreamError({
          server: name,
          code: ErrorCode.InternalError,
          reason: `sent a response of ${size} bytes, over the ${options.maxLineBytes}-byte limit`,
        }),
      )
      return log(
        Effect.logWarning(`dropped a ${size}-byte message, over the ${options.maxLineBytes}-byte limit`),
      )
    }

    const stderrFramer = new LineFramer(64 * 1024)
    yield* forEachChunk(child.stderr, (chunk) =>
      Effect.forEach(
        stderrFramer.push(chunk),
        (frame) =>
          log(
            Effect.logInfo(
              frame._tag === "Line"
                ? Buffer.from(frame.bytes).toString("utf8")
                : `${frame.head.slice(0, 200)}... [${frame.size} bytes of stderr]`,
            ),
          ),
        { discard: true },
      ),
    ).pipe(Effect.forkScoped)

    const write = (message: JsonObject) =>
      writeWithBackpressure(child.stdin, encodeMessage(message as JsonRpcNotification)).pipe(
        // A write fails when the child has just died: say how it died rather than "closed its input".
        Effect.catchAll(() =>
          Deferred.await(exitedSignal).pipe(
            Effect.timeout(outputDrainTime),
            Effect.catchAll(() =>
              Effect.succeed(
                new UpstreamError({
                  server: name,
                  code: ErrorCode.ServerUnavailable,
                  reason: "closed its input",
                }),
              ),
            ),
            Effect.flatMap(Effect.fail),
          ),
        ),
      )

    const timeoutMillis = Duration.toMillis(options.requestTimeout)

    /** Fails once the request has been silent (no progress) for the whole timeout. */
    const timedOut = (id: number) =>
      new UpstreamError({
        server: name,
        code: ErrorCode.RequestTimeout,
        reason: `did not answer request ${id} within ${Duration.format(options.requestTimeout)}`,
      })

    const cancelAtChild = (id: number, reason: string) => {
      if (!child.stdin.destroyed && !child.stdin.writableEnded) {
        child.stdin.write(
          encodeMessage({
            jsonrpc: "2.0",
            method: "notifications/cancelled",
            params: { requestId: id, reason },
          }),
        )
      }
    }

    // The per-call path is plain callbacks: no fiber, no Deferred, a Node timer for the deadline
    // (progress refreshes it). It is what a tools/call costs, so it is kept lean.
    const call = (message: JsonRpcRequest, done: (outcome: JsonRpcResponse | UpstreamError) => void) => {
      if (exitError !== undefined) {
        done(exitError)
        return () => {}
      }
      if (child.stdin.destroyed || child.stdin.writableEnded) {
        done(
          new UpstreamError({ server: name, code: ErrorCode.ServerUnavailable, reason: "closed its input" }),
        )
        return () => {}
      }
      const id = nextId++
      const meta = message.params?._meta
      const progressToken = isObject(meta) ? meta.progressToken : undefined
      const forget = () => {
        clearTimeout(timer)
        if (progressToken !== undefined) progressOwners.delete(progressKey(progressToken))
      }
      const timer = setTimeout(() => {
        if (settle(id, timedOut(id))) cancelAtChild(id, "request timed out at the gateway")
      }, timeoutMillis)
      timer.unref()
      pending.set(id, {
        timer,
        settle: (outcome) => {
          forget()
          done(outcome instanceof UpstreamError ? outcome : { ...outcome, id: message.id })
        },
      })
      if (progressToken !== undefined) progressOwners.set(progressKey(progressToken), id)
      child.stdin.write(encodeMessage({ ...message, id }))
      return () => {
        if (!pending.delete(id)) return
        forget()
        cancelAtChild(id, "cancelled by the client")
      }
    }

    const request = (message: JsonRpcRequest): Effect.Effect<JsonRpcResponse, UpstreamError> =>
      Effect.async<JsonRpcResponse, UpstreamError>((resume) => {
        const cancel = call(message, (outcome) =>
          resume(outcome instanceof UpstreamError ? Effect.fail(outcome) : Effect.succeed(outcome)),
        )
        return Effect.sync(cancel)
      })

    const send = (message: JsonRpcNotification | JsonRpcResponse) => write(message)

    const connection: UpstreamConnection = {
      name,
      pid,
      call,
      request,
      send,
      exited: Deferred.await(closed),
    }

    // One reader hands every message on in the order the child wrote it: a notification the child
    // sent before a response reaches the client before that response.
    yield* forEachChunk(child.stdout, (chunk) =>
      Effect.forEach(
        framer.push(chunk),
        (frame) =>
          frame._tag === "Line"
            ? handleLine(frame.bytes)
            : handleOversized(frame.size, frame.head, frame.tail),
        { discard: true },
      ),
    ).pipe(Effect.zipRight(Deferred.succeed(outputEnded, undefined)), Effect.forkScoped)
    // The child is gone once it has exited and its output is read (answers still in the pipe are
    // delivered first), or shortly after exiting if something it started holds its stdout open.
    yield* Deferred.await(exitedSignal).pipe(
      Effect.tap(() => Deferred.await(outputEnded).pipe(Effect.timeout(outputDrainTime), Effect.ignore)),
      Effect.flatMap((error) => Effect.sync(() => failAllPending(error)).pipe(Effect.as(error))),
      Effect.flatMap((error) => Deferred.succeed(closed, error)),
      Effect.forkScoped,
    )
    return connection
  })

/** Close stdin, then SIGTERM, then SIGKILL the child's process group, waiting `grace` between steps. */
const stopChild = (child: Child, exited: Deferred.Deferred<UpstreamError>, grace: Duration.Duration) =>
  Effect.gen(function* () {
    const pid = child.pid
    if (pid === undefined) return
    // Finalizers run uninterruptibly, and a timeout cannot cut short an uninterruptible wait.
    const waitExit = Deferred.await(exited).pipe(Effect.interruptible, Effect.timeout(grace), Effect.option)
    const groupAlive = Effect.sync(() => signalGroup(pid, 0))
    const waitGroupGone = Effect.gen(function* () {
      const until = Date.now() + Duration.toMillis(grace)
      while ((yield* groupAlive) && Date.now() < until) yield* Effect.sleep(Duration.millis(20))
    })
    child.stdin.end()
    yield* waitExit
    if (yield* groupAlive) {
      signalGroup(pid, "SIGTERM")
      yield* waitExit
      yield* waitGroupGone
    }
    if (yield* groupAlive) {
      signalGroup(pid, "SIGKILL")
      yield* Effect.logWarning("child did not stop after SIGTERM: killed its process group").pipe(
        Effect.annotateLogs({ pid }),
      )
      yield* waitExit
    }
  })

export const UpstreamLive = Layer.effect(
  Upstream,
  Effect.map(ChildReaper, (reaper) => ({
    start: (server: ChildServer, options: UpstreamOptions) => startUpstream(reaper, server, options),
  })),
)
