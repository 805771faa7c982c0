/**
 * Requests the children make of a 2025-era client (sampling, elicitation, roots): each gets an id of
 * the gateway's, so ids of several children cannot collide at the client, and the client's answer,
 * its progress and a child's cancellation go back to the child that asked. The client has the
 * server's request timeout to answer; then the child gets -32001 and the client a cancellation.
 */
import { Duration, Effect, FiberMap, type Scope } from "effect"
import {
  ErrorCode,
  errorResponse,
  isObject,
  type JsonObject,
  type JsonRpcId,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../../shared/jsonRpc.js"
import type { SupervisedChild } from "../children/ChildSupervisor.js"
import type { UpstreamConnection } from "../children/Upstream.js"
import type { ClientOutput } from "./types.js"

interface OpenRequest {
  readonly connection: UpstreamConnection
  /** The child's own id for it. */
  readonly id: JsonRpcId
  readonly progressKey: string | undefined
}

export interface ServerRequests {
  /** Pass a child's request on to the client under an id of the gateway's. */
  readonly forward: (
    child: SupervisedChild,
    connection: UpstreamConnection,
    request: JsonRpcRequest,
  ) => Effect.Effect<void>
  /** The client's answer to one of them. */
  readonly answer: (response: JsonRpcResponse) => Effect.Effect<void>
  /** The child gave up on one of its requests: tell the client by the gateway's id. */
  readonly withdrawn: (connection: UpstreamConnection, params: JsonObject) => Effect.Effect<void>
  /** The client's progress on one of them goes to the child that asked; other progress is dropped. */
  readonly progress: (notification: JsonRpcNotification) => Effect.Effect<void>
}

export const makeServerRequests = (
  output: ClientOutput,
  log: (effect: Effect.Effect<void>) => Effect.Effect<void>,
): Effect.Effect<ServerRequests, never, Scope.Scope> =>
  Effect.gen(function* () {
    const open = new Map<number, OpenRequest>()
    /** Progress tokens of those requests: the client's progress goes back to the child that asked. */
    const progressOwners = new Map<string, UpstreamConnection>()
    let nextId = 1
    const deadlines = yield* FiberMap.make<number>()

    /** Forget a request that was answered, withdrawn or timed out; its entry if it was still open. */
    const close = (id: number) => {
      const entry = open.get(id)
      if (entry === undefined) return undefined
      open.delete(id)
      if (entry.progressKey !== undefined) progressOwners.delete(entry.progressKey)
      return entry
    }

    const deadline = (child: SupervisedChild, id: number, method: string) => {
      const timeout = Duration.seconds(child.server.requestTimeout)
      return Effect.sleep(timeout).pipe(
        Effect.zipRight(
          Effect.suspend(() => {
            const entry = close(id)
            if (entry === undefined) return Effect.void
            const reason = `the client did not answer ${method} within ${Duration.format(timeout)}`
            return log(
              Effect.logWarning(`cancelled request ${id} of server '${child.server.name}': ${reason}`),
            ).pipe(
              Effect.zipRight(
                entry.connection
                  .send(errorResponse(entry.id, { code: ErrorCode.RequestTimeout, message: reason }))
                  .pipe(Effect.ignore),
              ),
              Effect.zipRight(
                Effect.sync(() =>
                  output.write({
                    jsonrpc: "2.0",
                    method: "notifications/cancelled",
                    params: { requestId: id, reason },
                  }),
                ),
              ),
            )
          }),
        ),
      )
    }

    const forward = (child: SupervisedChild, connection: UpstreamConnection, request: JsonRpcRequest) =>
      Effect.suspend(() => {
        const id = nextId++
        const meta = request.params?._meta
        const progressKey =
          isObject(meta) && meta.progressToken !== undefined ? JSON.stringify(meta.progressToken) : undefined
        open.set(id, { connection, id: request.id, progressKey })
        if (progressKey !== undefined) progressOwners.set(progressKey, connection)
        return FiberMap.run(deadlines, id, deadline(child, id, request.method)).pipe(
          Effect.zipRight(Effect.sync(() => output.write({ ...request, id }))),
        )
      })

    const answer = (response: JsonRpcResponse) =>
      Effect.suspend(() => {
        const entry = typeof response.id === "number" ? close(response.id) : undefined
        if (entry === undefined || typeof response.id !== "number") {
          return log(
            Effect.logWarning(
              `ignored a response of the client to request id ${JSON.stringify(response.id)}, which no server awaits`,
            ),
          )
        }
        return FiberMap.remove(deadlines, response.id).pipe(
          Effect.zipRight(entry.connection.send({ ...response, id: entry.id }).pipe(Effect.ignore)),
        )
      })

    const withdrawn = (connection: UpstreamConnection, params: JsonObject) =>
      Effect.suspend(() => {
        const found = [...open.entries()].find(
          ([, entry]) => entry.connection === connection && entry.id === params.requestId,
        )
        if (found === undefined) return Effect.void
        const [id] = found
        close(id)
        return FiberMap.remove(deadlines, id).pipe(
          Effect.zipRight(
            Effect.sync(() =>
              output.write({
                jsonrpc: "2.0",
                method: "notifications/cancelled",
                params: { ...params, requestId: id },
              }),
            ),
          ),
        )
      })

    const progress = (notification: JsonRpcNotification) =>
      Effect.suspend(() => {
        const connection = progressOwners.get(JSON.stringify(notification.params?.progressToken))
        return connection === undefined ? Effect.void : connection.send(notification).pipe(Effect.ignore)
      })

    return { forward, answer, withdrawn, progress } satisfies ServerRequests
  })
