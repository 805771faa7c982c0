/**
 * Limits that count per identity across all its connections and sessions, so they live once per
 * gateway: the call rate (`rateLimit`, a token bucket per identity) and the sessions open at once
 * (`maxSessions`). Which limit applies is the session's to say (its view of the policy); this only
 * counts.
 */
import { Context, Data, Effect, Layer, Schedule, type Scope } from "effect"
import { type Bucket, isIdle, take } from "../keys/tokenBucket.js"
import type { RateLimit } from "./accessConfig.js"

/** The identity has as many sessions open as its policy allows. */
export class SessionLimitReached extends Data.TaggedError("SessionLimitReached")<{
  readonly identity: string
  readonly limit: number
}> {
  override get message(): string {
    return `identity '${this.identity}' already has ${this.limit} session(s) open, the most its access policy allows (maxSessions); close one and try again`
  }
}

export interface IdentityLimitsShape {
  /**
   * Count one call against the identity's rate: 0 when it may go, else the whole seconds until one
   * would. Synchronous and cheap (one Map lookup and some arithmetic): it runs on the per-call path.
   */
  readonly takeCall: (identity: string, rate: RateLimit) => number
  /** Hold one of the identity's session places until the scope closes. */
  readonly holdSession: (
    identity: string,
    limit: number | undefined,
  ) => Effect.Effect<void, SessionLimitReached, Scope.Scope>
}

export class IdentityLimits extends Context.Tag("mcp-ssh/IdentityLimits")<
  IdentityLimits,
  IdentityLimitsShape
>() {}

interface RateState {
  bucket: Bucket
  rate: RateLimit
}

export const IdentityLimitsLive = Layer.scoped(
  IdentityLimits,
  Effect.gen(function* () {
    // The clock of the layer's fiber: the TestClock under tests, so rates can be tested exactly.
    const clock = yield* Effect.clock
    const buckets = new Map<string, RateState>()
    const sessions = new Map<string, number>()

    const takeCall = (identity: string, rate: RateLimit) => {
      const now = clock.unsafeCurrentTimeMillis()
      const state = buckets.get(identity)
      const decision = take(state?.bucket, rate, now)
      if (state === undefined) buckets.set(identity, { bucket: decision.bucket, rate })
      else {
        state.bucket = decision.bucket
        state.rate = rate
      }
      return decision.retryAfterSeconds
    }

    // A full bucket is the same as none: forget it, so identities that come and go do not pile up.
    yield* Effect.sync(() => {
      const now = clock.unsafeCurrentTimeMillis()
      for (const [identity, state] of buckets) {
        if (isIdle(state.bucket, state.rate, now)) buckets.delete(identity)
      }
    }).pipe(Effect.repeat(Schedule.spaced("1 minute")), Effect.forkScoped)

    const holdSession = (identity: string, limit: number | undefined) =>
      Effect.acquireRelease(
        Effect.suspend(() => {
          const open = sessions.get(identity) ?? 0
          if (limit !== undefined && open >= limit)
            return Effect.fail(new SessionLimitReached({ identity, limit }))
          sessions.set(identity, open + 1)
          return Effect.void
        }),
        () =>
          Effect.sync(() => {
            const open = (sessions.get(identity) ?? 1) - 1
            if (open <= 0) sessions.delete(identity)
            else sessions.set(identity, open)
          }),
      )

    return { takeCall, holdSession } satisfies IdentityLimitsShape
  }),
)
