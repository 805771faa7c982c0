/**
 * The gateway's Prometheus metrics, on a prom-client Registry of its own (not the global one, which
 * any library could write to). The parts of the gateway report what happens through plain callbacks:
 * the call path is hot, so it allocates no Effect and, with metrics off, calls functions that do
 * nothing. Metrics is a Context.Reference whose default is that no-op, so layers and test harnesses
 * that do not care about metrics need not provide it. prom-client itself is loaded only when
 * metrics are on (prometheus.ts).
 */
import { Context, Data, Effect, Layer } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.js"

export type ConnectionOutcome = "authenticated" | "refused" | "limited"
export type AuthFailureReason =
  | "method"
  | "unknown_key"
  | "algorithm"
  | "bad_signature"
  | "revoked"
  | "key_options"
  | "certificate"
export type ReloadOutcome = "applied" | "unchanged" | "failed"

/** What a connection has moved so far (a net.Socket). */
export interface ByteCounts {
  readonly bytesRead: number
  readonly bytesWritten: number
}

/** The registry could not render the metrics (a collector failed). */
export class ScrapeError extends Data.TaggedError("ScrapeError")<{ readonly reason: string }> {
  override get message(): string {
    return `cannot render the metrics: ${this.reason}`
  }
}

export interface MetricsShape {
  readonly enabled: boolean
  /** The exposition text and its content type, for GET /metrics. */
  readonly scrape: Effect.Effect<{ readonly contentType: string; readonly text: string }, ScrapeError>
  /** A TCP connection was accepted; the function returned is called when it closes. */
  readonly connectionOpened: (socket: ByteCounts) => () => void
  /** How a connection's login ended (once per connection). */
  readonly connectionOutcome: (outcome: ConnectionOutcome) => void
  readonly authFailed: (reason: AuthFailureReason) => void
  /** An MCP session opened; the function returned is called when it ends. */
  readonly sessionOpened: () => () => void
  /** A call starts: the value returned goes back to callEnded. */
  readonly callStarted: () => number
  /** `outcome` as the audit line has it ("ok", "error N", "cancelled"). */
  readonly callEnded: (
    started: number,
    server: string | undefined,
    method: string,
    target: string | undefined,
    outcome: string,
  ) => void
  /** A request refused because its session had too many in flight. */
  readonly callLimited: () => void
  /** A child process is up; the function returned is called when it has gone. */
  readonly childStarted: (server: string, scope: string, pid: number | undefined) => () => void
  readonly childRestarted: (server: string) => void
  /** A child exited without being asked to. */
  readonly childCrashed: (server: string) => void
  readonly keyApiRequest: (route: string, status: number) => void
  readonly reloaded: (outcome: ReloadOutcome) => void
}

const nothing = () => {}

/** Metrics off: every report is a call to a function that does nothing. */
export const noMetrics: MetricsShape = {
  enabled: false,
  scrape: Effect.succeed({ contentType: "text/plain", text: "" }),
  connectionOpened: () => nothing,
  connectionOutcome: nothing,
  authFailed: nothing,
  sessionOpened: () => nothing,
  callStarted: () => 0,
  callEnded: nothing,
  callLimited: nothing,
  childStarted: () => nothing,
  childRestarted: nothing,
  childCrashed: nothing,
  keyApiRequest: nothing,
  reloaded: nothing,
}

export class Metrics extends Context.Reference<Metrics>()("mcp-ssh/Metrics", {
  defaultValue: (): MetricsShape => noMetrics,
}) {}

/** The metrics as configured: live when --metrics-port is set, the no-op otherwise. */
export const MetricsLive = Layer.scoped(
  Metrics,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    if (settings.metricsPort === undefined) return noMetrics
    const { makeMetrics } = yield* Effect.promise(() => import("./prometheus.js"))
    const metrics = yield* Effect.acquireRelease(
      Effect.sync(() => makeMetrics({ toolLabels: settings.metricsToolLabels })),
      (made) => Effect.sync(() => made.registry.clear()),
    )
    return metrics
  }),
)
