/** Sending one request to one child of the session and giving back its answer, with the client's id. */
import { Effect } from "effect"
import { ErrorCode, errorResponse, type JsonRpcRequest, type JsonRpcResponse } from "../../shared/jsonRpc.js"
import type { ReadyChild } from "../children/ChildSupervisor.js"
import type { SessionChildren } from "./children.js"
import type { InputRounds } from "./inputRounds.js"
import { fromModernChild, interactiveMethods, modernVersion, toModernChild } from "./modern.js"
import type { SessionProtocol } from "./protocol.js"
import { fromUpstreamError } from "./types.js"

export type Forward = (server: string, request: JsonRpcRequest) => Effect.Effect<JsonRpcResponse>

export const makeForward = (
  children: SessionChildren,
  protocol: SessionProtocol,
  inputRounds: InputRounds,
): Forward => {
  const forwardTo = (server: string, ready: ReadyChild | undefined, request: JsonRpcRequest) => {
    if (ready === undefined) return Effect.succeed(children.notRunning(request.id, server))
    const child = children.all.find((candidate) => candidate.server.name === server)
    const send = (sent: JsonRpcRequest) =>
      ready.connection
        .request(sent)
        .pipe(
          Effect.catchTag("UpstreamError", (error) => Effect.succeed(fromUpstreamError(request.id, error))),
        )
    if (protocol.era === "modern" && interactiveMethods.includes(request.method) && child !== undefined) {
      // A modern child's input_required goes to the 2026 client as it is; the retry comes back here.
      if (ready.protocolVersion === modernVersion) {
        const sent = toModernChild(server, request)
        if (typeof sent === "string")
          return Effect.succeed(errorResponse(request.id, { code: ErrorCode.InvalidParams, message: sent }))
        return Effect.map(send(sent), (response) => fromModernChild(server, response))
      }
      // A 2025-era child's questions during a call become input_required rounds.
      return inputRounds.call(child.server, ready, request)
    }
    return send(request)
  }
  // A child still starting gets up to --startup-wait to come up.
  return (server, request) =>
    Effect.flatMap(children.whenReady(server), (ready) => forwardTo(server, ready, request))
}
