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
import { randomUUID } from "node:crypto"
import {
  Context,
  Data,
  Deferred,
  Duration,
  Effect,
  Fiber,
  FiberMap,
  Layer,
  Option,
  Queue,
  type Scope,
} from "effect"
import {
  ErrorCode,
  errorResponse,
  isObject,
  isRequest,
  type JsonObject,
  type JsonRpcId,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../../shared/jsonRpc.js"
import { version } from "../../shared/version.js"
import { Catalog, listAll } from "../children/Catalog.js"
import {
  type ChildState,
  type ClientHandshake,
  type ReadyChild,
  type SupervisedChild,
  superviseChild,
} from "../children/ChildSupervisor.js"
import { type ChildMessage, Upstream, type UpstreamConnection } from "../children/Upstream.js"
import { type ChildServer, GatewayConfig } from "../config/GatewayConfig.js"
import { UpstreamError } from "../errors.js"
import { Audit } from "../session/Audit.js"
import { decodeCursor, encodeCursor } from "./cursor.js"
import {
  isMergedListMethod,
  latestHandshakeVersion,
  listChangedMethod,
  type MergedListMethod,
  mergeCapabilities,
  mergedLists,
  mergeInstructions,
  negotiateVersion,
} from "./mcp.js"
import {
  discoverResult,
  filterWants,
  honouredFilter,
  interactiveMethods,
  type ListenFilter,
  legacyOnlyMethods,
  metaKey,
  modernVersion,
  modernVersions,
  readEnvelope,
  readListenFilter,
  toModernResponse,
  unsupportedVersion,
  withoutEnvelope,
} from "./modern.js"
import { exposedName } from "./naming.js"
import { templateMatcher } from "./uriTemplate.js"

/** Who is on the other end of a session, for the log. */
export interface ClientIdentity {
  readonly fingerprint: string
  readonly username: string
  readonly address: string
}

export interface HubSession {
  /** Answer one client request; failures become JSON-RPC error responses, never defects. */
  readonly request: (request: JsonRpcRequest) => Effect.Effect<JsonRpcResponse>
  /**
   * Answer a request by callback when it can be routed at once (see the Hub); undefined when it
   * cannot, and `request` must answer it. The returned function cancels it.
   */
  readonly fastRequest: (
    request: JsonRpcRequest,
    respond: (response: JsonRpcResponse) => void,
  ) => (() => void) | undefined
  readonly notify: (notification: JsonRpcNotification) => Effect.Effect<void>
  /** The client's answer to a request a server made. */
  readonly respond: (response: JsonRpcResponse) => Effect.Effect<void>
  /** The client will send nothing more: long-lived requests (subscriptions/listen) end now. */
  readonly endOfInput: Effect.Effect<void>
}

/** The session asked for servers that cannot be served; `message` says why, for the client's stderr. */
export class SelectionError extends Data.TaggedError("SelectionError")<{ readonly message: string }> {}

export class Hub extends Context.Tag("mcp-ssh/Hub")<
  Hub,
  {
    /**
     * Open a session over the named servers (empty: all of them); what the servers send the client
     * goes to `toClient`, in order. Closing the scope ends it.
     */
    readonly open: (
      selection: ReadonlyArray<string>,
      client: ClientIdentity,
      toClient: (message: JsonRpcMessage) => Effect.Effect<void>,
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

/** What happens next to a call of a modern client: its child asks the client something, or answers. */
type CallEvent =
  | { readonly _tag: "Input"; readonly request: JsonRpcRequest }
  | { readonly _tag: "Done"; readonly response: JsonRpcResponse }

/** A call of a modern client to a 2025-era child, which may pause on input_required and resume. */
interface InteractiveCall {
  readonly server: ChildServer
  readonly connection: UpstreamConnection
  readonly events: Queue.Queue<CallEvent>
  readonly fiber: Fiber.RuntimeFiber<void>
}

/** Requests a child sends together (in the same burst) are asked of the client in one round. */
const inputGatherMillis = 5

const ok = (id: JsonRpcId, result: JsonObject): JsonRpcResponse => ({ jsonrpc: "2.0", id, result })

const invalidParams = (id: JsonRpcId, message: string): Routed => ({
  response: errorResponse(id, { code: ErrorCode.InvalidParams, message }),
})

/** MCP's code for a resource URI that no server has. */
const resourceNotFound = -32002

/** `params` only when there are some (exactOptionalPropertyTypes forbids an explicit undefined). */
const optionalParams = (params: JsonObject | undefined): { params?: JsonObject } =>
  params === undefined ? {} : { params }

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
    const audit = yield* Audit
    const { settings } = config
    const supervisorOptions = {
      maxLineBytes: settings.maxLineBytes,
      stopTimeout: Duration.seconds(settings.childStopTimeout),
      startupTimeout: Duration.seconds(settings.startupTimeout),
    }

    const open = (
      selection: ReadonlyArray<string>,
      client: ClientIdentity,
      toClient: (message: JsonRpcMessage) => Effect.Effect<void>,
    ) =>
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
        return yield* openSession(servers, client, toClient)
      })

    const openSession = (
      servers: ReadonlyArray<ChildServer>,
      client: ClientIdentity,
      toClient: (message: JsonRpcMessage) => Effect.Effect<void>,
    ) =>
      Effect.gen(function* () {
        const handshake = yield* Deferred.make<ClientHandshake>()
        let initialized = false
        /** Set once a 2025-era initialize has started the children (or given up on them). */
        const initializeDone = yield* Deferred.make<void>()
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
          {
            readonly connection: UpstreamConnection
            readonly id: JsonRpcId
            readonly progressKey: string | undefined
          }
        >()
        /** Progress tokens of those requests: the client's progress goes back to the child that asked. */
        const clientProgress = new Map<string, UpstreamConnection>()
        let nextServerRequestId = 1
        /** The client has the server's request timeout to answer each; closing the session ends them. */
        const serverRequestDeadlines = yield* FiberMap.make<number>()
        /** Forget a request that was answered, withdrawn or timed out; its entry if it was still open. */
        const closeServerRequest = (id: number) => {
          const entry = serverRequests.get(id)
          if (entry === undefined) return undefined
          serverRequests.delete(id)
          if (entry.progressKey !== undefined) clientProgress.delete(entry.progressKey)
          return entry
        }

        /** Which protocol the client speaks, decided by its first request, as MCP servers on stdio do. */
        let era: "undecided" | "legacy" | "modern" = "undecided"
        /** A modern client that only asked server/discover may still turn out to be a legacy one. */
        let modernServed = false
        const serverInfo = { name: "mcp-ssh", title: "mcp-ssh gateway", version }
        const inputEnded = yield* Deferred.make<void>()
        /** Open subscriptions/listen requests of a modern client, by request id. */
        const listens = new Map<string, { readonly id: JsonRpcId; readonly filter: ListenFilter }>()
        /** Calls of a modern client waiting on a child, which a child's request of the client belongs to. */
        const awaitingChild = new Map<UpstreamConnection, Array<InteractiveCall>>()
        /** Calls paused on input_required, by the requestState the client must send back. */
        const parked = new Map<
          string,
          {
            readonly call: InteractiveCall
            readonly asks: ReadonlyArray<{ readonly key: string; readonly childRequestId: JsonRpcId }>
          }
        >()
        /** A paused call waits for the client's next round at most its server's timeout. */
        const parkedDeadlines = yield* FiberMap.make<string>()

        /**
         * A change a client should hear of: a legacy client hears list changes always and resource updates
         * of what it subscribed; a modern client only what one of its subscriptions/listen asked for.
         */
        const emitChange = (method: string, params: JsonObject | undefined) =>
          Effect.suspend(() => {
            if (era !== "modern") {
              if (method === "notifications/resources/updated") {
                return typeof params?.uri === "string" && subscriptions.has(params.uri)
                  ? toClient({ jsonrpc: "2.0", method, params })
                  : Effect.void
              }
              return toClient({ jsonrpc: "2.0", method, ...(params === undefined ? {} : { params }) })
            }
            return Effect.forEach(
              [...listens.values()].filter((listen) => filterWants(listen.filter, method, params)),
              (listen) =>
                toClient({
                  jsonrpc: "2.0",
                  method,
                  params: {
                    ...params,
                    _meta: {
                      ...(isObject(params?._meta) ? params._meta : {}),
                      [metaKey.subscriptionId]: listen.id,
                    },
                  },
                }),
              { discard: true },
            )
          })

        const log = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
          effect.pipe(Effect.annotateLogs({ client: client.fingerprint }))

        /**
         * A 2025-era child asks the client something (sampling, elicitation, roots). A modern client
         * cannot be asked directly: the question goes back as input_required on the call it belongs to.
         * On stdio nothing links the two, so it belongs to the oldest call waiting on that child.
         */
        const askThroughCall = (connection: UpstreamConnection, request: JsonRpcRequest) =>
          Effect.suspend(() => {
            const waiting = awaitingChild.get(connection) ?? []
            // It stays registered until its round is gathered: a burst of requests joins it.
            const call = waiting[0]
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
                ([, method]) => emitChange(method, undefined),
                { discard: true },
              )
            : Effect.void
          return announce.pipe(
            Effect.zipRight(
              log(Effect.logInfo(`server '${child.server.name}' ${isReady ? "is up" : "is down"}`)),
            ),
          )
        }

        /** A client that does not answer in time: the server gets an error, the client a cancellation. */
        const clientDeadline = (child: SupervisedChild, id: number, method: string) => {
          const timeout = Duration.seconds(child.server.requestTimeout)
          return Effect.sleep(timeout).pipe(
            Effect.zipRight(
              Effect.suspend(() => {
                const entry = closeServerRequest(id)
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
                    toClient({
                      jsonrpc: "2.0",
                      method: "notifications/cancelled",
                      params: { requestId: id, reason },
                    }),
                  ),
                )
              }),
            ),
          )
        }

        const onMessage = (child: SupervisedChild, connection: UpstreamConnection, message: ChildMessage) =>
          Effect.suspend(() => {
            if (isRequest(message)) {
              if (message.method === "ping") {
                return connection.send({ jsonrpc: "2.0", id: message.id, result: {} }).pipe(Effect.ignore)
              }
              if (era === "modern") return askThroughCall(connection, message)
              const id = nextServerRequestId++
              const meta = message.params?._meta
              const progressKey =
                isObject(meta) && meta.progressToken !== undefined
                  ? JSON.stringify(meta.progressToken)
                  : undefined
              serverRequests.set(id, { connection, id: message.id, progressKey })
              if (progressKey !== undefined) clientProgress.set(progressKey, connection)
              return FiberMap.run(serverRequestDeadlines, id, clientDeadline(child, id, message.method)).pipe(
                Effect.zipRight(toClient({ ...message, id })),
              )
            }
            const params = message.params ?? {}
            switch (message.method) {
              case "notifications/message": {
                const logger =
                  typeof params.logger === "string"
                    ? `${child.server.name}/${params.logger}`
                    : child.server.name
                // A modern client gets log messages only when its requests ask for a level.
                if (era === "modern" && logLevel === undefined) return Effect.void
                return toClient({ ...message, params: { ...params, logger } })
              }
              case "notifications/resources/updated":
              case "notifications/tools/list_changed":
              case "notifications/prompts/list_changed":
              case "notifications/resources/list_changed":
                return emitChange(message.method, message.params)
              case "notifications/cancelled": {
                // The child gave up on a request it made of the client: tell the client by its id.
                const entry = [...serverRequests.entries()].find(
                  ([, value]) => value.connection === connection && value.id === params.requestId,
                )
                if (entry === undefined) return Effect.void
                closeServerRequest(entry[0])
                return FiberMap.remove(serverRequestDeadlines, entry[0]).pipe(
                  Effect.zipRight(toClient({ ...message, params: { ...params, requestId: entry[0] } })),
                )
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

        const sessionScope = yield* Effect.scope

        /**
         * A client that never comes back with a paused call's requestState: the child's questions get
         * an error, the call is cancelled at the child, and the requestState is forgotten.
         */
        const expireParked = (requestState: string, call: InteractiveCall) => {
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
                        call.connection
                          .send(
                            errorResponse(childRequestId, {
                              code: ErrorCode.RequestTimeout,
                              message: reason,
                            }),
                          )
                          .pipe(Effect.ignore),
                      { discard: true },
                    ),
                  ),
                  Effect.zipRight(Fiber.interrupt(call.fiber)),
                )
              }),
            ),
          )
        }

        /** Wait for the call's next event: a question for the client (pause it), or the answer. */
        const nextStep = (call: InteractiveCall, clientId: JsonRpcId): Effect.Effect<JsonRpcResponse> =>
          Effect.gen(function* () {
            const waiting = awaitingChild.get(call.connection) ?? []
            waiting.push(call)
            awaitingChild.set(call.connection, waiting)
            const unregister = Effect.sync(() => {
              const index = waiting.indexOf(call)
              if (index !== -1) waiting.splice(index, 1)
            })
            const event = yield* Queue.take(call.events).pipe(
              Effect.onInterrupt(() => Fiber.interrupt(call.fiber).pipe(Effect.zipRight(unregister))),
            )
            if (event._tag === "Done") {
              yield* unregister
              return { ...event.response, id: clientId }
            }
            // A child may ask several things at once (elicit and list roots): they make one round.
            yield* Effect.sleep(Duration.millis(inputGatherMillis)).pipe(Effect.ensuring(unregister))
            const more = yield* Queue.takeAll(call.events)
            const inputs = [event.request]
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
            yield* FiberMap.run(parkedDeadlines, requestState, expireParked(requestState, call))
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

        /** tools/call, prompts/get or resources/read of a modern client, which may take several rounds. */
        const forwardInteractive = (server: ChildServer, ready: ReadyChild, request: JsonRpcRequest) =>
          Effect.gen(function* () {
            const requestState = stringParam(request.params, "requestState")
            if (requestState !== undefined || request.params?.inputResponses !== undefined) {
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
                  return entry.call.connection
                    .send(
                      answer === undefined
                        ? errorResponse(childRequestId, {
                            code: ErrorCode.InternalError,
                            message: "the client gave no answer",
                          })
                        : { jsonrpc: "2.0", id: childRequestId, result: answer },
                    )
                    .pipe(Effect.ignore)
                },
                { discard: true },
              )
              return yield* nextStep(entry.call, request.id)
            }
            const events = yield* Queue.unbounded<CallEvent>()
            const fiber = yield* ready.connection.request(request).pipe(
              Effect.catchTag("UpstreamError", (error) =>
                Effect.succeed(fromUpstreamError(request.id, error)),
              ),
              Effect.flatMap((response) => Queue.offer(events, { _tag: "Done", response })),
              Effect.asVoid,
              Effect.forkIn(sessionScope),
            )
            return yield* nextStep({ server, connection: ready.connection, events, fiber }, request.id)
          })

        /** The child's connection; a child still starting gets up to --startup-wait to come up. */
        const whenReady = (server: string): Effect.Effect<ReadyChild | undefined> =>
          Effect.suspend(() => {
            const child = byName.get(server)
            if (child === undefined || child.state()._tag !== "Starting")
              return Effect.succeed(readyOf(child))
            return child.settled.pipe(
              Effect.timeout(Duration.seconds(settings.startupWait)),
              Effect.ignore,
              Effect.map(() => readyOf(child)),
            )
          })

        /** Before deciding a name or URI is unknown, give children still starting their chance. */
        const startingChildrenSettle = Effect.forEach(
          children.filter((child) => child.state()._tag === "Starting"),
          (child) => whenReady(child.server.name),
          { concurrency: "unbounded", discard: true },
        )

        /** Send a request to one child and give back its answer, with the client's id. */
        const forward = (server: string, request: JsonRpcRequest): Effect.Effect<JsonRpcResponse> =>
          Effect.flatMap(whenReady(server), (ready) => forwardTo(server, ready, request))

        const forwardTo = (
          server: string,
          ready: ReadyChild | undefined,
          request: JsonRpcRequest,
        ): Effect.Effect<JsonRpcResponse> => {
          if (ready === undefined) return Effect.succeed(notRunning(request.id, server))
          const child = byName.get(server)
          if (era === "modern" && interactiveMethods.includes(request.method) && child !== undefined)
            return forwardInteractive(child.server, ready, request)
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
              return listAll(ready.connection, method, mergedLists[method].items).pipe(
                Effect.flatMap((items) => transformPage(method, child, items)),
                Effect.ignore,
              )
            },
            { discard: true, concurrency: "unbounded" },
          )

        /** Remember the level (restarted children get it too) and send it to every child that logs. */
        const setLevel = (request: JsonRpcRequest) =>
          Effect.suspend(() => {
            logLevel = stringParam(request.params, "level")
            return Effect.forEach(
              children.filter((child) => hasCapability(child, "logging")),
              (child) => forward(child.server.name, request),
              { concurrency: "unbounded", discard: true },
            )
          })

        const lookupName = (kind: "tool" | "prompt", exposed: string) =>
          Effect.gen(function* () {
            const known = names[kind].get(exposed)
            if (known !== undefined) return Option.some(known)
            yield* startingChildrenSettle
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
            yield* startingChildrenSettle
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

        /** The children's handshake is the client's: its capabilities decide what they offer. */
        const startChildren = (handshakeParams: ClientHandshake) =>
          Deferred.succeed(handshake, handshakeParams).pipe(
            // Fast children make it into the first answer; slower ones join later with list_changed.
            Effect.zipRight(
              Effect.forEach(children, (child) => child.settled, {
                concurrency: "unbounded",
                discard: true,
              }).pipe(Effect.timeout(Duration.seconds(settings.startupWait)), Effect.ignore),
            ),
          )

        const unknownClient = { name: "unknown", version: "0" }

        /** The merged server as it stands: up children as they are, the others as the probe saw them. */
        const mergedView = () => {
          const known = children.map((child) => {
            const ready = readyOf(child)
            const profile = Option.getOrUndefined(catalog.profile(child.server.name))
            return {
              server: child.server.name,
              capabilities: ready?.capabilities ?? profile?.capabilities ?? {},
              instructions: ready?.instructions ?? profile?.instructions,
            }
          })
          return {
            capabilities: mergeCapabilities(known.map((entry) => entry.capabilities)),
            instructions: mergeInstructions(known),
          }
        }

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
            yield* startChildren({
              protocolVersion,
              capabilities: isObject(params.capabilities) ? params.capabilities : {},
              clientInfo: isObject(params.clientInfo) ? params.clientInfo : unknownClient,
            }).pipe(Effect.ensuring(Deferred.succeed(initializeDone, undefined)))
            const view = mergedView()
            announced = true
            return {
              response: ok(request.id, {
                protocolVersion,
                capabilities: view.capabilities,
                serverInfo,
                ...(view.instructions === undefined ? {} : { instructions: view.instructions }),
              }),
            } satisfies Routed
          })

        /** A long-lived request of a modern client: change notifications flow on it until it ends. */
        const listen = (request: JsonRpcRequest) =>
          Effect.gen(function* () {
            const filter = readListenFilter(request.params)
            if (filter === undefined) {
              return invalidParams(request.id, "Invalid params: notifications must say which changes to send")
            }
            const honoured = honouredFilter(filter, mergedView().capabilities)
            const key = JSON.stringify(request.id)
            listens.set(key, { id: request.id, filter: honoured })
            yield* Effect.forEach(
              honoured.resourceSubscriptions,
              (uri) =>
                lookupUri(uri).pipe(
                  Effect.flatMap((owner) =>
                    Option.isNone(owner)
                      ? Effect.void
                      : forward(owner.value, {
                          jsonrpc: "2.0",
                          id: "subscribe",
                          method: "resources/subscribe",
                          params: { uri },
                        }),
                  ),
                ),
              { discard: true },
            )
            yield* toClient({
              jsonrpc: "2.0",
              method: "notifications/subscriptions/acknowledged",
              params: { notifications: honoured, _meta: { [metaKey.subscriptionId]: request.id } },
            })
            yield* Deferred.await(inputEnded).pipe(Effect.ensuring(Effect.sync(() => listens.delete(key))))
            return {
              response: ok(request.id, { _meta: { [metaKey.subscriptionId]: request.id } }),
            } satisfies Routed
          })

        /** A request of a client that speaks 2026-07-28: checked envelope, then the same routing. */
        const routeModern = (request: JsonRpcRequest, envelope: ReturnType<typeof readEnvelope>) =>
          Effect.gen(function* () {
            if (request.method === "initialize") {
              const requested = String(request.params?.protocolVersion ?? "")
              return { response: errorResponse(request.id, unsupportedVersion(requested)) } satisfies Routed
            }
            if (envelope === "none") {
              return invalidParams(
                request.id,
                `Invalid params: the request has no _meta envelope of protocol revision ${modernVersion}`,
              )
            }
            if ("problem" in envelope) return invalidParams(request.id, `Invalid params: ${envelope.problem}`)
            if (!modernVersions.includes(envelope.protocolVersion)) {
              return {
                response: errorResponse(request.id, unsupportedVersion(envelope.protocolVersion)),
              } satisfies Routed
            }
            yield* startChildren({
              protocolVersion: latestHandshakeVersion,
              capabilities: envelope.clientCapabilities,
              clientInfo: envelope.clientInfo ?? unknownClient,
            })
            if (envelope.logLevel !== undefined && envelope.logLevel !== logLevel) {
              yield* setLevel({
                jsonrpc: "2.0",
                id: "set-level",
                method: "logging/setLevel",
                params: { level: envelope.logLevel },
              })
            }
            if (request.method !== "server/discover") {
              modernServed = true
              announced = true
            }
            if (request.method === "server/discover") {
              const view = mergedView()
              return {
                response: ok(request.id, discoverResult(view.capabilities, view.instructions, serverInfo)),
              }
            }
            if (legacyOnlyMethods.includes(request.method)) {
              return {
                response: errorResponse(request.id, {
                  code: ErrorCode.MethodNotFound,
                  message: `Method not found: ${request.method} does not exist in protocol revision ${modernVersion}`,
                }),
              } satisfies Routed
            }
            if (request.method === "subscriptions/listen") return yield* listen(request)
            return yield* routeLegacy({ ...request, ...optionalParams(withoutEnvelope(request.params)) })
          }).pipe(
            Effect.map((routed) => ({
              ...routed,
              response: toModernResponse(request.method, routed.response, serverInfo),
            })),
          )

        /**
         * What a 2025-era client may send before initialize: ping only (MCP lifecycle). Anything else is
         * refused rather than served by children that would know nothing of the client.
         */
        const beforeInitialize = (request: JsonRpcRequest): Routed =>
          request.method === "ping"
            ? { response: ok(request.id, {}) }
            : {
                response: errorResponse(request.id, {
                  code: ErrorCode.InvalidRequest,
                  message: `Invalid Request: ${request.method} before initialize; send initialize first (or, in MCP ${modernVersion}, the protocol version in _meta on every request)`,
                }),
              }

        /**
         * The era is the first request's (initialize: 2025, an envelope: 2026); a modern client that only
         * asked server/discover may still initialize.
         */
        const route = (request: JsonRpcRequest): Effect.Effect<Routed> =>
          Effect.suspend(() => {
            const envelope = readEnvelope(request.params)
            if (
              era === "undecided" ||
              (era === "modern" && !modernServed && request.method === "initialize")
            ) {
              if (request.method !== "initialize" && envelope === "none") {
                return Effect.succeed(beforeInitialize(request))
              }
              era = request.method === "initialize" ? "legacy" : "modern"
            }
            if (era === "modern") return routeModern(request, envelope)
            if (request.method === "initialize") return routeLegacy(request)
            // A request sent right behind initialize waits for the children initialize is starting.
            return Deferred.await(initializeDone).pipe(Effect.zipRight(routeLegacy(request)))
          })

        const routeLegacy = (request: JsonRpcRequest): Effect.Effect<Routed> =>
          Effect.gen(function* () {
            const method = request.method
            if (method === "initialize") return yield* initialize(request)
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
                yield* setLevel(request)
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

        const outcomeOf = (response: JsonRpcResponse) =>
          response.error === undefined ? "ok" : `error ${response.error.code}`

        const request = (message: JsonRpcRequest): Effect.Effect<JsonRpcResponse> =>
          Effect.gen(function* () {
            const started = Date.now()
            const routed = yield* route(message).pipe(
              Effect.onInterrupt(() =>
                Effect.sync(() =>
                  audit.record({
                    client: client.fingerprint,
                    server: "gateway",
                    method: message.method,
                    target: undefined,
                    millis: Date.now() - started,
                    outcome: "cancelled",
                  }),
                ),
              ),
            )
            audit.record({
              client: client.fingerprint,
              server: routed.server ?? "gateway",
              method: message.method,
              target: routed.target,
              millis: Date.now() - started,
              outcome: outcomeOf(routed.response),
            })
            return routed.response
          })

        /**
         * The per-call path for what is already known: a tool, prompt or resource whose owner is up,
         * for a 2025-era client. Plain callbacks from request to response; anything else (names not
         * seen yet, children starting, 2026 clients) takes `request`.
         */
        const fastRequest = (message: JsonRpcRequest, respond: (response: JsonRpcResponse) => void) => {
          if (era !== "legacy") return undefined
          const params = message.params
          let target: Target | undefined
          let forwarded: JsonRpcRequest = message
          let label: string | undefined
          if (message.method === "tools/call" || message.method === "prompts/get") {
            label = stringParam(params, "name")
            target =
              label === undefined
                ? undefined
                : names[message.method === "tools/call" ? "tool" : "prompt"].get(label)
            if (target !== undefined) forwarded = { ...message, params: { ...params, name: target.name } }
          } else if (message.method === "resources/read") {
            label = stringParam(params, "uri")
            const owner = label === undefined ? undefined : ownerOfUri(label)
            target = owner === undefined ? undefined : { server: owner, name: "" }
          }
          const ready = target === undefined ? undefined : readyOf(byName.get(target.server))
          if (target === undefined || ready === undefined) return undefined
          const server = target.server
          const started = Date.now()
          let settled = false
          const record = (outcome: string) =>
            audit.record({
              client: client.fingerprint,
              server,
              method: message.method,
              target: label,
              millis: Date.now() - started,
              outcome,
            })
          const cancel = ready.connection.call(forwarded, (outcome) => {
            settled = true
            const response =
              outcome instanceof UpstreamError ? fromUpstreamError(message.id, outcome) : outcome
            const task =
              isObject(response.result) && isObject(response.result.task) ? response.result.task : undefined
            if (typeof task?.taskId === "string") taskOwners.set(task.taskId, server)
            record(outcomeOf(response))
            respond(response)
          })
          return () => {
            if (settled) return
            settled = true
            cancel()
            record("cancelled")
          }
        }

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
                Effect.logWarning(
                  `ignored a response of the client to request id ${JSON.stringify(response.id)}, which no server awaits`,
                ),
              )
            }
            closeServerRequest(response.id)
            return FiberMap.remove(serverRequestDeadlines, response.id).pipe(
              Effect.zipRight(entry.connection.send({ ...response, id: entry.id }).pipe(Effect.ignore)),
            )
          })

        const endOfInput = Deferred.succeed(inputEnded, undefined).pipe(Effect.asVoid)
        return { request, fastRequest, notify, respond, endOfInput } satisfies HubSession
      })

    return { open }
  }),
)
