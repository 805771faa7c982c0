/**
 * The client's life: connect, relay, and when the connection is lost, connect again with backoff and
 * pick up where the host was (the Bridge replays its session), until the host is done or
 * --reconnect-timeout passes without a session. --no-reconnect keeps the exit at the first loss.
 */
import * as Effect from "effect/Effect"
import { Bridge, type BridgeOutcome } from "./Bridge.js"
import { ClientConfig } from "./ClientConfig.js"
import { ClientConnection } from "./ClientConnection.js"

export type ClientOutcome = BridgeOutcome | { readonly _tag: "GaveUp"; readonly reason: string }

/** Waits between attempts: 250 ms doubling, at most 10 s. */
export const reconnectDelayMs = (attempt: number): number =>
  Math.min(250 * 2 ** Math.min(attempt, 10), 10_000)

export const serveHost = Effect.gen(function* () {
  const settings = yield* ClientConfig
  const connection = yield* ClientConnection
  const bridge = yield* Bridge
  let reconnected = false
  /** When the last good session was lost; undefined while none was. */
  let lostSince: number | undefined
  let attempt = 0
  let lastReason = ""
  while (true) {
    const result = yield* Effect.scoped(
      Effect.gen(function* () {
        const session = yield* connection.open
        return yield* bridge.relay(session, { reconnected, answerLateRequests: !settings.reconnect })
      }),
    ).pipe(Effect.either)
    if (result._tag === "Left") {
      // The first connection, a host key that changed, a key that was refused: no retrying those.
      if (lostSince === undefined || result.left._tag !== "ConnectError")
        return yield* Effect.fail(result.left)
      lastReason = result.left.message
    } else {
      const outcome = result.right
      // A session the gateway ended itself (an unknown server, a limit) would only end again.
      if (outcome._tag !== "GatewayLost" || !settings.reconnect || outcome.ended) return outcome
      // A session that was up and served: the timeout counts from its loss.
      if (!outcome.reason.startsWith("the new session failed") || lostSince === undefined) {
        lostSince = Date.now()
        attempt = 0
      }
      lastReason = outcome.reason
      yield* Effect.logWarning(
        `connection to the gateway lost: ${outcome.reason}${outcome.answered > 0 ? ` (${outcome.answered} pending request(s) answered with an error)` : ""}; reconnecting`,
      )
      reconnected = true
    }
    if (Date.now() - lostSince >= settings.reconnectTimeoutMs) {
      return { _tag: "GaveUp", reason: lastReason } satisfies ClientOutcome
    }
    yield* Effect.sleep(`${reconnectDelayMs(attempt++)} millis`)
  }
})
