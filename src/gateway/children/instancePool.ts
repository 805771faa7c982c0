/**
 * A session's view of a shared server run as several instances (`"instances": N`): one child as far
 * as the Hub can tell, while each call goes to the instance with the fewest calls in flight at that
 * moment. Routing per call rather than per session keeps a busy session from loading one instance
 * while the others idle. The session holds a lease on every instance (multiplex.ts keeps each
 * instance's sessions apart); what must stay with one instance stays there:
 *
 * - a resources/subscribe goes to one instance and its unsubscribe to the same one (the updates
 *   come from the instance that holds the subscription);
 * - logging/setLevel goes to every instance, so each logs at the session's level;
 * - an answer to a child's request goes back through the instance that asked (the Hub answers on
 *   the connection the request came with).
 *
 * The view is Ready while any instance is; the session hears a change only when that flips.
 */
import { type Duration, Effect } from "effect"
import {
  ErrorCode,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../../shared/jsonRpc.js"
import { UpstreamError } from "../errors.js"
import type { ChildState, ReadyChild, SupervisedChild } from "./ChildSupervisor.js"
import type { Lease, LeaseHooks, Multiplexer } from "./multiplex.js"
import type { CallOutcome } from "./pendingCalls.js"
import { requestThrough, type UpstreamConnection } from "./Upstream.js"

export interface PooledInstance {
  readonly child: SupervisedChild
  readonly mux: Multiplexer
}

/** A lease on every instance, opened by the caller (it releases them); `view` is the session's child. */
export interface PooledLease {
  readonly leases: ReadonlyArray<Lease>
  readonly view: SupervisedChild
}

const nothing = () => {}

/** The ready instance with the fewest calls in flight (the first one on a tie); undefined if none is. */
export const leastBusy = <A>(
  candidates: ReadonlyArray<A>,
  inFlight: (candidate: A) => number,
): A | undefined => {
  let best: A | undefined
  let bestLoad = Number.POSITIVE_INFINITY
  for (const candidate of candidates) {
    const load = inFlight(candidate)
    if (load < bestLoad) {
      best = candidate
      bestLoad = load
    }
  }
  return best
}

/**
 * Open the session's view over `instances`: `open` takes a lease on one instance with the hooks
 * given (the caller keeps it, to release it with the session).
 */
export const openPooled = (
  server: SupervisedChild["server"],
  instances: ReadonlyArray<PooledInstance>,
  hooks: LeaseHooks,
  open: (instance: PooledInstance, hooks: LeaseHooks) => Lease,
): PooledLease => {
  let view: SupervisedChild | undefined
  /** Each instance's ready state as this session sees it (its own link), or undefined. */
  const readyOf = (index: number): ReadyChild | undefined => {
    const instance = instances[index]
    const lease = leases[index]
    if (instance === undefined || lease === undefined) return undefined
    const state = instance.mux.viewState(lease)
    return state._tag === "Ready" ? state : undefined
  }
  const readyIndexes = (): Array<number> => {
    const ready: Array<number> = []
    for (let index = 0; index < instances.length; index++) if (readyOf(index) !== undefined) ready.push(index)
    return ready
  }
  const loadOf = (index: number) => instances[index]?.mux.inFlight() ?? 0
  /** Where each subscribed URI's subscription lives. */
  const subscribedAt = new Map<string, number>()

  const call = (request: JsonRpcRequest, done: (outcome: CallOutcome) => void): (() => void) => {
    const ready = readyIndexes()
    const uri = typeof request.params?.uri === "string" ? request.params.uri : undefined
    if (request.method === "logging/setLevel" && ready.length > 1) {
      // Every instance logs at the session's level; the session gets one answer.
      const cancels = ready.map((index, position) =>
        (readyOf(index) as ReadyChild).connection.call(request, position === 0 ? done : nothing),
      )
      return () => {
        for (const cancel of cancels) cancel()
      }
    }
    let target: number | undefined
    if (request.method === "resources/unsubscribe" && uri !== undefined) {
      const at = subscribedAt.get(uri)
      subscribedAt.delete(uri)
      target = at !== undefined && ready.includes(at) ? at : undefined
    }
    target ??= leastBusy(ready, loadOf)
    const connection = target === undefined ? undefined : readyOf(target)?.connection
    if (connection === undefined || target === undefined) {
      done(
        new UpstreamError({
          server: server.name,
          code: ErrorCode.ServerUnavailable,
          reason: "is not running",
        }),
      )
      return nothing
    }
    if (request.method === "resources/subscribe" && uri !== undefined) subscribedAt.set(uri, target)
    return connection.call(request, done)
  }
  const send = (message: JsonRpcNotification | JsonRpcResponse): Effect.Effect<void, UpstreamError> =>
    Effect.forEach(readyIndexes(), (index) => (readyOf(index) as ReadyChild).connection.send(message), {
      discard: true,
    })
  const drain = (within: Duration.Duration, reason: UpstreamError) =>
    Effect.forEach(
      readyIndexes(),
      (index) => (readyOf(index) as ReadyChild).connection.drain(within, reason),
      { concurrency: "unbounded", discard: true },
    )
  const link: UpstreamConnection = {
    name: server.name,
    call,
    request: requestThrough(call),
    send,
    // The pool is gone when every instance is: the view's life is the set's.
    exited: Effect.raceAll(
      instances.map((_, index) => Effect.suspend(() => readyOf(index)?.connection.exited ?? Effect.never)),
    ),
    drain,
  }

  /** The same object while the same instance leads, so the Hub sees one life, not a new one per call. */
  let lastReady: { readonly real: ReadyChild; readonly view: ReadyChild } | undefined
  const state = (): ChildState => {
    const ready = readyIndexes()
    const leading = ready[0] === undefined ? undefined : readyOf(ready[0])
    if (leading === undefined) {
      const states = instances.map((instance, index) => {
        const lease = leases[index]
        return lease === undefined ? ({ _tag: "Starting" } as const) : instance.mux.viewState(lease)
      })
      return states.find((one) => one._tag === "Starting") ?? states[0] ?? { _tag: "Starting" }
    }
    if (lastReady?.real === leading) return lastReady.view
    lastReady = { real: leading, view: { ...leading, connection: link } }
    return lastReady.view
  }

  // A change of one instance reaches the session only when the view itself goes up or down.
  let seen: ChildState | undefined
  const pooledHooks: LeaseHooks = {
    ...hooks,
    onStateChange: () =>
      Effect.suspend(() => {
        const previous = seen ?? { _tag: "Starting" }
        const next = state()
        seen = next
        if (view === undefined || (previous._tag === "Ready") === (next._tag === "Ready")) return Effect.void
        return hooks.onStateChange(view, previous, next)
      }),
  }
  const leases = instances.map((instance) => open(instance, pooledHooks))
  view = {
    server,
    state,
    settled: Effect.forEach(instances, (instance) => instance.child.settled, {
      concurrency: "unbounded",
      discard: true,
    }),
    restarts: () => instances.reduce((sum, instance) => sum + (instance.child.restarts?.() ?? 0), 0),
    readySince: () => {
      const times = instances.flatMap((instance) => instance.child.readySince?.() ?? [])
      return times.length === 0 ? undefined : Math.min(...times)
    },
  }
  seen = state()
  for (const lease of leases) lease.view = view
  return { leases, view }
}
