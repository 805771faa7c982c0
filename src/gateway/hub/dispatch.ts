/**
 * Dispatch of a client request, once the lifecycle has let it through: merged lists to the lists,
 * tools and prompts by their merged name, resources by URI, tasks to the child that created them,
 * and a method the gateway does not know to the session's only server, if it has only one.
 */
import { Effect, Option } from "effect"
import { ErrorCode, errorResponse, isObject, type JsonRpcRequest } from "../../shared/jsonRpc.js"
import type { ChangeFeed } from "./changeFeed.js"
import type { SessionChildren } from "./children.js"
import type { Forward } from "./forward.js"
import type { MergedLists } from "./lists.js"
import { isMergedListMethod } from "./mcp.js"
import { exposedName } from "./naming.js"
import type { NamedKind, RoutingTable } from "./routing.js"
import { invalidParams, ok, type Routed, stringParam, type Target, taskIdOf } from "./types.js"

/** MCP's code for a resource URI that no server has. */
const resourceNotFound = -32002

export interface Dispatch {
  readonly route: (request: JsonRpcRequest) => Effect.Effect<Routed>
  /** The server that owns a URI, listing the children's resources first if it is not known yet. */
  readonly lookupUri: (uri: string) => Effect.Effect<Option.Option<string>>
}

export const makeDispatch = (
  children: SessionChildren,
  routing: RoutingTable,
  lists: MergedLists,
  forward: Forward,
  feed: ChangeFeed,
): Dispatch => {
  const lookupName = (kind: NamedKind, exposed: string) =>
    Effect.gen(function* () {
      const known = routing.named(kind, exposed)
      if (known !== undefined) return Option.some(known)
      yield* children.settleStarting
      yield* lists.refresh(kind === "tool" ? "tools/list" : "prompts/list")
      return Option.fromNullable(routing.named(kind, exposed))
    })

  const lookupUri = (uri: string) =>
    Effect.gen(function* () {
      const known = routing.ownerOfUri(uri)
      if (known !== undefined) return Option.some(known)
      yield* children.settleStarting
      yield* lists.refresh("resources/list")
      yield* lists.refresh("resources/templates/list")
      const found = routing.ownerOfUri(uri)
      if (found !== undefined) return Option.some(found)
      // One server with resources may serve URIs it does not list: let it answer for itself.
      const resourceServers = children.all.filter(
        (child) => child.state()._tag !== "Down" && children.hasCapability(child, "resources"),
      )
      const only = resourceServers.length === 1 ? resourceServers[0] : undefined
      return Option.fromNullable(only?.server.name)
    })

  /**
   * A name under the prefix of a server that is not up: say so rather than "unknown". The first
   * such server decides; one without a prefix could own any name, so it proves nothing.
   */
  const downOwnerOf = (exposed: string) => {
    const down = children.all.find(
      (child) =>
        children.ready(child.server.name) === undefined &&
        exposed.startsWith(exposedName(child.server.name, child.server.prefix, "")),
    )
    return down !== undefined && exposedName(down.server.name, down.server.prefix, "") !== ""
      ? down
      : undefined
  }

  const routeNamed = (request: JsonRpcRequest, kind: NamedKind) =>
    Effect.gen(function* () {
      const exposed = stringParam(request.params, "name")
      if (exposed === undefined) return invalidParams(request.id, `Invalid params: ${kind} name is missing`)
      const target = yield* lookupName(kind, exposed)
      if (Option.isNone(target)) {
        const down = downOwnerOf(exposed)
        if (down === undefined) return invalidParams(request.id, `Unknown ${kind}: ${exposed}`)
        const server = down.server.name
        return { response: children.notRunning(request.id, server), server, target: exposed } satisfies Routed
      }
      const { server, name } = target.value
      const response = yield* forward(server, { ...request, params: { ...request.params, name } })
      routing.noteTask(taskIdOf(response), server)
      return { response, server, target: exposed } satisfies Routed
    })

  const routeUri = (request: JsonRpcRequest, uri: string | undefined) =>
    Effect.gen(function* () {
      if (uri === undefined) return invalidParams(request.id, "Invalid params: uri is missing")
      const owner = yield* lookupUri(uri)
      if (Option.isNone(owner)) {
        const response = errorResponse(request.id, {
          code: resourceNotFound,
          message: `Resource not found: ${uri}`,
        })
        return { response, target: uri } satisfies Routed
      }
      return {
        response: yield* forward(owner.value, request),
        server: owner.value,
        target: uri,
      } satisfies Routed
    })

  const subscription = (request: JsonRpcRequest, on: boolean) =>
    Effect.gen(function* () {
      const uri = stringParam(request.params, "uri")
      const routed = yield* routeUri(request, uri)
      if (routed.response.error === undefined && uri !== undefined) feed.subscribed(uri, on)
      return routed
    })

  const complete = (request: JsonRpcRequest) =>
    Effect.gen(function* () {
      const params = request.params
      const ref = isObject(params?.ref) ? params.ref : {}
      if (ref.type === "ref/resource" && typeof ref.uri === "string") return yield* routeUri(request, ref.uri)
      if (ref.type !== "ref/prompt" || typeof ref.name !== "string")
        return invalidParams(request.id, "Invalid params: ref must name a prompt or a resource")
      const target: Option.Option<Target> = yield* lookupName("prompt", ref.name)
      if (Option.isNone(target)) return invalidParams(request.id, `Unknown prompt: ${ref.name}`)
      const { server, name } = target.value
      const response = yield* forward(server, { ...request, params: { ...params, ref: { ...ref, name } } })
      return { response, server, target: ref.name } satisfies Routed
    })

  const routeTask = (request: JsonRpcRequest) =>
    Effect.gen(function* () {
      const taskId = stringParam(request.params, "taskId")
      const owner = taskId === undefined ? undefined : routing.taskOwner(taskId)
      if (owner === undefined) return invalidParams(request.id, `Unknown task: ${taskId ?? "(none)"}`)
      return { response: yield* forward(owner, request), server: owner, target: taskId } satisfies Routed
    })

  /** A method the gateway does not know: with one server it is that server's to answer. */
  const routeUnknown = (request: JsonRpcRequest) =>
    Effect.gen(function* () {
      const only = children.all.length === 1 ? children.all[0] : undefined
      if (only === undefined) {
        const message = `Method not found: ${request.method}`
        return {
          response: errorResponse(request.id, { code: ErrorCode.MethodNotFound, message }),
        } satisfies Routed
      }
      const server = only.server.name
      return { response: yield* forward(server, request), server } satisfies Routed
    })

  const route = (request: JsonRpcRequest): Effect.Effect<Routed> => {
    const method = request.method
    if (method === "ping") return Effect.succeed({ response: ok(request.id, {}) })
    if (isMergedListMethod(method)) return lists.page(request, method)
    switch (method) {
      case "tools/call":
        return routeNamed(request, "tool")
      case "prompts/get":
        return routeNamed(request, "prompt")
      case "resources/read":
        return routeUri(request, stringParam(request.params, "uri"))
      case "resources/subscribe":
      case "resources/unsubscribe":
        return subscription(request, method === "resources/subscribe")
      case "completion/complete":
        return complete(request)
      case "logging/setLevel":
        return children.setLevel(request).pipe(Effect.as({ response: ok(request.id, {}) }))
      case "tasks/get":
      case "tasks/result":
      case "tasks/cancel":
        return routeTask(request)
      default:
        return routeUnknown(request)
    }
  }

  return { route, lookupUri }
}
