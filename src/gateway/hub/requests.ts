/**
 * The one way a session's requests go through the Hub: the session hands over a request and a way to
 * answer it, and gets back a way to cancel it. A request whose target is known takes the fast path
 * (callbacks only); any other runs as a fiber of the session through the lifecycle and dispatch.
 * Either way it gets one audit line, answered or cancelled.
 */
import { Effect, FiberId, FiberSet, type Scope } from "effect"
import type { JsonRpcRequest, JsonRpcResponse } from "../../shared/jsonRpc.js"
import type { Audit } from "../session/Audit.js"
import type { FastPath } from "./fastPath.js"
import type { ClientIdentity, Routed } from "./types.js"

/** Start answering `request`; `respond` gets the answer once unless it is cancelled first. */
export type StartRequest = (
  request: JsonRpcRequest,
  respond: (response: JsonRpcResponse) => void,
) => () => void

const outcomeOf = (response: JsonRpcResponse) =>
  response.error === undefined ? "ok" : `error ${response.error.code}`

export const makeRequests = (
  route: (request: JsonRpcRequest) => Effect.Effect<Routed>,
  fastPath: FastPath,
  audit: Audit["Type"],
  client: ClientIdentity,
): Effect.Effect<StartRequest, never, Scope.Scope> =>
  Effect.gen(function* () {
    const run = yield* FiberSet.makeRuntime<never, void, never>()
    return (request, respond) => {
      const started = Date.now()
      let settled = false
      const record = (server: string | undefined, target: string | undefined, outcome: string) =>
        audit.record({
          client: client.fingerprint,
          server: server ?? "gateway",
          method: request.method,
          target,
          millis: Date.now() - started,
          outcome,
        })
      const finish = (routed: Routed) => {
        if (settled) return
        settled = true
        record(routed.server, routed.target, outcomeOf(routed.response))
        respond(routed.response)
      }
      const fast = fastPath(request, finish)
      if (fast !== undefined) {
        return () => {
          if (settled) return
          settled = true
          fast.cancel()
          record(fast.server, fast.target, "cancelled")
        }
      }
      const fiber = run(Effect.map(route(request), finish))
      return () => {
        if (settled) return
        settled = true
        fiber.unsafeInterruptAsFork(FiberId.none)
        record(undefined, undefined, "cancelled")
      }
    }
  })
