/**
 * A child server's stderr in the gateway's log, within a budget: 100 lines a second (the rest
 * counted in one warning a second), and at most 4 MiB a second read, beyond which the child waits on
 * its full pipe.
 */
import type { Readable } from "node:stream"
import { Duration, Effect, type Scope } from "effect"
import { type Frame, LineFramer } from "../../shared/lineFramer.js"
import { forEachChunk } from "../../shared/streams.js"
import {
  admit,
  freshLogBudget,
  type LogBudgetPolicy,
  readPause,
  rollOver,
  untilWindowEnds,
} from "./logBudget.js"

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

/** Log the stream's lines for the scope's life; what the budget held back is reported at the end. */
export const relayStderr = (
  stderr: Readable,
  server: string,
  log: (effect: Effect.Effect<void>) => Effect.Effect<void>,
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const stderrFramer = new LineFramer(64 * 1024)
    let stderrBudget = freshLogBudget(Date.now())
    let reportPending = false
    const reportSuppressed = (count: number) =>
      count === 0
        ? Effect.void
        : log(
            Effect.logWarning(
              `suppressed ${count} lines of stderr from server '${server}' (over ${stderrPolicy.maxLines} a second)`,
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
    yield* forEachChunk(stderr, logStderr).pipe(Effect.forkScoped)
  })
