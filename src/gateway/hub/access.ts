/**
 * The access policy as one session applies it. The session's view is decided here when it opens and
 * again when a reload changes the policy, never per call: which servers it starts, which tool and
 * prompt names its routing table may hold (the rest are never indexed, so calling one answers as an
 * unknown name would), and its rate limit. The only per-call cost is for an identity with a rate
 * limit: one Map lookup and some arithmetic.
 */
import { ErrorCode, errorResponse, type JsonRpcRequest, type JsonRpcResponse } from "../../shared/jsonRpc.js"
import type { AccessPolicy } from "../access/accessConfig.js"
import type { IdentityLimitsShape } from "../access/IdentityLimits.js"
import { resolveAccess, type SessionAccess } from "../access/sessionAccess.js"
import type { RoutingTable } from "./routing.js"
import type { ClientIdentity } from "./types.js"

export interface SessionPolicy {
  /** The session's view as it stands. */
  readonly current: () => SessionAccess
  /** Apply the policy of a reload; true when the session's view changed. */
  readonly update: (policy: AccessPolicy | undefined) => boolean
  /** The answer to a call over the identity's rate limit, else undefined (the call goes on). */
  readonly refuse: (request: JsonRpcRequest) => JsonRpcResponse | undefined
}

/** What counts against `rateLimit`: the calls that make a server do work, not lists, pings or answers. */
const isCall = (method: string) =>
  method === "tools/call" || method === "prompts/get" || method === "resources/read"

export const makeSessionPolicy = (
  initial: SessionAccess,
  client: ClientIdentity,
  limits: IdentityLimitsShape,
  routing: RoutingTable,
): SessionPolicy => {
  let view = initial
  routing.restrict(view.name)

  const update = (policy: AccessPolicy | undefined) => {
    const next = resolveAccess(policy, client)
    if (next.key === view.key) return false
    view = next
    routing.restrict(view.name)
    return true
  }

  const refuse = (request: JsonRpcRequest) => {
    const rate = view.rateLimit
    if (rate === undefined || !isCall(request.method)) return undefined
    const retryAfterSeconds = limits.takeCall(client.identity, rate)
    if (retryAfterSeconds === 0) return undefined
    return errorResponse(request.id, {
      code: ErrorCode.ServerUnavailable,
      message: `rate limit of ${rate.text} reached for identity '${client.identity}'; retry in ${retryAfterSeconds} s`,
      data: { retryAfterSeconds },
    })
  }

  return { current: () => view, update, refuse }
}
