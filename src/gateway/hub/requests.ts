/**
 * The one way a session's requests go through the Hub: the session hands over a request and a way to
 * answer it, and gets back a way to cancel it. A request whose target is known takes the fast path
 * (callbacks only); any other runs as a fiber of the session through the lifecycle and dispatch.
 * Either way it gets one audit line, answered or cancelled.
 */
import { Effect, Fiber, type Runtime } from "effect"
import {
  ErrorCode,
  errorResponse,
  ForwardedResponse,
  type JsonRpcRequest,
  type OutgoingResponse,
} from "../../shared/jsonRpc.js"
import { Metrics } from "../ops/Metrics.js"
import type { Audit } from "../session/Audit.js"
import type { FastPath } from "./fastPath.js"
import type { Answered, ClientIdentity, Routed } from "./types.js"

/**
 * Start answering `request`; `respond` gets the answer once unless it is cancelled first. The
 * effect returned cancels it (at the child too) and completes once it is cancelled.
 */
export type StartRequest = (
  request: JsonRpcRequest,
  respond: (response: OutgoingResponse) => void,
) => Effect.Effect<void>

/** A forwarded answer is a success: errors are never forwarded as bytes. */
const outcomeOf = (response: OutgoingResponse) =>
  response instanceof ForwardedResponse || response.error === undefined
    ? "ok"
    : `error ${response.error.code}`

/** How a session runs its fibers: each is interrupted when the session ends. */
export type SessionRunner = (
  effect: Effect.Effect<void>,
  options?: Runtime.RunForkOptions,
) => Fiber.RuntimeFiber<void>

export const makeRequests = (
  run: SessionRunner,
  route: (request: JsonRpcRequest) => Effect.Effect<Routed>,
  fastPath: FastPath,
  audit: Audit["Type"],
  client: ClientIdentity,
  /** An answer for a request refused before routing (over the identity's rate limit), else undefined. */
  refuse: (request: JsonRpcRequest) => OutgoingResponse | undefined = () => undefined,
): Effect.Effect<StartRequest> =>
  Effect.gen(function* () {
    const metrics = yield* Metrics
    return (request, respond) => {
      const started = Date.now()
      const metered = metrics.callStarted()
      let settled = false
      const record = (server: string | undefined, target: string | undefined, outcome: string) => {
        metrics.callEnded(metered, server, request.method, target, outcome)
        audit.record({
          client,
          server: server ?? "gateway",
          method: request.method,
          target,
          millis: Date.now() - started,
          outcome,
        })
      }
      const finish = (routed: Answered) => {
        if (settled) return
        settled = true
        record(routed.server, routed.target, outcomeOf(routed.response))
        respond(routed.response)
      }
      const cancelled = (server: string | undefined, target: string | undefined) => {
        if (settled) return
        settled = true
        record(server, target, "cancelled")
      }
      const refused = refuse(request)
      if (refused !== undefined) {
        finish({ response: refused })
        return Effect.void
      }
      const fast = fastPath(request, finish)
      if (fast !== undefined) {
        return Effect.sync(() => {
          if (settled) return
          fast.cancel()
          cancelled(fast.server, fast.target)
        })
      }
      const routed = route(request).pipe(
        // A defect is a bug of the gateway: the client still gets an answer, and the log the cause.
        Effect.catchAllDefect((defect) =>
          Effect.logError(`${request.method} failed inside the gateway`, defect).pipe(
            Effect.as({
              response: errorResponse(request.id, {
                code: ErrorCode.InternalError,
                message: "Internal error",
              }),
            }),
          ),
        ),
        Effect.map(finish),
        Effect.onInterrupt(() => Effect.sync(() => cancelled(undefined, undefined))),
      )
      // Started on the next turn, as a forked fiber is: what follows in the same chunk goes first.
      const fiber = run(routed, { immediate: false })
      return Fiber.interrupt(fiber).pipe(Effect.asVoid)
    }
  })
