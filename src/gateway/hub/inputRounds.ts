/**
 * input_required rounds for clients of MCP 2026-07-28, which a server cannot ask anything directly:
 * when a 2025-era child asks the client something (sampling, elicitation, roots) during a call, the
 * call is paused and answered with `resultType: "input_required"`, the child's questions and a
 * `requestState`; the client's retry with `inputResponses` answers the child and resumes the call.
 */
import { randomUUID } from "node:crypto"
import { Duration, Effect, Fiber, FiberMap, Queue, type Scope } from "effect"
import {
  ErrorCode,
  errorResponse,
  isObject,
  type JsonRpcId,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../../shared/jsonRpc.js"
import type { ReadyChild } from "../children/ChildSupervisor.js"
import type { UpstreamConnection } from "../children/Upstream.js"
import type { ChildServer } from "../config/GatewayConfig.js"
import { modernVersion } from "./modern.js"
import { fromUpstreamError, ok, stringParam } from "./types.js"

/** What happens next to a call: its child asks the client something, or answers. */
type CallEvent =
  | { readonly _tag: "Input"; readonly request: JsonRpcRequest }
  | { readonly _tag: "Done"; readonly response: JsonRpcResponse }

/** A call to a 2025-era child, which may pause on input_required and resume. */
interface InteractiveCall {
  readonly server: ChildServer
  readonly connection: UpstreamConnection
  readonly events: Queue.Queue<CallEvent>
  readonly fiber: Fiber.RuntimeFiber<void>
}

interface ParkedCall {
  readonly call: InteractiveCall
  readonly asks: ReadonlyArray<{ readonly key: string; readonly childRequestId: JsonRpcId }>
}

/** Requests a child sends together (in the same burst) are asked of the client in one round. */
const inputGatherMillis = 5

export interface InputRounds {
  /** tools/call, prompts/get or resources/read, which may take several rounds. */
  readonly call: (
    server: ChildServer,
    ready: ReadyChild,
    request: JsonRpcRequest,
  ) => Effect.Effect<JsonRpcResponse>
  /** A child asks the client something: it belongs to the oldest call waiting on that child. */
  readonly ask: (connection: UpstreamConnection, request: JsonRpcRequest) => Effect.Effect<void>
}

export const makeInputRounds = (
  log: (effect: Effect.Effect<void>) => Effect.Effect<void>,
): Effect.Effect<InputRounds, never, Scope.Scope> =>
  Effect.gen(function* () {
    const sessionScope = yield* Effect.scope
    /** Calls waiting on each child connection; an entry goes with its last call. */
    const waiting = new Map<UpstreamConnection, Array<InteractiveCall>>()
    /** Calls paused on input_required, by the requestState the client must send back. */
    const parked = new Map<string, ParkedCall>()
    /** A paused call waits for the client's next round at most its server's timeout. */
    const parkedDeadlines = yield* FiberMap.make<string>()

    const startWaiting = (call: InteractiveCall) => {
      const calls = waiting.get(call.connection)
      if (calls === undefined) waiting.set(call.connection, [call])
      else calls.push(call)
    }
    const stopWaiting = (call: InteractiveCall) =>
      Effect.sync(() => {
        const calls = waiting.get(call.connection)
        const index = calls?.indexOf(call) ?? -1
        if (calls === undefined || index === -1) return
        calls.splice(index, 1)
        // Each life of a child is a new connection: an empty entry would keep the old one reachable.
        if (calls.length === 0) waiting.delete(call.connection)
      })

    const ask = (connection: UpstreamConnection, request: JsonRpcRequest) =>
      Effect.suspend(() => {
        // It stays registered until its round is gathered: a burst of requests joins it.
        const call = waiting.get(connection)?.[0]
        if (call === undefined) {
          return connection
            .send(
              errorResponse(request.id, {
                code: ErrorCode.MethodNotFound,
                message: `${request.method}: the client (MCP ${modernVersion}) can only be asked during a call`,
              }),
            )
            .pipe(Effect.ignore)
        }
        return Queue.offer(call.events, { _tag: "Input", request }).pipe(Effect.asVoid)
      })

    const answerChild = (call: InteractiveCall, childRequestId: JsonRpcId, response: JsonRpcResponse) =>
      call.connection.send({ ...response, id: childRequestId }).pipe(Effect.ignore)

    /**
     * A client that never comes back with a paused call's requestState: the child's questions get
     * an error, the call is cancelled at the child, and the requestState is forgotten.
     */
    const expire = (requestState: string, call: InteractiveCall) => {
      const timeout = Duration.seconds(call.server.requestTimeout)
      return Effect.sleep(timeout).pipe(
        Effect.zipRight(
          Effect.suspend(() => {
            const entry = parked.get(requestState)
            if (entry === undefined) return Effect.void
            parked.delete(requestState)
            const reason = `the client did not answer input_required within ${Duration.format(timeout)}`
            return log(
              Effect.logWarning(`cancelled a paused call of server '${call.server.name}': ${reason}`),
            ).pipe(
              Effect.zipRight(
                Effect.forEach(
                  entry.asks,
                  ({ childRequestId }) =>
                    answerChild(
                      call,
                      childRequestId,
                      errorResponse(childRequestId, { code: ErrorCode.RequestTimeout, message: reason }),
                    ),
                  { discard: true },
                ),
              ),
              Effect.zipRight(Fiber.interrupt(call.fiber)),
            )
          }),
        ),
      )
    }

    /** Gather the questions of one burst into a round, and park the call until the client answers. */
    const park = (call: InteractiveCall, first: JsonRpcRequest, clientId: JsonRpcId) =>
      Effect.gen(function* () {
        // A child may ask several things at once (elicit and list roots): they make one round.
        yield* Effect.sleep(Duration.millis(inputGatherMillis)).pipe(Effect.ensuring(stopWaiting(call)))
        const more = yield* Queue.takeAll(call.events)
        const inputs = [first]
        for (const next of more) {
          if (next._tag === "Input") inputs.push(next.request)
          else yield* Queue.offer(call.events, next)
        }
        const asks = inputs.map((request, index) => ({ key: `input-${index + 1}`, request }))
        const requestState = randomUUID()
        parked.set(requestState, {
          call,
          asks: asks.map(({ key, request }) => ({ key, childRequestId: request.id })),
        })
        yield* FiberMap.run(parkedDeadlines, requestState, expire(requestState, call))
        return ok(clientId, {
          resultType: "input_required",
          inputRequests: Object.fromEntries(
            asks.map(({ key, request }) => {
              const { _meta: _childMeta, ...childParams } = request.params ?? {}
              return [key, { method: request.method, params: childParams }]
            }),
          ),
          requestState,
        })
      })

    /** Wait for the call's next event: a question for the client (pause it), or the answer. */
    const nextStep = (call: InteractiveCall, clientId: JsonRpcId): Effect.Effect<JsonRpcResponse> =>
      Effect.gen(function* () {
        startWaiting(call)
        const event = yield* Queue.take(call.events).pipe(
          Effect.onInterrupt(() => Fiber.interrupt(call.fiber).pipe(Effect.zipRight(stopWaiting(call)))),
        )
        if (event._tag === "Done") {
          yield* stopWaiting(call)
          return { ...event.response, id: clientId }
        }
        return yield* park(call, event.request, clientId)
      })

    /** The client's answers to a round: each goes to the child's question, then the call goes on. */
    const resume = (request: JsonRpcRequest, requestState: string | undefined) =>
      Effect.gen(function* () {
        const entry = requestState === undefined ? undefined : parked.get(requestState)
        if (entry === undefined || requestState === undefined) {
          return errorResponse(request.id, {
            code: ErrorCode.InvalidParams,
            message: "Invalid params: unknown or expired requestState",
          })
        }
        parked.delete(requestState)
        yield* FiberMap.remove(parkedDeadlines, requestState)
        const responses = isObject(request.params?.inputResponses) ? request.params.inputResponses : {}
        yield* Effect.forEach(
          entry.asks,
          ({ key, childRequestId }) => {
            const answer = responses[key]
            return answerChild(
              entry.call,
              childRequestId,
              answer === undefined
                ? errorResponse(childRequestId, {
                    code: ErrorCode.InternalError,
                    message: "the client gave no answer",
                  })
                : { jsonrpc: "2.0", id: childRequestId, result: answer },
            )
          },
          { discard: true },
        )
        return yield* nextStep(entry.call, request.id)
      })

    const call = (server: ChildServer, ready: ReadyChild, request: JsonRpcRequest) =>
      Effect.gen(function* () {
        const requestState = stringParam(request.params, "requestState")
        if (requestState !== undefined || request.params?.inputResponses !== undefined) {
          return yield* resume(request, requestState)
        }
        const events = yield* Queue.unbounded<CallEvent>()
        const fiber = yield* ready.connection.request(request).pipe(
          Effect.catchTag("UpstreamError", (error) => Effect.succeed(fromUpstreamError(request.id, error))),
          Effect.flatMap((response) => Queue.offer(events, { _tag: "Done", response })),
          Effect.asVoid,
          Effect.forkIn(sessionScope),
        )
        return yield* nextStep({ server, connection: ready.connection, events, fiber }, request.id)
      })

    return { call, ask } satisfies InputRounds
  })
