/**
 * The per-call path for what is already known: a tool, prompt or resource whose owner is up, for a
 * 2025-era client. Plain callbacks from request to response, no fiber: an Effect on this path costs
 * microseconds, and it is what every tools/call pays. Anything else (names not seen yet, children
 * starting, 2026 clients) is left to the lifecycle and dispatch.
 */
import type { JsonRpcRequest } from "../../shared/jsonRpc.js"
import { UpstreamError } from "../errors.js"
import type { SessionChildren } from "./children.js"
import type { SessionProtocol } from "./protocol.js"
import type { RoutingTable } from "./routing.js"
import { type Answered, fromUpstreamError, stringParam, taskIdOf } from "./types.js"

/** A call under way on the fast path: `cancel` withdraws it at the child. */
export interface FastCall {
  readonly server: string
  readonly target: string | undefined
  readonly cancel: () => void
}

export type FastPath = (request: JsonRpcRequest, done: (answered: Answered) => void) => FastCall | undefined

export const makeFastPath =
  (protocol: SessionProtocol, routing: RoutingTable, children: SessionChildren): FastPath =>
  (request, done) => {
    if (protocol.era !== "legacy") return undefined
    const params = request.params
    let server: string | undefined
    let forwarded = request
    let target: string | undefined
    if (request.method === "tools/call" || request.method === "prompts/get") {
      target = stringParam(params, "name")
      const named =
        target === undefined
          ? undefined
          : routing.named(request.method === "tools/call" ? "tool" : "prompt", target)
      if (named !== undefined) {
        server = named.server
        forwarded = { ...request, params: { ...params, name: named.name } }
      }
    } else if (request.method === "resources/read") {
      target = stringParam(params, "uri")
      server = target === undefined ? undefined : routing.ownerOfUri(target)
    }
    const ready = server === undefined ? undefined : children.ready(server)
    if (server === undefined || ready === undefined) return undefined
    const owner = server
    const cancel = ready.connection.call(
      forwarded,
      (outcome) => {
        const response = outcome instanceof UpstreamError ? fromUpstreamError(request.id, outcome) : outcome
        routing.noteTask(taskIdOf(response), owner)
        done({ response, server: owner, target })
      },
      true,
    )
    return { server: owner, target, cancel }
  }
