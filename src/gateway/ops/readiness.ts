/**
 * What /ready and /health say, from what the gateway knows: whether SSH listens, whether it drains,
 * and how each configured server did at its start probe. Pure, so every state is tested without IO.
 */

/** A configured server as the gateway's start probe left it. */
export type ServerStartState =
  | { readonly state: "starting" }
  | { readonly state: "up" }
  | { readonly state: "failed"; readonly reason: string }

export type GatewayState = "starting" | "ready" | "no_server_can_start" | "draining"

export interface StatusSnapshot {
  readonly state: GatewayState
  readonly ssh: { readonly listening: boolean; readonly address: string }
  readonly servers: ReadonlyArray<readonly [name: string, ServerStartState]>
}

export const gatewayState = (facts: {
  readonly serving: boolean
  readonly draining: boolean
  readonly servers: ReadonlyArray<readonly [string, ServerStartState]>
}): GatewayState => {
  if (facts.draining) return "draining"
  if (!facts.serving) return "starting"
  // Only the probe's verdict counts: a server that failed it is still tried for each session, but
  // a load balancer should send clients to a replica where something can run.
  const everyOneFailed =
    facts.servers.length > 0 && facts.servers.every(([, server]) => server.state === "failed")
  return everyOneFailed ? "no_server_can_start" : "ready"
}

const notReadyReasons: Record<Exclude<GatewayState, "ready">, string> = {
  starting: "the gateway is starting: its servers are being probed",
  draining: "the gateway is shutting down",
  no_server_can_start: "no configured server could start",
}

/** GET /ready: 200 when clients should be sent here, else 503 saying why (as every error: `error`). */
export type ReadyAnswer =
  | { readonly status: 200; readonly body: { readonly status: "ready" } }
  | {
      readonly status: 503
      readonly body: { readonly error: string; readonly state: Exclude<GatewayState, "ready"> }
    }

export const readyAnswer = (state: GatewayState): ReadyAnswer =>
  state === "ready"
    ? { status: 200, body: { status: "ready" } }
    : { status: 503, body: { error: notReadyReasons[state], state } }

/** Long child errors (a command line, a stack) are cut: this is a status line, not a log. */
const maxReasonLength = 200

/** A probe failure as /health shows it: the first line, bounded. */
export const shortReason = (reason: string): string => {
  const line = reason.split("\n", 1)[0] ?? ""
  return line.length > maxReasonLength ? `${line.slice(0, maxReasonLength - 1)}…` : line
}
