/** Sending one request to one child of the session and giving back its answer, with the client's id. */
import { Effect } from "effect"
import type { JsonRpcRequest, JsonRpcResponse } from "../../shared/jsonRpc.js"
import type { ReadyChild } from "../children/ChildSupervisor.js"
import type { SessionChildren } from "./children.js"
import type { InputRounds } from "./inputRounds.js"
import { interactiveMethods } from "./modern.js"
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
    // A 2026 client cannot be asked anything during a call except through input_required rounds.
    if (protocol.era === "modern" && interactiveMethods.includes(request.method) && child !== undefined)
      return inputRounds.call(child.server, ready, request)
    return ready.connection
      .request(request)
      .pipe(Effect.catchTag("UpstreamError", (error) => Effect.succeed(fromUpstreamError(request.id, error))))
  }
  // A child still starting gets up to --startup-wait to come up.
  return (server, request) =>
    Effect.flatMap(children.whenReady(server), (ready) => forwardTo(server, ready, request))
}
