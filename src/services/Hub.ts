/**
 * The merged MCP server a session talks to: every selected child behind one initialize, one set of
 * lists (renamed tools and prompts, resources under their own URIs, one cursor across children), and
 * every request routed to the child that owns it. Messages flow both ways: notifications, progress,
 * logging (tagged with the server's name) and the children's own requests (sampling, elicitation,
 * roots) to the client and their answers back.
 *
 * Children are per session (the original tool's model): started when the session opens, supervised
 * and restarted while it lasts, stopped with it.
 */
import { Context, Data, Deferred, Duration, Effect, Layer, Option, Queue, type Scope } from "effect"
import { decodeCursor, encodeCursor } from "../domain/cursor.js"
import type { UpstreamError } from "../domain/errors.js"
import {
  ErrorCode,
  errorResponse,
  isRequest,
  type JsonObject,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../domain/jsonRpc.js"
import {
  isMergedListMethod,
  isObject,
  listChangedMethod,
  type MergedListMethod,
  mergeCapabilities,
  mergedLists,
  mergeInstructions,
  negotiateVersion,
} from "../domain/mcp.js"
import { exposedName } from "../domain/naming.js"
import { templateMatcher } from "../domain/uriTemplate.js"
import { version } from "../version.js"
import { Catalog } from "./Catalog.js"
import {
  type ChildState,
  type ClientHandshake,
  type ReadyChild,
  type SupervisedChild,
  superviseChild,
} from "./ChildSupervisor.js"
import { type ChildServer, GatewayConfig } from "./GatewayConfig.js"
import { type ChildMessage, Upstream, type UpstreamConnection } from "./Upstream.js"

/** Who is on the other end of a session, for the log. */
export interface ClientIdentity {
  readonly fingerprint: string
  readonly username: string
  readonly address: string
}

export interface HubSession {
  /** Answer one client request; failures become JSON-RPC error responses, never defects. */
  readonly request: (request: JsonRpcRequest) => Effect.Effect<JsonRpcResponse>
  readonly notify: (notification: JsonRpcNotification) => Effect.Effect<void>
  /** The client's answer to a request a server made. */
  readonly respond: (response: JsonRpcResponse) => Effect.Effect<void>
  /** Requests and notifications from the servers to the client. */
  readonly outgoing: Queue.Dequeue<JsonRpcMessage>
}

/** The session asked for servers that cannot be served; `message` says why, for the client's stderr. */
export class SelectionError extends Data.TaggedError("SelectionError")<{ readonly message: string }> {}

export class Hub extends Context.Tag("mcp-ssh/Hub")<
  Hub,
  {
    /** Open a session over the named servers (empty: all of them). Closing the scope ends it. */
    readonly open: (
      selection: ReadonlyArray<string>,
      client: ClientIdentity,
    ) => Effect.Effect<HubSession, SelectionError, Scope.Scope>
  }
>() {}

/** `ssh host NAME[,NAME...]`: the servers an exec command selects (empty: all). */
export const parseSelection = (command: string): ReadonlyArray<string> =>
  command
    .split(/[\s,]+/)
    .map((name) => name.trim())
    .filter((name) => name.length > 0)

/** What a request was routed to, for the audit line. */
interface Routed {
  readonly response: JsonRpcResponse
  readonly server?: string | undefined
  readonly target?: string | undefined
}

interface Target {
  readonly server: string
  readonly name: string
}

const ok = (id: JsonRpcId, result: JsonObject): JsonRpcResponse => ({ jsonrpc: "2.0", id, result })

const invalidParams = (id: JsonRpcId, message: string): Routed => ({
  response: errorResponse(id, { code: ErrorCode.InvalidParams, message }),
})

/** MCP's code for a resource URI that no server has. */
const resourceNotFound = -32002

const fromUpstreamError = (id: JsonRpcId, error: UpstreamError): JsonRpcResponse =>
  errorResponse(id, { code: error.code, message: error.message })

const stringParam = (params: JsonObject | undefined, key: string): string | undefined => {
  const value = params?.[key]
  return typeof value === "string" ? value : undefined
}

export const HubLive = Layer.effect(
  Hub,
  Effect.gen(function* () {
    const config = yield* GatewayConfig
    const upstream = yield* Upstream
    const catalog = yield* Catalog
    const { settings } = config
    const supervisorOptions = {
      maxLineBytes: settings.maxLineBytes,
      stopTimeout: Duration.seconds(settings.childStopTimeout),
      startupTimeout: Duration.seconds(settings.startupTimeout),
    }

    const open = (selection: ReadonlyArray<string>, client: ClientIdentity) =>
      Effect.gen(function* () {
        const names = config.servers.map((server) => server.name)
        const unknown = selection.filter((name) => !names.includes(name))
        if (unknown.length > 0) {
          return yield* new SelectionError({
            message: `unknown server(s): ${unknown.join(", ")}; available: ${names.join(", ")}`,
          })
        }
        const servers =
          selection.length === 0 ? config.servers : config.servers.filter((s) => selection.includes(s.name))
        return yield* openSession(servers, client)
      })

    const openSession = (servers: ReadonlyArray<ChildServer>, client: ClientIdentity) =>
      Effect.gen(function* () {
        const outgoing = yield* Queue.bounded<JsonRpcMessage>(1024)
        const handshake = yield* Deferred.make<ClientHandshake>()
        let initialized = false
        /** Set once the client has the merged picture; later changes are announced with list_changed. */
        let announced = false
        let logLevel: string | undefined
        const subscriptions = new Set<string>()
        const names = { tool: new Map<string, Target>(), prompt: new Map<string, Target>() }
        const resourceOwners = new Map<string, string>()
        const templateOwners = new Map<
          string,
          Array<{ readonly template: string; readonly matcher: RegExp }>
        >()
        const taskOwners = new Map<string, string>()
        /** Requests of children forwarded to the client, by the id the gateway gave them. */
        const serverRequests = new Map<
          number,
          { readonly connection: UpstreamConnection; readonly id: JsonRpcId }
        >()
        /** Progress tokens of those requests: the client's progress goes back to the child that asked. */
        const clientProgress = new Map<string, UpstreamConnection>()
        let nextServerRequestId = 1

        const toClient = (message: JsonRpcMessage) => Queue.offer(outgoing, message).pipe(Effect.asVoid)

        const log = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          effect.pipe(Effect.annotateLogs({ client: client.fingerprint }))

        const onStateChange = (child: SupervisedChild, previous: ChildState, next: ChildState) => {
          const wasReady = previous._tag === "Ready"
          const isReady = next._tag === "Ready"
          if (wasReady === isReady) return Effect.void
          const capabilities = isReady
            ? next.capabilities
            : previous._tag === "Ready"
              ? previous.capabilities
              : {}
          // Once the client has the merged lists, a child coming or going changes them.
          const announce = announced
            ? Effect.forEach(
                Object.entries(listChangedMethod).filter(
                  ([capability]) => capabilities[capability] !== undefined,
                ),
                ([, method]) => toClient({ jsonrpc: "2.0", method }),
                { discard: true },
              )
            : Effect.void
          return announce.pipe(
            Effect.zipRight(
              log(Effect.logInfo(`server '${child.server.name}' ${isReady ? "is up" : "is down"}`)),
            ),
          )
        }

        const onMessage = (child: SupervisedChild, connection: UpstreamConnection, message: ChildMessage) =>
          Effect.suspend(() => {
            if (isRequest(message)) {
              if (message.method === "ping") {
                return connection.send({ jsonrpc: "2.0", id: message.id, result: {} }).pipe(Effect.ignore)
              }
              const id = nextServerRequestId++
              serverRequests.set(id, { connection, id: message.id })
              const meta = message.params?._meta
              if (isObject(meta) && meta.progressToken !== undefined) {
                clientProgress.set(JSON.stringify(meta.progressToken), connection)
              }
              return toClient({ ...message, id })
            }
            const params = message.params ?? {}
            switch (message.method) {
              case "notifications/message": {
                const logger =
                  typeof params.logger === "string"
                    ? `${child.server.name}/${params.logger}`
                    : child.server.name
                return toClient({ ...message, params: { ...params, logger } })
              }
              case "notifications/resources/updated":
                return typeof params.uri === "string" && subscriptions.has(params.uri)
                  ? toClient(message)
                  : Effect.void
              case "notifications/cancelled": {
                // The child gave up on a request it made of the client: tell the client by its id.
                const entry = [...serverRequests.entries()].find(
                  ([, value]) => value.connection === connection && value.id === params.requestId,
                )
                if (entry === undefined) return Effect.void
                serverRequests.delete(entry[0])
                return toClient({ ...message, params: { ...params, requestId: entry[0] } })
              }
              default:
                return toClient(message)
            }
          })

        const children = yield* Effect.forEach(servers, (server) =>
          superviseChild(upstream, server, supervisorOptions, {
            handshake: Deferred.await(handshake),
            logLevel: () => logLevel,
            onMessage,
            onStateChange,
          }),
        )
        const byName = new Map(children.map((child) => [child.server.name, child]))

        const readyOf = (child: SupervisedChild | undefined): ReadyChild | undefined => {
          const state = child?.state()
          return state?._tag === "Ready" ? state : undefined
        }

        const notRunning = (id: JsonRpcId, server: string): JsonRpcResponse => {
          const state = byName.get(server)?.state()
          const why =
            state?._tag === "Down"
              ? `${state.reason}; restarting in ${Duration.format(Duration.millis(state.retryInMillis))}`
              : "it is still starting"
          return errorResponse(id, {
            code: ErrorCode.ServerUnavailable,
            message: `server '${server}' is not running: ${why}`,
          })
        }

        /** Send a request to one child and give back its answer, with the client's id. */
        const forward = (server: string, request: JsonRpcRequest): Effect.Effect<JsonRpcResponse> => {
          const ready = readyOf(byName.get(server))
          if (ready === undefined) return Effect.succeed(notRunning(request.id, server))
          return ready.connection
            .request(request)
            .pipe(
              Effect.catchTag("UpstreamError", (error) =>
                Effect.succeed(fromUpstreamError(request.id, error)),
              ),
            )
        }

        const hasCapability = (child: SupervisedChild, capability: string) =>
          readyOf(child)?.capabilities[capability] !== undefined

        /** Rename and index one page of tools or prompts of a child; entries whose name is taken are left out. */
        const indexNamed = (kind: "tool" | "prompt", child: SupervisedChild, items: ReadonlyArray<unknown>) =>
          Effect.gen(function* () {
            const out: Array<JsonObject> = []
            for (const item of items) {
              if (!isObject(item) || typeof item.name !== "string") continue
              const exposed = exposedName(child.server.name, child.server.prefix, item.name)
              const owner = names[kind].get(exposed)
              if (owner !== undefined && (owner.server !== child.server.name || owner.name !== item.name)) {
                yield* log(
                  Effect.logWarning(
                    `${kind} '${item.name}' of server '${child.server.name}' is hidden: '${exposed}' is taken by server '${owner.server}'`,
                  ),
                )
                continue
              }
              names[kind].set(exposed, { server: child.server.name, name: item.name })
              out.push({ ...item, name: exposed })
            }
            return out
          })

        const indexResources = (
          child: SupervisedChild,
          method: MergedListMethod,
          items: ReadonlyArray<unknown>,
        ) => {
          for (const item of items) {
            if (!isObject(item)) continue
            if (
              method === "resources/list" &&
              typeof item.uri === "string" &&
              !resourceOwners.has(item.uri)
            ) {
              resourceOwners.set(item.uri, child.server.name)
            }
            if (method === "resources/templates/list" && typeof item.uriTemplate === "string") {
              const owned = templateOwners.get(child.server.name) ?? []
              if (!owned.some((entry) => entry.template === item.uriTemplate)) {
                owned.push({ template: item.uriTemplate, matcher: templateMatcher(item.uriTemplate) })
                templateOwners.set(child.server.name, owned)
              }
            }
          }
          return items
        }

        const transformPage = (
          method: MergedListMethod,
          child: SupervisedChild,
          items: ReadonlyArray<unknown>,
        ): Effect.Effect<ReadonlyArray<unknown>> => {
          const named = mergedLists[method].named
          return named === undefined
            ? Effect.succeed(indexResources(child, method, items))
            : indexNamed(named, child, items)
        }

        /** The children that have this list, in config order. */
        const listingChildren = (method: MergedListMethod) =>
          children.filter((child) => hasCapability(child, mergedLists[method].capability))

        /**
         * One page of a merged list: a page of one child, resumed from the cursor; children with an
         * empty page are passed over so that a page is empty only at the end.
         */
        const mergedPage = (request: JsonRpcRequest, method: MergedListMethod): Effect.Effect<Routed> =>
          Effect.gen(function* () {
            const spec = mergedLists[method]
            const cursorText = stringParam(request.params, "cursor")
            const start = cursorText === undefined ? undefined : decodeCursor(cursorText)
            if (cursorText !== undefined && start === undefined) {
              return invalidParams(request.id, `Invalid params: unknown cursor for ${method}`)
            }
            const order = children.map((child) => child.server.name)
            let position = start ?? { server: order[0] ?? "", cursor: undefined }
            let index = order.indexOf(position.server)
            if (index === -1) return invalidParams(request.id, `Invalid params: unknown cursor for ${method}`)
            while (index < order.length) {
              const child = children[index]
              const next = () => {
                const following = children.slice(index + 1).find((c) => hasCapability(c, spec.capability))
                return following === undefined
                  ? undefined
                  : { server: following.server.name, cursor: undefined }
              }
              if (child === undefined || !hasCapability(child, spec.capability)) {
                index++
                position = { server: order[index] ?? "", cursor: undefined }
                continue
              }
              const { cursor: _dropped, ...otherParams } = request.params ?? {}
              const params =
                position.cursor === undefined ? otherParams : { ...otherParams, cursor: position.cursor }
              const response = yield* forward(child.server.name, { ...request, params })
              const result = response.result
              if (!isObject(result)) {
                // A child that cannot list now must not break the whole list: go on without it.
                yield* log(
                  Effect.logWarning(
                    `server '${child.server.name}' failed ${method}: ${response.error?.message ?? "no result"}`,
                  ),
                )
                const following = next()
                if (following === undefined) {
                  return { response: ok(request.id, { [spec.items]: [] }) }
                }
                index = order.indexOf(following.server)
                position = following
                continue
              }
              const items = Array.isArray(result[spec.items])
                ? (result[spec.items] as ReadonlyArray<unknown>)
                : []
              const transformed = yield* transformPage(method, child, items)
              const childNext =
                typeof result.nextCursor === "string" && result.nextCursor !== ""
                  ? result.nextCursor
                  : undefined
              const following =
                childNext === undefined ? next() : { server: child.server.name, cursor: childNext }
              if (transformed.length > 0 || following === undefined) {
                const { nextCursor: _childCursor, ...rest } = result
                return {
                  response: ok(request.id, {
                    ...rest,
                    [spec.items]: transformed,
                    ...(following === undefined ? {} : { nextCursor: encodeCursor(following) }),
                  }),
                }
              }
              index = order.indexOf(following.server)
              position = following
            }
            return { response: ok(request.id, { [spec.items]: [] }) }
          })

        /** List everything of a kind from every child, so a name or URI not seen yet can be routed. */
        const refresh = (method: MergedListMethod) =>
          Effect.forEach(
            listingChildren(method),
            (child) => {
              const ready = readyOf(child)
              if (ready === undefined) return Effect.void
              return Effect.gen(function* () {
                let cursor: string | undefined
                for (let page = 0; page < 1000; page++) {
                  const response = yield* ready.connection.request({
                    jsonrpc: "2.0",
                    id: "refresh",
                    method,
                    ...(cursor === undefined ? {} : { params: { cursor } }),
                  })
                  const result = response.result
                  if (!isObject(result)) return
                  const items = result[mergedLists[method].items]
                  yield* transformPage(method, child, Array.isArray(items) ? items : [])
                  cursor =
                    typeof result.nextCursor === "string" && result.nextCursor !== ""
                      ? result.nextCursor
                      : undefined
                  if (cursor === undefined) return
                }
              }).pipe(Effect.ignore)
            },
            { discard: true, concurrency: "unbounded" },
          )

        const lookupName = (kind: "tool" | "prompt", exposed: string) =>
          Effect.gen(function* () {
            const known = names[kind].get(exposed)
            if (known !== undefined) return Option.some(known)
            yield* refresh(kind === "tool" ? "tools/list" : "prompts/list")
            return Option.fromNullable(names[kind].get(exposed))
          })

        const ownerOfUri = (uri: string): string | undefined => {
          const listed = resourceOwners.get(uri)
          if (listed !== undefined) return listed
          for (const child of children) {
            const templates = templateOwners.get(child.server.name) ?? []
            if (templates.some((entry) => entry.template === uri || entry.matcher.test(uri)))
              return child.server.name
          }
          return undefined
        }

        const lookupUri = (uri: string) =>
          Effect.gen(function* () {
            const known = ownerOfUri(uri)
            if (known !== undefined) return Option.some(known)
            yield* refresh("resources/list")
            yield* refresh("resources/templates/list")
            const found = ownerOfUri(uri)
            if (found !== undefined) return Option.some(found)
            // One server with resources may serve URIs it does not list: let it answer for itself.
            const resourceServers = children.filter(
              (child) => child.state()._tag !== "Down" && hasCapability(child, "resources"),
            )
            const only = resourceServers.length === 1 ? resourceServers[0] : undefined
            return Option.fromNullable(only?.server.name)
          })

        const routeNamed = (request: JsonRpcRequest, kind: "tool" | "prompt") =>
          Effect.gen(function* () {
            const exposed = stringParam(request.params, "name")
            if (exposed === undefined)
              return invalidParams(request.id, `Invalid params: ${kind} name is missing`)
            const target = yield* lookupName(kind, exposed)
            if (Option.isNone(target)) {
              // A name under the prefix of a server that is not up: say so rather than "unknown".
              const down = children.find(
                (child) =>
                  readyOf(child) === undefined &&
                  exposed.startsWith(exposedName(child.server.name, child.server.prefix, "")),
              )
              if (down !== undefined && exposedName(down.server.name, down.server.prefix, "") !== "") {
                return {
                  response: notRunning(request.id, down.server.name),
                  server: down.server.name,
                  target: exposed,
                }
              }
              return invalidParams(request.id, `Unknown ${kind}: ${exposed}`)
            }
            const response = yield* forward(target.value.server, {
              ...request,
              params: { ...request.params, name: target.value.name },
            })
            const task =
              isObject(response.result) && isObject(response.result.task) ? response.result.task : undefined
            if (typeof task?.taskId === "string") taskOwners.set(task.taskId, target.value.server)
            return { response, server: target.value.server, target: exposed } satisfies Routed
          })

        const routeUri = (request: JsonRpcRequest, uri: string | undefined) =>
          Effect.gen(function* () {
            if (uri === undefined) return invalidParams(request.id, "Invalid params: uri is missing")
            const owner = yield* lookupUri(uri)
            if (Option.isNone(owner)) {
              return {
                response: errorResponse(request.id, {
                  code: resourceNotFound,
                  message: `Resource not found: ${uri}`,
                }),
                target: uri,
              } satisfies Routed
            }
            return {
              response: yield* forward(owner.value, request),
              server: owner.value,
              target: uri,
            } satisfies Routed
          })

        const initialize = (request: JsonRpcRequest) =>
          Effect.gen(function* () {
            if (initialized) {
              return {
                response: errorResponse(request.id, {
                  code: ErrorCode.InvalidRequest,
                  message: "Invalid Request: this session is already initialized",
                }),
              } satisfies Routed
            }
            initialized = true
            const params = request.params ?? {}
            const protocolVersion = negotiateVersion(params.protocolVersion)
            yield* Deferred.succeed(handshake, {
              protocolVersion,
              capabilities: isObject(params.capabilities) ? params.capabilities : {},
              clientInfo: isObject(params.clientInfo) ? params.clientInfo : { name: "unknown", version: "0" },
            })
            // Fast children make it into the answer; slower ones join later with list_changed.
            yield* Effect.forEach(children, (child) => child.settled, {
              concurrency: "unbounded",
              discard: true,
            }).pipe(Effect.timeout(Duration.seconds(settings.startupWait)), Effect.ignore)
            const known = children.map((child) => {
              const ready = readyOf(child)
              const profile = Option.getOrUndefined(catalog.profile(child.server.name))
              return {
                server: child.server.name,
                capabilities: ready?.capabilities ?? profile?.capabilities ?? {},
                instructions: ready?.instructions ?? profile?.instructions,
              }
            })
            const instructions = mergeInstructions(known)
            announced = true
            return {
              response: ok(request.id, {
                protocolVersion,
                capabilities: mergeCapabilities(known.map((entry) => entry.capabilities)),
                serverInfo: { name: "mcp-ssh", title: "mcp-ssh gateway", version },
                ...(instructions === undefined ? {} : { instructions }),
              }),
            } satisfies Routed
          })

        /** Requests other than initialize make children start with what the client did not say. */
        const ensureHandshake = Deferred.succeed(handshake, {
          protocolVersion: negotiateVersion(undefined),
          capabilities: {},
          clientInfo: { name: "unknown", version: "0" },
        }).pipe(
          Effect.zipRight(
            Effect.forEach(children, (child) => child.settled, {
              concurrency: "unbounded",
              discard: true,
            }).pipe(Effect.timeout(Duration.seconds(settings.startupWait)), Effect.ignore),
          ),
          Effect.asVoid,
        )

        const route = (request: JsonRpcRequest): Effect.Effect<Routed> =>
          Effect.gen(function* () {
            const method = request.method
            if (method === "initialize") return yield* initialize(request)
            if (!initialized && !(yield* Deferred.isDone(handshake))) yield* ensureHandshake
            if (method === "ping") return { response: ok(request.id, {}) }
            if (isMergedListMethod(method)) return yield* mergedPage(request, method)
            const params = request.params
            switch (method) {
              case "tools/call":
                return yield* routeNamed(request, "tool")
              case "prompts/get":
                return yield* routeNamed(request, "prompt")
              case "resources/read":
                return yield* routeUri(request, stringParam(params, "uri"))
              case "resources/subscribe":
              case "resources/unsubscribe": {
                const uri = stringParam(params, "uri")
                const routed = yield* routeUri(request, uri)
                if (routed.response.error === undefined && uri !== undefined) {
                  if (method === "resources/subscribe") subscriptions.add(uri)
                  else subscriptions.delete(uri)
                }
                return routed
              }
              case "completion/complete": {
                const ref = isObject(params?.ref) ? params.ref : {}
                if (ref.type === "ref/prompt" && typeof ref.name === "string") {
                  const target = yield* lookupName("prompt", ref.name)
                  if (Option.isNone(target)) return invalidParams(request.id, `Unknown prompt: ${ref.name}`)
                  const response = yield* forward(target.value.server, {
                    ...request,
                    params: { ...params, ref: { ...ref, name: target.value.name } },
                  })
                  return { response, server: target.value.server, target: ref.name } satisfies Routed
                }
                if (ref.type === "ref/resource" && typeof ref.uri === "string")
                  return yield* routeUri(request, ref.uri)
                return invalidParams(request.id, "Invalid params: ref must name a prompt or a resource")
              }
              case "logging/setLevel": {
                logLevel = stringParam(params, "level")
                yield* Effect.forEach(
                  children.filter((child) => hasCapability(child, "logging")),
                  (child) => forward(child.server.name, request),
                  { concurrency: "unbounded", discard: true },
                )
                return { response: ok(request.id, {}) }
              }
              case "tasks/get":
              case "tasks/result":
              case "tasks/cancel": {
                const taskId = stringParam(params, "taskId")
                const owner = taskId === undefined ? undefined : taskOwners.get(taskId)
                if (owner === undefined)
                  return invalidParams(request.id, `Unknown task: ${taskId ?? "(none)"}`)
                return {
                  response: yield* forward(owner, request),
                  server: owner,
                  target: taskId,
                } satisfies Routed
              }
              default: {
                // A method the gateway does not know: with one server it is that server's to answer.
                const only = children.length === 1 ? children[0] : undefined
                if (only !== undefined) {
                  return {
                    response: yield* forward(only.server.name, request),
                    server: only.server.name,
                  } satisfies Routed
                }
                return {
                  response: errorResponse(request.id, {
                    code: ErrorCode.MethodNotFound,
                    message: `Method not found: ${method}`,
                  }),
                }
              }
            }
          })

        const request = (message: JsonRpcRequest): Effect.Effect<JsonRpcResponse> =>
          Effect.gen(function* () {
            const started = Date.now()
            const routed = yield* route(message).pipe(
              Effect.onInterrupt(() =>
                log(Effect.logInfo("cancelled")).pipe(
                  Effect.annotateLogs({ audit: true, method: message.method }),
                ),
              ),
            )
            const outcome = routed.response.error === undefined ? "ok" : `error ${routed.response.error.code}`
            yield* Effect.logInfo("call").pipe(
              Effect.annotateLogs({
                audit: true,
                client: client.fingerprint,
                server: routed.server ?? "gateway",
                method: message.method,
                ...(routed.target === undefined ? {} : { target: routed.target }),
                ms: Date.now() - started,
                outcome,
              }),
            )
            return routed.response
          })

        const notify = (notification: JsonRpcNotification): Effect.Effect<void> =>
          Effect.suspend(() => {
            switch (notification.method) {
              case "notifications/initialized":
                return Effect.void
              case "notifications/progress": {
                const token = notification.params?.progressToken
                const connection = clientProgress.get(JSON.stringify(token))
                return connection === undefined
                  ? Effect.void
                  : connection.send(notification).pipe(Effect.ignore)
              }
              default:
                return Effect.forEach(
                  children,
                  (child) => {
                    const ready = readyOf(child)
                    return ready === undefined
                      ? Effect.void
                      : ready.connection.send(notification).pipe(Effect.ignore)
                  },
                  { discard: true },
                )
            }
          })

        const respond = (response: JsonRpcResponse) =>
          Effect.suspend(() => {
            const entry = typeof response.id === "number" ? serverRequests.get(response.id) : undefined
            if (entry === undefined || typeof response.id !== "number") {
              return log(
                Effect.logWarning(`ignored a response to unknown request id ${JSON.stringify(response.id)}`),
              )
            }
            serverRequests.delete(response.id)
            return entry.connection.send({ ...response, id: entry.id }).pipe(Effect.ignore)
          })

        return { request, notify, respond, outgoing } satisfies HubSession
      })

    return { open }
  }),
)
