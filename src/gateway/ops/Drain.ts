/**
 * The graceful drain: once it begins, the SSH listener closes, new sessions and requests are refused,
 * and the calls already in flight get up to --drain-timeout to finish before the gateway stops.
 *
 * Sessions count their requests here with two plain calls (no fiber, no allocation), since every
 * request passes through; the drain waits for the count to reach zero.
 */
import { Context, Deferred, Duration, Effect, Exit, Layer } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.js"

/** How a drain ended. */
export type DrainOutcome =
  | { readonly _tag: "Finished"; readonly millis: number }
  | { readonly _tag: "TimedOut"; readonly remaining: number }
  | { readonly _tag: "Cut"; readonly remaining: number }

export interface DrainShape {
  /** True once the drain has begun; read on every request, so a plain call. */
  readonly draining: () => boolean
  /** Completes when the drain begins (the SSH server closes its listener). */
  readonly started: Effect.Effect<void>
  /**
   * Call `listener` once when the drain begins (at once if it has): a plain callback, for the many
   * sessions (each ends its listens). The function returned forgets it.
   */
  readonly whenStarted: (listener: () => void) => () => void
  /** A request of some session is in flight; pair with one `callSettled` when it is answered or cancelled. */
  readonly callStarted: () => void
  readonly callSettled: () => void
  /** Requests in flight now, in every session. */
  readonly inFlight: () => number
  /**
   * Begin the drain and wait until no call is in flight, at most --drain-timeout, or until `cut`
   * completes (a second signal). Logs its start and its end. Running it again only waits again.
   */
  readonly run: (cut: Effect.Effect<void>) => Effect.Effect<DrainOutcome>
}

export class Drain extends Context.Tag("mcp-ssh/Drain")<Drain, DrainShape>() {}

const plural = (count: number, noun: string) => `${count} ${noun}${count === 1 ? "" : "s"}`

export const DrainLive = Layer.effect(
  Drain,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const timeout = Duration.seconds(settings.drainTimeout)
    const started = yield* Deferred.make<void>()
    const idle = yield* Deferred.make<void>()
    let draining = false
    let inFlight = 0
    const listeners = new Set<() => void>()

    const callSettled = () => {
      inFlight = Math.max(0, inFlight - 1)
      if (draining && inFlight === 0) Deferred.unsafeDone(idle, Exit.void)
    }

    const run = (cut: Effect.Effect<void>) =>
      Effect.gen(function* () {
        const begun = Date.now()
        if (!draining) {
          draining = true
          yield* Deferred.succeed(started, undefined)
          const waiting = [...listeners]
          listeners.clear()
          for (const listener of waiting) listener()
          yield* Effect.logInfo(
            `drain started: ${plural(inFlight, "call")} in flight; new connections and requests are refused; ` +
              `waiting up to ${Duration.format(timeout)}`,
          )
        }
        if (inFlight === 0) yield* Deferred.succeed(idle, undefined)
        const outcome: DrainOutcome = yield* Effect.raceAll([
          Deferred.await(idle).pipe(
            Effect.map((): DrainOutcome => ({ _tag: "Finished", millis: Date.now() - begun })),
          ),
          Effect.sleep(timeout).pipe(Effect.as<DrainOutcome>({ _tag: "TimedOut", remaining: -1 })),
          cut.pipe(Effect.as<DrainOutcome>({ _tag: "Cut", remaining: -1 })),
        ])
        if (outcome._tag === "Finished") {
          yield* Effect.logInfo(`drain finished: every call answered in ${outcome.millis} ms`)
          return outcome
        }
        // Counted now: calls may have finished while the race was being decided.
        const remaining = inFlight
        yield* Effect.logWarning(
          outcome._tag === "TimedOut"
            ? `drain timed out after ${Duration.format(timeout)}: ${plural(remaining, "call")} still in flight get an error`
            : `drain cut short by a second signal: ${plural(remaining, "call")} still in flight get an error`,
        )
        return { ...outcome, remaining }
      })

    return {
      draining: () => draining,
      started: Deferred.await(started),
      whenStarted: (listener: () => void) => {
        if (draining) {
          listener()
          return () => {}
        }
        listeners.add(listener)
        return () => listeners.delete(listener)
      },
      callStarted: () => {
        inFlight++
      },
      callSettled,
      inFlight: () => inFlight,
      run,
    } satisfies DrainShape
  }),
)
