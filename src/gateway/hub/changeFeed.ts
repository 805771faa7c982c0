/**
 * The changes a client hears of: list_changed when a child comes, goes or says its list changed, and
 * resources/updated. A 2025-era client hears list changes always and updates of the URIs it
 * subscribed to; a 2026 client only what one of its open subscriptions/listen requests asked for,
 * tagged with that request's id. Listens end when the client's input ends.
 */
import { Deferred, Effect, type Scope } from "effect"
import { isObject, type JsonObject, type JsonRpcId, type JsonRpcRequest } from "../../shared/jsonRpc.js"
import type { ChildState, SupervisedChild } from "../children/ChildSupervisor.js"
import { listChangedMethod } from "./mcp.js"
import { filterWants, honouredFilter, type ListenFilter, metaKey, readListenFilter } from "./modern.js"
import type { SessionProtocol } from "./protocol.js"
import { type ClientOutput, invalidParams, ok, type Routed } from "./types.js"

export interface ChangeFeed {
  readonly emit: (method: string, params: JsonObject | undefined) => void
  /** A child came up or went down: once the client has the merged lists, they changed. */
  readonly childChanged: (child: SupervisedChild, previous: ChildState, next: ChildState) => void
  /** A server with these capabilities left the session (a reload): the lists it fed changed. */
  readonly listsChanged: (capabilities: JsonObject) => void
  /** A legacy client's resources/subscribe or unsubscribe was answered without error. */
  readonly subscribed: (uri: string, on: boolean) => void
  /**
   * A 2026 client's subscriptions/listen: acknowledged at once, open until the client's input ends.
   * `subscribe` subscribes at the owning child to a URI the filter names.
   */
  readonly listen: (
    request: JsonRpcRequest,
    capabilities: JsonObject,
    subscribe: (uri: string) => Effect.Effect<void>,
  ) => Effect.Effect<Routed>
  readonly endOfInput: Effect.Effect<void>
}

export const makeChangeFeed = (
  output: ClientOutput,
  protocol: SessionProtocol,
): Effect.Effect<ChangeFeed, never, Scope.Scope> =>
  Effect.gen(function* () {
    const subscriptions = new Set<string>()
    /** Open subscriptions/listen requests of a modern client, by request id. */
    const listens = new Map<string, { readonly id: JsonRpcId; readonly filter: ListenFilter }>()
    const inputEnded = yield* Deferred.make<void>()

    const emit = (method: string, params: JsonObject | undefined) => {
      if (protocol.era !== "modern") {
        if (method === "notifications/resources/updated") {
          if (typeof params?.uri === "string" && subscriptions.has(params.uri))
            output.write({ jsonrpc: "2.0", method, params })
          return
        }
        output.write({ jsonrpc: "2.0", method, ...(params === undefined ? {} : { params }) })
        return
      }
      for (const listen of listens.values()) {
        if (!filterWants(listen.filter, method, params)) continue
        output.write({
          jsonrpc: "2.0",
          method,
          params: {
            ...params,
            _meta: {
              ...(isObject(params?._meta) ? params._meta : {}),
              [metaKey.subscriptionId]: listen.id,
            },
          },
        })
      }
    }

    const listsChanged = (capabilities: JsonObject) => {
      if (!protocol.announced) return
      for (const [capability, method] of Object.entries(listChangedMethod)) {
        if (capabilities[capability] !== undefined) emit(method, undefined)
      }
    }

    const childChanged = (_child: SupervisedChild, previous: ChildState, next: ChildState) => {
      const wasReady = previous._tag === "Ready"
      const isReady = next._tag === "Ready"
      if (wasReady === isReady) return
      listsChanged(isReady ? next.capabilities : previous._tag === "Ready" ? previous.capabilities : {})
    }

    const subscribed = (uri: string, on: boolean) => {
      if (on) subscriptions.add(uri)
      else subscriptions.delete(uri)
    }

    const listen = (
      request: JsonRpcRequest,
      capabilities: JsonObject,
      subscribe: (uri: string) => Effect.Effect<void>,
    ) =>
      Effect.gen(function* () {
        const filter = readListenFilter(request.params)
        if (filter === undefined) {
          return invalidParams(request.id, "Invalid params: notifications must say which changes to send")
        }
        const honoured = honouredFilter(filter, capabilities)
        const key = JSON.stringify(request.id)
        listens.set(key, { id: request.id, filter: honoured })
        yield* Effect.forEach(honoured.resourceSubscriptions, subscribe, { discard: true })
        output.write({
          jsonrpc: "2.0",
          method: "notifications/subscriptions/acknowledged",
          params: { notifications: honoured, _meta: { [metaKey.subscriptionId]: request.id } },
        })
        yield* Deferred.await(inputEnded).pipe(Effect.ensuring(Effect.sync(() => listens.delete(key))))
        return { response: ok(request.id, { _meta: { [metaKey.subscriptionId]: request.id } }) }
      })

    const endOfInput = Deferred.succeed(inputEnded, undefined).pipe(Effect.asVoid)
    return { emit, childChanged, listsChanged, subscribed, listen, endOfInput } satisfies ChangeFeed
  })
