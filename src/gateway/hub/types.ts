/** What the parts of a session's Hub share: who the client is, how to reach it, what a route gives. */
import {
  ErrorCode,
  errorResponse,
  ForwardedResponse,
  isObject,
  type JsonObject,
  type JsonRpcId,
  type JsonRpcResponse,
  type OutgoingMessage,
  type OutgoingResponse,
} from "../../shared/jsonRpc.js"
import type { OutputGate } from "../../shared/streams.js"
import type { UpstreamError } from "../errors.js"

/** Who is on the other end of a session: for the log, the audit and the access policy. */
export interface ClientIdentity {
  /** The fingerprint of the key that logged in (for a certificate: of the certified key). */
  readonly fingerprint: string
  readonly username: string
  readonly address: string
  /** The name the access policy knows the client by (see issue "Identities and access"). */
  readonly identity: string
  readonly groups: ReadonlyArray<string>
  /** Set when the client logged in with an OpenSSH certificate. */
  readonly certificate?: { readonly serial: string; readonly caFingerprint: string }
}

/**
 * The client's side of a session as the Hub sees it. Messages are written at once and in order;
 * whoever produces them (the readers of children's output) waits for `ready` before reading more, so
 * a client that stops reading stops its children's output too and the gateway's memory stays flat.
 */
export interface ClientOutput {
  readonly write: (message: OutgoingMessage) => void
  /** Whether the client's channel has room; when not, says when it has drained. */
  readonly ready: OutputGate
}

/** What a request was routed to, for the audit line. */
export interface Routed {
  readonly response: JsonRpcResponse
  readonly server?: string | undefined
  readonly target?: string | undefined
}

/** What the fast path answers with: a child's success answer may be its bytes (ForwardedResponse). */
export interface Answered {
  readonly response: OutgoingResponse
  readonly server?: string | undefined
  readonly target?: string | undefined
}

/** A tool or prompt as its child knows it. */
export interface Target {
  readonly server: string
  readonly name: string
}

export const ok = (id: JsonRpcId, result: JsonObject): JsonRpcResponse => ({ jsonrpc: "2.0", id, result })

export const invalidParams = (id: JsonRpcId, message: string): Routed => ({
  response: errorResponse(id, { code: ErrorCode.InvalidParams, message }),
})

export const fromUpstreamError = (id: JsonRpcId, error: UpstreamError): JsonRpcResponse =>
  errorResponse(id, { code: error.code, message: error.message })

export const stringParam = (params: JsonObject | undefined, key: string): string | undefined => {
  const value = params?.[key]
  return typeof value === "string" ? value : undefined
}

/** `params` only when there are some (exactOptionalPropertyTypes forbids an explicit undefined). */
export const optionalParams = (params: JsonObject | undefined): { params?: JsonObject } =>
  params === undefined ? {} : { params }

/**
 * The id of a task a result announces, if any (tasks extension). A forwarded answer announces none:
 * a result with a "task" member is never forwarded as bytes.
 */
export const taskIdOf = (response: OutgoingResponse): string | undefined => {
  if (response instanceof ForwardedResponse) return undefined
  const task = isObject(response.result) ? response.result.task : undefined
  return isObject(task) && typeof task.taskId === "string" ? task.taskId : undefined
}
