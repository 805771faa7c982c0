/**
 * One child serving many sessions: each session holds a lease, and sees the child through a
 * connection of its own (a link) that the Hub uses exactly as it uses a per-session child's. What
 * the sessions send and what the child sends back is multiplexed here:
 *
 * - ids are already the child's own per request (pendingCalls.ts); progress tokens are replaced by
 *   the gateway's, so the child's progress reaches the session that asked, under its own token;
 * - a session that goes cancels its calls at the child;
 * - resources/subscribe is counted per URI, resources/updated goes to subscribers only;
 * - the child logs at the most verbose level any session asked for, each session gets what its own
 *   level lets through;
 * - a child's request goes to the one session with a call in flight at it, else it is refused;
 * - the lists of a child that announces their changes (`listChanged`) are asked once and shared
 *   until it announces one (or restarts), so a new session's tools/list does not wait for the child.
 *
 * The per-call path stays plain callbacks: a Map entry and a closure per call, no fiber.
 */
import { Effect } from "effect"
import {
  ErrorCode,
  errorResponse,
  ForwardedResponse,
  isObject,
  isRequest,
  type JsonObject,
  type JsonRpcId,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../../shared/jsonRpc.js"
import { UpstreamError } from "../errors.js"
import { callOwner, metaKey, modernVersion } from "../hub/modern.js"
import type { ChildState, ReadyChild, SupervisedChild, SupervisorHooks } from "./ChildSupervisor.js"
import { relayableCapabilities } from "./discover.js"
import type { CallOutcome } from "./pendingCalls.js"
import { type ChildMessage, requestThrough, type UpstreamConnection } from "./Upstream.js"

const severity: Readonly<Record<string, number>> = {
  debug: 0,
  info: 1,
  notice: 2,
  warning: 3,
  error: 4,
  critical: 5,
  alert: 6,
  emergency: 7,
}

/** The most verbose of the levels asked for; undefined when none asked. */
export const mostVerbose = (levels: Iterable<string | undefined>): string | undefined => {
  let best: string | undefined
  for (const level of levels) {
    if (level === undefined || severity[level] === undefined) continue
    if (best === undefined || (severity[level] ?? 0) < (severity[best] ?? 0)) best = level
  }
  return best
}

/** A session that asked for no level gets what the child sends; one that did, that level and above. */
export const logPasses = (messageLevel: unknown, sessionLevel: string | undefined): boolean => {
  if (sessionLevel === undefined) return true
  const wanted = severity[sessionLevel]
  const got = typeof messageLevel === "string" ? severity[messageLevel] : undefined
  return wanted === undefined || got === undefined || got >= wanted
}

/** The client capability a child's request needs, if the gateway knows it. */
export const capabilityFor: Readonly<Record<string, string>> = {
  "sampling/createMessage": "sampling",
  "elicitation/create": "elicitation",
}

const progressTokenOf = (request: JsonRpcRequest): unknown => {
  const meta = request.params?._meta
  return isObject(meta) ? meta.progressToken : undefined
}

const withProgressToken = (request: JsonRpcRequest, token: string): JsonRpcRequest => {
  const params = request.params ?? {}
  const meta = isObject(params._meta) ? params._meta : {}
  return { ...request, params: { ...params, _meta: { ...meta, progressToken: token } } }
}

/** A session's call to a shared modern child: its own client capabilities, and whose call it is. */
const forModernChild = (request: JsonRpcRequest, lease: Lease): JsonRpcRequest => {
  const params = request.params ?? {}
  const meta = isObject(params._meta) ? params._meta : {}
  const capabilities = lease.hooks.clientCapabilities()
  return {
    ...request,
    params: {
      ...params,
      _meta: {
        ...meta,
        ...(capabilities === undefined
          ? {}
          : { [metaKey.clientCapabilities]: relayableCapabilities(capabilities) }),
        [callOwner]: lease.tag,
      },
    },
  }
}

const ok = (id: JsonRpcId): JsonRpcResponse => ({ jsonrpc: "2.0", id, result: {} })

/** The lists a session may be answered from memory, each with the capability that announces its changes. */
const listCapability: Readonly<Record<string, string>> = {
  "tools/list": "tools",
  "prompts/list": "prompts",
  "resources/list": "resources",
  "resources/templates/list": "resources",
}

/** The capability whose list_changed makes its lists stale. */
const changedCapability: Readonly<Record<string, string>> = {
  "notifications/tools/list_changed": "tools",
  "notifications/prompts/list_changed": "prompts",
  "notifications/resources/list_changed": "resources",
}

/**
 * The page a list request asks for, when it may be answered from memory: no parameter but a
 * cursor (a progress token or anything else goes to the child).
 */
const listPageKey = (request: JsonRpcRequest): string | undefined => {
  const params = request.params ?? {}
  const keys = Object.keys(params)
  if (keys.length === 0) return `${request.method} `
  if (keys.length === 1 && typeof params.cursor === "string") return `${request.method} ${params.cursor}`
  return undefined
}

/** Pages kept at most (a list of more pages is asked of the child past them). */
const maxListedPages = 256

interface ListedPage {
  /** The life of the child that answered it: a restarted child is asked again. */
  readonly connection: UpstreamConnection
  readonly response: JsonRpcResponse
}
const nothing = () => {}

/** What a session gives its lease: where the child's messages and state changes for it go. */
export interface LeaseHooks extends Pick<SupervisorHooks, "onMessage" | "onStateChange"> {
  /** The client's capabilities, once its handshake is known. */
  readonly clientCapabilities: () => JsonObject | undefined
}

interface InFlight {
  readonly cancel: () => void
  readonly done: (outcome: CallOutcome) => void
}

/** One session's hold on a shared child. */
export class Lease {
  private static nextTag = 1
  /** Names the lease on a shared modern child's calls, whose questions carry it back. */
  readonly tag = Lease.nextTag++
  readonly inflight = new Map<number, InFlight>()
  readonly subscriptions = new Set<string>()
  level: string | undefined
  nextCall = 1
  idleWaiters: Array<() => void> = []
  /** The session's view of the child; set once the view exists. */
  view: SupervisedChild | undefined
  /** The links of this lease, one per life of the child. */
  readonly links = new WeakMap<UpstreamConnection, UpstreamConnection>()
  /** The view of the last Ready state handed out, so the same life gives the same object. */
  lastReady: { readonly real: ReadyChild; readonly view: ReadyChild } | undefined

  constructor(
    readonly identity: string,
    readonly hooks: LeaseHooks,
  ) {}

  settledOne() {
    if (this.inflight.size > 0 || this.idleWaiters.length === 0) return
    const waiters = this.idleWaiters
    this.idleWaiters = []
    for (const waiter of waiters) waiter()
  }
}

export class Multiplexer {
  readonly leases = new Set<Lease>()
  private readonly progressRoutes = new Map<string, { readonly lease: Lease; readonly token: unknown }>()
  private readonly subscribers = new Map<string, number>()
  private readonly childRequests = new Map<string, Lease>()
  /** Pages of the lists, by method and cursor; only of a 2025-era child that announces their changes. */
  private readonly listed = new Map<string, ListedPage>()
  /**
   * The pages that may be kept: the first of each list, and those whose cursor the child itself
   * gave in a kept page. A cursor a client made up (the merged cursor is readable) is the child's
   * to answer, and is never kept.
   */
  private readonly listable = new Set<string>()
  /** Per capability, how many times its lists went stale: an answer asked before that is not kept. */
  private readonly listGeneration = new Map<string, number>()
  private nextToken = 1
  private child: SupervisedChild | undefined
  /** Calls of every lease in flight at the child, kept as they change: routing asks on every call. */
  private active = 0

  constructor(
    readonly server: string,
    private readonly warn: (text: string) => Effect.Effect<void>,
  ) {}

  attach(child: SupervisedChild) {
    this.child = child
  }

  /** The level the child should log at: the most verbose any of its sessions asked for. */
  level(): string | undefined {
    return mostVerbose([...this.leases].map((lease) => lease.level))
  }

  inFlight(): number {
    return this.active
  }

  private ready(): ReadyChild | undefined {
    const state = this.child?.state()
    return state?._tag === "Ready" ? state : undefined
  }

  /** The child's state as a session sees it: a ready child comes with the session's own link. */
  viewState(lease: Lease): ChildState {
    const state = this.child?.state() ?? { _tag: "Starting" }
    if (state._tag !== "Ready") return state
    if (lease.lastReady?.real === state) return lease.lastReady.view
    const view: ReadyChild = { ...state, connection: this.linkOf(lease, state.connection) }
    lease.lastReady = { real: state, view }
    return view
  }

  open(identity: string, hooks: LeaseHooks): Lease {
    const lease = new Lease(identity, hooks)
    this.leases.add(lease)
    return lease
  }

  /** The session went (or stopped using the server): its calls are cancelled at the child, its holds let go. */
  release(lease: Lease): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.leases.delete(lease)
      for (const entry of [...lease.inflight.values()]) entry.cancel()
      this.active -= lease.inflight.size
      lease.inflight.clear()
      lease.settledOne()
      for (const [key, route] of this.progressRoutes)
        if (route.lease === lease) this.progressRoutes.delete(key)
      const connection = this.ready()?.connection
      const effects: Array<Effect.Effect<void>> = []
      for (const uri of lease.subscriptions) {
        const left = (this.subscribers.get(uri) ?? 1) - 1
        if (left > 0) {
          this.subscribers.set(uri, left)
          continue
        }
        this.subscribers.delete(uri)
        connection?.call(
          { jsonrpc: "2.0", id: "mcp-ssh", method: "resources/unsubscribe", params: { uri } },
          nothing,
        )
      }
      lease.subscriptions.clear()
      if (lease.level !== undefined) {
        const level = this.level()
        if (level !== undefined && level !== lease.level) {
          connection?.call(
            { jsonrpc: "2.0", id: "mcp-ssh", method: "logging/setLevel", params: { level } },
            nothing,
          )
        }
      }
      for (const [id, owner] of this.childRequests) {
        if (owner !== lease) continue
        this.childRequests.delete(id)
        const message = "the session this request was for has closed"
        if (connection !== undefined)
          effects.push(
            connection
              .send(
                errorResponse(JSON.parse(id) as JsonRpcId, { code: ErrorCode.ServerUnavailable, message }),
              )
              .pipe(Effect.ignore),
          )
      }
      return Effect.all(effects, { discard: true })
    })
  }

  /** The real child came up or went down: every session hears it as a change of its own child. */
  stateChanged(previous: ChildState, next: ChildState): Effect.Effect<void> {
    const resubscribe = Effect.sync(() => {
      if (next._tag !== "Ready" || (previous._tag === "Ready" && previous.connection === next.connection))
        return
      // Pages of the last life are never answered again.
      this.listed.clear()
      this.listable.clear()
      // A new life of the child knows nothing of the URIs its sessions still hold, and their own
      // subscribe would stop at the count here: subscribe the new child to each of them again.
      for (const uri of this.subscribers.keys())
        next.connection.call(
          { jsonrpc: "2.0", id: "mcp-ssh", method: "resources/subscribe", params: { uri } },
          nothing,
        )
    })
    const tell = Effect.forEach(
      [...this.leases],
      (lease) => {
        const view = lease.view
        if (view === undefined) return Effect.void
        const before =
          previous._tag === "Ready" && lease.lastReady?.real === previous ? lease.lastReady.view : previous
        return lease.hooks.onStateChange(view, before, this.viewState(lease))
      },
      { discard: true },
    )
    return Effect.zipRight(resubscribe, tell)
  }

  /** What the child sends on its own, to the session(s) it is for. */
  route(connection: UpstreamConnection, message: ChildMessage): Effect.Effect<void> {
    if (isRequest(message)) return this.routeRequest(connection, message)
    const params = message.params ?? {}
    switch (message.method) {
      case "notifications/progress": {
        const route = this.progressRoutes.get(JSON.stringify(params.progressToken))
        if (route === undefined) return Effect.void
        return this.deliver(route.lease, connection, {
          ...message,
          params: { ...params, progressToken: route.token },
        } as JsonRpcNotification)
      }
      case "notifications/message":
        return this.each((lease) => logPasses(params.level, lease.level), connection, message)
      case "notifications/resources/updated":
        return this.each(
          (lease) => typeof params.uri === "string" && lease.subscriptions.has(params.uri),
          connection,
          message,
        )
      case "notifications/tools/list_changed":
      case "notifications/prompts/list_changed":
      case "notifications/resources/list_changed":
        this.listsChanged(message.method)
        return this.each(() => true, connection, message)
      case "notifications/cancelled": {
        const key = JSON.stringify(params.requestId)
        const lease = this.childRequests.get(key)
        if (lease === undefined) return Effect.void
        this.childRequests.delete(key)
        return this.deliver(lease, connection, message)
      }
      default: {
        // Anything else cannot be told apart between sessions: only a session alone at the child gets it.
        const busy = [...this.leases].filter((lease) => lease.inflight.size > 0)
        const only = busy.length === 1 ? busy[0] : this.leases.size === 1 ? [...this.leases][0] : undefined
        return only === undefined ? Effect.void : this.deliver(only, connection, message)
      }
    }
  }

  private deliver(lease: Lease, connection: UpstreamConnection, message: ChildMessage) {
    const view = lease.view
    return view === undefined
      ? Effect.void
      : lease.hooks.onMessage(view, this.linkOf(lease, connection), message)
  }

  private each(wants: (lease: Lease) => boolean, connection: UpstreamConnection, message: ChildMessage) {
    return Effect.forEach(
      [...this.leases].filter(wants),
      (lease) => this.deliver(lease, connection, message),
      { discard: true },
    )
  }

  private routeRequest(connection: UpstreamConnection, request: JsonRpcRequest): Effect.Effect<void> {
    const answer = (response: JsonRpcResponse) => connection.send(response).pipe(Effect.ignore)
    if (request.method === "ping") return answer(ok(request.id))
    // A modern child's question says whose call it belongs to: no guess needed.
    const meta = request.params?._meta
    const owner = isObject(meta) ? meta[callOwner] : undefined
    if (owner !== undefined && isObject(meta)) {
      const { [callOwner]: _owner, ...rest } = meta
      const lease = [...this.leases].find((candidate) => candidate.tag === owner)
      const untagged = { ...request, params: { ...request.params, _meta: rest } }
      if (lease === undefined) {
        const message = "the session this request was for has closed"
        return answer(errorResponse(request.id, { code: ErrorCode.ServerUnavailable, message }))
      }
      this.childRequests.set(JSON.stringify(request.id), lease)
      return this.deliver(lease, connection, untagged)
    }
    // Whose roots? A child shared by many sessions has none of its own.
    if (request.method === "roots/list")
      return answer({ jsonrpc: "2.0", id: request.id, result: { roots: [] } })
    const busy = [...this.leases].filter((lease) => lease.inflight.size > 0)
    const lease = busy.length === 1 ? busy[0] : undefined
    if (lease === undefined) {
      const message = `mcp-ssh cannot tell which session ${request.method} is for: server '${this.server}' is shared and ${busy.length} sessions have requests in flight at it`
      return this.warn(
        `refused ${request.method} of shared server '${this.server}': ${busy.length} sessions have requests in flight at it; give it scope "session"`,
      ).pipe(Effect.zipRight(answer(errorResponse(request.id, { code: ErrorCode.InternalError, message }))))
    }
    const needed = capabilityFor[request.method]
    const capabilities = lease.hooks.clientCapabilities()
    if (needed !== undefined && capabilities !== undefined && capabilities[needed] === undefined) {
      return answer(
        errorResponse(request.id, {
          code: ErrorCode.MethodNotFound,
          message: `Method not found: the client does not support ${needed}`,
        }),
      )
    }
    this.childRequests.set(JSON.stringify(request.id), lease)
    return this.deliver(lease, connection, request)
  }

  /** The connection a session sees for one life of the child. */
  private linkOf(lease: Lease, connection: UpstreamConnection): UpstreamConnection {
    const known = lease.links.get(connection)
    if (known !== undefined) return known
    const call = (request: JsonRpcRequest, done: (outcome: CallOutcome) => void): (() => void) => {
      switch (request.method) {
        case "resources/subscribe":
          return this.subscribe(lease, connection, request, done)
        case "resources/unsubscribe":
          return this.unsubscribe(lease, connection, request, done)
        case "logging/setLevel":
          return this.setLevel(lease, connection, request, done)
        case "tools/list":
        case "prompts/list":
        case "resources/list":
        case "resources/templates/list":
          return this.list(lease, connection, request, done)
        default:
          return this.forward(lease, connection, request, done)
      }
    }
    const request = requestThrough(call)
    const send = (message: JsonRpcNotification | JsonRpcResponse): Effect.Effect<void, UpstreamError> => {
      if ("method" in message) {
        // The client's cancellations reach the child through its calls' own cancel; roots are not relayed.
        if (
          message.method === "notifications/cancelled" ||
          message.method === "notifications/roots/list_changed" ||
          message.method === "notifications/initialized"
        )
          return Effect.void
        return connection.send(message)
      }
      this.childRequests.delete(JSON.stringify(message.id))
      return connection.send(message)
    }
    const drain = (within: import("effect").Duration.Duration, reason: UpstreamError) =>
      Effect.async<void>((resume) => {
        if (lease.inflight.size === 0) resume(Effect.void)
        else lease.idleWaiters.push(() => resume(Effect.void))
      }).pipe(
        Effect.timeout(within),
        Effect.ignore,
        Effect.ensuring(
          Effect.sync(() => {
            for (const entry of [...lease.inflight.values()]) {
              entry.cancel()
              entry.done(reason)
            }
            this.active -= lease.inflight.size
            lease.inflight.clear()
          }),
        ),
      )
    const link: UpstreamConnection = {
      name: connection.name,
      ...(connection.pid === undefined ? {} : { pid: connection.pid }),
      call,
      request,
      send,
      exited: connection.exited,
      drain,
    }
    lease.links.set(connection, link)
    return link
  }

  private forward(
    lease: Lease,
    connection: UpstreamConnection,
    request: JsonRpcRequest,
    done: (outcome: CallOutcome) => void,
  ): () => void {
    const key = lease.nextCall++
    let settled = false
    let sent = this.ready()?.protocolVersion === modernVersion ? forModernChild(request, lease) : request
    let progressKey: string | undefined
    const token = progressTokenOf(request)
    if (token !== undefined) {
      const mapped = `mcp-ssh/${this.nextToken++}`
      progressKey = JSON.stringify(mapped)
      this.progressRoutes.set(progressKey, { lease, token })
      sent = withProgressToken(request, mapped)
    }
    const finish = () => {
      settled = true
      if (lease.inflight.delete(key)) this.active--
      if (progressKey !== undefined) this.progressRoutes.delete(progressKey)
      lease.settledOne()
    }
    const cancel = connection.call(sent, (outcome) => {
      if (settled) return
      finish()
      done(outcome)
    })
    if (!settled) {
      lease.inflight.set(key, { cancel, done })
      this.active++
    }
    return () => {
      if (settled) return
      finish()
      cancel()
    }
  }

  /** Forget the pages of the lists a list_changed names: the child said they changed. */
  private listsChanged(notification: string) {
    const capability = changedCapability[notification]
    if (capability === undefined) return
    this.listGeneration.set(capability, (this.listGeneration.get(capability) ?? 0) + 1)
    // A key is "METHOD CURSOR": its method says whose list it is.
    const stale = (key: string) => listCapability[key.slice(0, key.indexOf(" "))] === capability
    for (const key of [...this.listed.keys()]) if (stale(key)) this.listed.delete(key)
    for (const key of [...this.listable]) if (stale(key)) this.listable.delete(key)
  }

  /**
   * A list page from memory when the child announces that list's changes and answered it in this
   * life since its last announcement; else from the child, kept for the next session.
   */
  private list(
    lease: Lease,
    connection: UpstreamConnection,
    request: JsonRpcRequest,
    done: (outcome: CallOutcome) => void,
  ): () => void {
    const ready = this.ready()
    const capability = listCapability[request.method] ?? ""
    const announced = ready?.capabilities[capability]
    const key = listPageKey(request)
    if (
      key === undefined ||
      (key !== `${request.method} ` && !this.listable.has(key)) ||
      ready === undefined ||
      ready.connection !== connection ||
      ready.protocolVersion === modernVersion ||
      !isObject(announced) ||
      announced.listChanged !== true
    )
      return this.forward(lease, connection, request, done)
    const known = this.listed.get(key)
    if (known !== undefined && known.connection === connection) {
      done({ ...known.response, id: request.id })
      return nothing
    }
    const generation = this.listGeneration.get(capability) ?? 0
    return this.forward(lease, connection, request, (outcome) => {
      if (
        !(outcome instanceof UpstreamError) &&
        !(outcome instanceof ForwardedResponse) &&
        isObject(outcome.result) &&
        (this.listGeneration.get(capability) ?? 0) === generation &&
        this.ready()?.connection === connection &&
        this.listed.size < maxListedPages
      ) {
        this.listed.set(key, { connection, response: outcome })
        const next = outcome.result.nextCursor
        if (typeof next === "string") this.listable.add(`${request.method} ${next}`)
      }
      done(outcome)
    })
  }

  private subscribe(
    lease: Lease,
    connection: UpstreamConnection,
    request: JsonRpcRequest,
    done: (outcome: CallOutcome) => void,
  ): () => void {
    const uri = request.params?.uri
    if (typeof uri !== "string") return this.forward(lease, connection, request, done)
    if (lease.subscriptions.has(uri)) {
      done(ok(request.id))
      return nothing
    }
    const count = this.subscribers.get(uri) ?? 0
    lease.subscriptions.add(uri)
    this.subscribers.set(uri, count + 1)
    if (count > 0) {
      done(ok(request.id))
      return nothing
    }
    // The first subscriber subscribes the child; if the child refuses, nobody holds the URI.
    return this.forward(lease, connection, request, (outcome) => {
      // Only plain successes come back as bytes (a forwarded answer is never an error).
      if (
        outcome instanceof UpstreamError ||
        (!(outcome instanceof ForwardedResponse) && outcome.error !== undefined)
      ) {
        lease.subscriptions.delete(uri)
        const left = (this.subscribers.get(uri) ?? 1) - 1
        if (left > 0) this.subscribers.set(uri, left)
        else this.subscribers.delete(uri)
      }
      done(outcome)
    })
  }

  private unsubscribe(
    lease: Lease,
    connection: UpstreamConnection,
    request: JsonRpcRequest,
    done: (outcome: CallOutcome) => void,
  ): () => void {
    const uri = request.params?.uri
    // Never pass on an unsubscribe the session did not subscribe: it would end another's subscription.
    if (typeof uri !== "string" || !lease.subscriptions.has(uri)) {
      done(ok(request.id))
      return nothing
    }
    lease.subscriptions.delete(uri)
    const left = (this.subscribers.get(uri) ?? 1) - 1
    if (left > 0) {
      this.subscribers.set(uri, left)
      done(ok(request.id))
      return nothing
    }
    this.subscribers.delete(uri)
    return this.forward(lease, connection, request, done)
  }

  private setLevel(
    lease: Lease,
    connection: UpstreamConnection,
    request: JsonRpcRequest,
    done: (outcome: CallOutcome) => void,
  ): () => void {
    const level = request.params?.level
    lease.level = typeof level === "string" ? level : undefined
    const wanted = this.level() ?? lease.level
    if (wanted === undefined) return this.forward(lease, connection, request, done)
    return this.forward(lease, connection, { ...request, params: { ...request.params, level: wanted } }, done)
  }
}
