/**
 * One child MCP server over stdio, as a scoped resource. The child runs in its own process group;
 * releasing it closes stdin, then SIGTERMs and finally SIGKILLs the whole group, and the processes it
 * moved out of the group, so nothing it started outlives it. Requests get gateway-assigned ids, a
 * deadline that progress extends, and a notifications/cancelled to the child when the caller gives up.
 * Its stdout is read only as fast as the session's client takes the output, and its stderr reaches
 * the log within a budget.
 */
import { type ChildProcessByStdio, spawn } from "node:child_process"
import type { Readable, Writable } from "node:stream"
import { Context, Deferred, Duration, Effect, Exit, Layer, type Scope } from "effect"
import {
  classifyLine,
  ErrorCode,
  encodeMessage,
  isObject,
  type JsonObject,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
  recoverId,
} from "../../shared/jsonRpc.js"
import { type Frame, LineFramer } from "../../shared/lineFramer.js"
import { forEachChunk, writeWithBackpressure } from "../../shared/streams.js"
import type { ChildServer } from "../config/GatewayConfig.js"
import { UpstreamError } from "../errors.js"
import { ChildReaper, type ChildReaperShape } from "./ChildReaper.js"
import {
  admit,
  freshLogBudget,
  type LogBudgetPolicy,
  readPause,
  rollOver,
  untilWindowEnds,
} from "./logBudget.js"
import { descendantsOf, isAlive, isSignallablePid, type ProcessHandle } from "./processTree.js"

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
  /**
   * Waited on before each further chunk of the child's stdout is read. A session's children wait
   * while its client's channel is full, so a client that stops reading stops its children's output
   * too, answers included: their stdout pipes fill, their writes block, and memory does not grow.
   */
  readonly outputReady: Effect.Effect<void>
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

/** A child's stderr in the log: 100 lines a second (the rest counted), and at most 4 MiB a second read. */
const stderrPolicy: LogBudgetPolicy = { maxLines: 100, maxBytes: 4 * 1024 * 1024, windowMillis: 1000 }
/** Longer stderr lines are logged cut, with their size. */
const maxLoggedStderrChars = 2048

const describeStderr = (frame: Frame): string => {
  if (frame._tag === "Oversized") return `${frame.head.slice(0, 200)}... [${frame.size} bytes of stderr]`
  const bytes = frame.bytes
  if (bytes.length <= maxLoggedStderrChars) return Buffer.from(bytes).toString("utf8")
  const head = Buffer.from(bytes.buffer, bytes.byteOffset, maxLoggedStderrChars).toString("utf8")
  return `${head}... [${bytes.length} bytes]`
}

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
  if (!isSignallablePid(pid)) throw new RangeError(`refusing to signal process group ${pid}`)
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return false
  }
}

/** A child that did start: its pid is known, so it can be signalled and its group ended. */
interface Spawned {
  readonly child: Child
  readonly pid: number
}

const spawnChild = (server: ChildServer) =>
  Effect.async<Spawned, UpstreamError>((resume) => {
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
      const pid = child.pid
      if (isSignallablePid(pid)) return resume(Effect.succeed({ child, pid }))
      // Node reports no pid only for a failed spawn; without one nothing could stop it safely.
      child.stdin.destroy()
      child.stdout.destroy()
      child.stderr.destroy()
      resume(
        Effect.fail(
          new UpstreamError({
            server: server.name,
            code: ErrorCode.ServerUnavailable,
            reason: `could not start '${server.command}': the system gave no process id`,
          }),
        ),
      )
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
    const { child, pid } = yield* Effect.acquireRelease(
      spawnChild(server).pipe(Effect.tap(({ pid }) => Effect.sync(() => reaper.register(pid)))),
      ({ child, pid }) =>
        stopChild(child, pid, exitedSignal, options.stopTimeout).pipe(
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

    const scope = yield* Effect.scope
    const stderrFramer = new LineFramer(64 * 1024)
    let stderrBudget = freshLogBudget(Date.now())
    let reportPending = false
    const reportSuppressed = (count: number) =>
      count === 0
        ? Effect.void
        : log(
            Effect.logWarning(
              `suppressed ${count} lines of stderr from server '${name}' (over ${stderrPolicy.maxLines} a second)`,
            ),
          )
    /** Report what the window held back once it has ended. */
    const rollOverStderr = Effect.suspend(() => {
      const rolled = rollOver(stderrBudget, stderrPolicy, Date.now())
      stderrBudget = rolled.budget
      return reportSuppressed(rolled.suppressed)
    })
    // Held-back lines are reported when their window ends, even if the child falls silent then.
    const scheduleReport = Effect.suspend(() => {
      if (reportPending) return Effect.void
      reportPending = true
      const delay = Duration.millis(untilWindowEnds(stderrBudget, stderrPolicy, Date.now()) + 5)
      return Effect.sleep(delay).pipe(
        Effect.zipRight(
          Effect.suspend(() => {
            reportPending = false
            return rollOverStderr
          }),
        ),
        Effect.forkIn(scope),
        Effect.asVoid,
      )
    })
    yield* Effect.addFinalizer(() => Effect.suspend(() => reportSuppressed(stderrBudget.suppressed)))
    const logStderr = (chunk: Buffer) =>
      Effect.zipRight(
        rollOverStderr,
        Effect.suspend(() => {
          const frames = stderrFramer.push(chunk)
          const admitted = admit(stderrBudget, stderrPolicy, chunk.length, frames.length)
          stderrBudget = admitted.budget
          const pause = readPause(stderrBudget, stderrPolicy, Date.now())
          return Effect.forEach(
            frames.slice(0, admitted.logged),
            (frame) => log(Effect.logInfo(describeStderr(frame))),
            { discard: true },
          ).pipe(
            Effect.zipRight(admitted.logged < frames.length ? scheduleReport : Effect.void),
            // A child writing faster than the budget waits on its full stderr pipe.
            Effect.zipRight(pause > 0 ? Effect.sleep(Duration.millis(pause)) : Effect.void),
          )
        }),
      )
    yield* forEachChunk(child.stderr, logStderr).pipe(Effect.forkScoped)

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
    // sent before a response reaches the client before that response. It reads on only when the
    // client can take more.
    const ready = options.outputReady
    yield* forEachChunk(child.stdout, (chunk) =>
      Effect.forEach(
        framer.push(chunk),
        (frame) =>
          frame._tag === "Line"
            ? handleLine(frame.bytes)
            : handleOversized(frame.size, frame.head, frame.tail),
        { discard: true },
      ).pipe(Effect.zipRight(ready)),
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

/**
 * Close stdin, then SIGTERM, then SIGKILL the child's process group, waiting `grace` between steps.
 * Processes the child moved out of its group (setsid) get the same signals: they are found below it
 * in the process tree while it still runs (once it exits, they are orphans nothing links to it).
 */
const stopChild = (
  child: Child,
  pid: number,
  exited: Deferred.Deferred<UpstreamError>,
  grace: Duration.Duration,
) =>
  Effect.gen(function* () {
    // Finalizers run uninterruptibly, and a timeout cannot cut short an uninterruptible wait.
    const waitExit = Deferred.await(exited).pipe(Effect.interruptible, Effect.timeout(grace), Effect.option)
    const escaped = new Map<number, ProcessHandle>()
    const noteEscaped = Effect.sync(() => {
      for (const found of descendantsOf(pid)) {
        if (found.processGroup !== pid) escaped.set(found.pid, found)
      }
    })
    const escapedAlive = () => [...escaped.values()].filter(isAlive)
    const signalAll = (signal: NodeJS.Signals) =>
      Effect.sync(() => {
        signalGroup(pid, signal)
        for (const { pid: stray } of escapedAlive()) {
          try {
            process.kill(stray, signal)
          } catch {
            // Gone meanwhile.
          }
        }
      })
    const anyAlive = Effect.sync(() => signalGroup(pid, 0) || escapedAlive().length > 0)
    const waitAllGone = Effect.gen(function* () {
      const until = Date.now() + Duration.toMillis(grace)
      while ((yield* anyAlive) && Date.now() < until) yield* Effect.sleep(Duration.millis(20))
    })
    yield* noteEscaped
    child.stdin.end()
    yield* waitExit
    if (yield* anyAlive) {
      yield* noteEscaped
      yield* signalAll("SIGTERM")
      yield* waitExit
      yield* waitAllGone
    }
    if (yield* anyAlive) {
      yield* signalAll("SIGKILL")
      yield* Effect.logWarning("child did not stop after SIGTERM: killed its process group").pipe(
        Effect.annotateLogs({ pid }),
      )
      yield* waitExit
    }
    if (escaped.size > 0) {
      yield* Effect.logWarning(
        `ended ${escaped.size} process(es) the child had moved out of its process group: ${[...escaped.keys()].join(", ")}`,
      ).pipe(Effect.annotateLogs({ pid }))
    }
  })

export const UpstreamLive = Layer.effect(
  Upstream,
  Effect.map(ChildReaper, (reaper) => ({
    start: (server: ChildServer, options: UpstreamOptions) => startUpstream(reaper, server, options),
  })),
)
