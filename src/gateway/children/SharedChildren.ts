/**
 * The children that outlive sessions: one per `shared` server (or `instances` of them), one per
 * identity for an `identity` server. The service owns them; a session holds a lease, which gives it
 * a child that looks like its own (same state, same connection interface) while multiplex.ts keeps
 * the sessions apart. A child nobody leases stops after its idleTimeout; `start: eager` starts a
 * shared server with the gateway. Reloads: a removed or changed server's children drain and stop
 * (sessions lease the new version). It also keeps the list of every running child for the admin.
 */
import { Context, Duration, Effect, ExecutionStrategy, Exit, Fiber, Layer, Scope, Stream } from "effect"
import { ErrorCode } from "../../shared/jsonRpc.js"
import { openGate } from "../../shared/streams.js"
import { version } from "../../shared/version.js"
import { type ChildServer, GatewayConfig, resolveIdentity, sharingOf } from "../config/GatewayConfig.js"
import { sameServer } from "../config/serverDiff.js"
import { UpstreamError } from "../errors.js"
import { latestHandshakeVersion } from "../hub/mcp.js"
import { Catalog } from "./Catalog.js"
import { ChildBudget } from "./ChildBudget.js"
import { ChildRegistry, type RunningChild } from "./ChildRegistry.js"
import { type ClientHandshake, type SupervisedChild, superviseChild } from "./ChildSupervisor.js"
import { openPooled } from "./instancePool.js"
import { type LeaseHooks, Multiplexer } from "./multiplex.js"
import { ProtocolMemory } from "./ProtocolMemory.js"
import { Upstream } from "./Upstream.js"

export interface SharedChildrenShape {
  /** A session's hold on the server's shared (or its identity's) child, until the scope closes. */
  readonly lease: (
    server: ChildServer,
    identity: string,
    hooks: LeaseHooks,
  ) => Effect.Effect<SupervisedChild, never, Scope.Scope>
  /** List a session's own child for the admin while the scope is open. */
  readonly track: (child: SupervisedChild, identity: string) => Effect.Effect<void, never, Scope.Scope>
  readonly running: () => ReadonlyArray<RunningChild>
}

export class SharedChildren extends Context.Tag("mcp-ssh/SharedChildren")<
  SharedChildren,
  SharedChildrenShape
>() {}

/**
 * What a shared child is told in initialize: what the gateway can relay from some client. A session
 * whose client lacks one of them gets the child's request for it answered with -32601.
 */
const relayHandshake: ClientHandshake = {
  protocolVersion: latestHandshakeVersion,
  capabilities: { sampling: {}, elicitation: {}, roots: {} },
  clientInfo: { name: "mcp-ssh", version },
}

interface Instance {
  readonly child: SupervisedChild
  readonly mux: Multiplexer
}

interface Pool {
  readonly key: string
  readonly server: ChildServer
  readonly identity: string | undefined
  readonly instances: ReadonlyArray<Instance>
  readonly scope: Scope.CloseableScope
  readonly eager: boolean
  leases: number
  idle: Fiber.RuntimeFiber<void> | undefined
}

const stateLabel = (child: SupervisedChild) => child.state()._tag.toLowerCase()

/** A child that cannot be started for this identity: a session sees it down, with the reason. */
const refusedChild = (server: ChildServer, reason: string): SupervisedChild => ({
  server,
  state: () => ({ _tag: "Down", reason, retryInMillis: 0 }),
  settled: Effect.void,
})

export const SharedChildrenLive = Layer.scoped(
  SharedChildren,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const upstream = yield* Upstream
    const catalog = yield* Catalog
    const budget = yield* ChildBudget
    const serviceScope = yield* Effect.scope
    const pools = new Map<string, Pool>()
    const tracked = new Map<SupervisedChild, string>()
    const lock = yield* Effect.makeSemaphore(1)
    const registry = yield* ChildRegistry
    const memory = yield* ProtocolMemory

    const keyOf = (server: ChildServer, identity: string) =>
      sharingOf(server).scope === "identity" ? `${server.name}\u0000${identity}` : server.name

    const makePool = (server: ChildServer, identity: string | undefined, eager: boolean) =>
      Effect.gen(function* () {
        const sharing = sharingOf(server)
        const resolved = identity === undefined ? server : resolveIdentity(server, identity)
        if (typeof resolved === "string") return resolved
        const scope = yield* Scope.fork(serviceScope, ExecutionStrategy.sequential)
        const count = sharing.scope === "shared" ? sharing.instances : 1
        const instances: Array<Instance> = []
        for (let index = 0; index < count; index++) {
          const mux = new Multiplexer(server.name, (text) => Effect.logWarning(text))
          const child = yield* superviseChild(
            upstream,
            resolved,
            {
              maxLineBytes: settings.maxLineBytes,
              stopTimeout: Duration.seconds(settings.childStopTimeout),
              startupTimeout: Duration.seconds(settings.startupTimeout),
              // One slow client must not stall the others: the child is read as fast as it writes.
              outputReady: openGate,
              scope: sharing.scope,
              budget,
              memory,
              ...(identity === undefined ? {} : { owner: identity }),
            },
            {
              handshake: Effect.succeed(relayHandshake),
              logLevel: () => mux.level(),
              onMessage: (_child, connection, message) => mux.route(connection, message),
              onStateChange: (_child, previous, next) => mux.stateChanged(previous, next),
            },
          ).pipe(Scope.extend(scope))
          mux.attach(child)
          instances.push({ child, mux })
        }
        const pool: Pool = {
          key: keyOf(server, identity ?? ""),
          server,
          identity,
          instances,
          scope,
          eager,
          leases: 0,
          idle: undefined,
        }
        pools.set(pool.key, pool)
        yield* Effect.logInfo(
          `started ${sharing.scope} server '${server.name}'${identity === undefined ? "" : ` for identity '${identity}'`} (${count} ${count === 1 ? "child" : "children"})`,
        )
        return pool
      })

    /** Calls in flight finish (up to the server's timeout), then the children stop. */
    const retire = (pool: Pool, why: string) =>
      Effect.suspend(() => {
        if (pools.get(pool.key) === pool) pools.delete(pool.key)
        const reason = new UpstreamError({
          server: pool.server.name,
          code: ErrorCode.ServerUnavailable,
          reason: why,
        })
        return Effect.forEach(
          pool.instances,
          ({ child }) => {
            const state = child.state()
            return state._tag === "Ready"
              ? state.connection.drain(Duration.seconds(pool.server.requestTimeout), reason)
              : Effect.void
          },
          { concurrency: "unbounded", discard: true },
        ).pipe(
          Effect.zipRight(Scope.close(pool.scope, Exit.void)),
          Effect.interruptible,
          Effect.forkIn(serviceScope),
          Effect.asVoid,
        )
      })

    const idleStop = (pool: Pool) =>
      Effect.suspend(() => {
        const { idleTimeout } = sharingOf(pool.server)
        if (pool.eager || idleTimeout === 0) return Effect.void
        return Effect.sleep(Duration.seconds(idleTimeout)).pipe(
          Effect.zipRight(
            lock.withPermits(1)(
              Effect.suspend(() => {
                if (pool.leases > 0 || pools.get(pool.key) !== pool) return Effect.void
                pools.delete(pool.key)
                return Effect.logInfo(
                  `stopped idle server '${pool.server.name}' after ${idleTimeout}s unused`,
                ).pipe(Effect.zipRight(Scope.close(pool.scope, Exit.void)))
              }),
            ),
          ),
          // Started from a session's finalizer, which is uninterruptible: the timer must not be.
          Effect.interruptible,
          Effect.forkIn(serviceScope),
          Effect.flatMap((fiber) =>
            Effect.sync(() => {
              pool.idle = fiber
            }),
          ),
        )
      })

    /** A session let go of the pool: the last one starts its idle timer. */
    const released = (pool: Pool) => {
      pool.leases--
      return pool.leases === 0 && pools.get(pool.key) === pool ? idleStop(pool) : Effect.void
    }

    const lease = (server: ChildServer, identity: string, hooks: LeaseHooks) =>
      Effect.gen(function* () {
        const sharing = sharingOf(server)
        const owner = sharing.scope === "identity" ? identity : undefined
        const pool = yield* lock.withPermits(1)(
          Effect.gen(function* () {
            const found = pools.get(keyOf(server, identity))
            if (found !== undefined && sameServer(found.server, server)) return found
            if (found !== undefined) yield* retire(found, "was changed and restarted")
            return yield* makePool(server, owner, false)
          }),
        )
        if (typeof pool === "string") return refusedChild(server, pool)
        if (pool.idle !== undefined) {
          const idle = pool.idle
          pool.idle = undefined
          yield* Fiber.interrupt(idle)
        }
        // Several instances: the session leases them all and each call goes to the least busy one.
        if (pool.instances.length > 1) {
          const pooled = yield* Effect.acquireRelease(
            Effect.sync(() => {
              pool.leases++
              return openPooled(server, pool.instances, hooks, (instance, instanceHooks) =>
                instance.mux.open(identity, instanceHooks),
              )
            }),
            (pooled) =>
              Effect.forEach(
                pool.instances,
                (instance, index) => {
                  const held = pooled.leases[index]
                  return held === undefined ? Effect.void : instance.mux.release(held)
                },
                { discard: true },
              ).pipe(Effect.zipRight(Effect.suspend(() => released(pool)))),
          )
          return pooled.view
        }
        const instance = pool.instances[0] as Instance
        const held = yield* Effect.acquireRelease(
          Effect.sync(() => {
            pool.leases++
            return instance.mux.open(identity, hooks)
          }),
          (held) => instance.mux.release(held).pipe(Effect.zipRight(Effect.suspend(() => released(pool)))),
        )
        const view: SupervisedChild = {
          server,
          state: () => instance.mux.viewState(held),
          settled: instance.child.settled,
          restarts: () => instance.child.restarts?.() ?? 0,
          readySince: () => instance.child.readySince?.(),
        }
        held.view = view
        return view
      })

    const track = (child: SupervisedChild, identity: string) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          tracked.set(child, identity)
        }),
        () => Effect.sync(() => tracked.delete(child)),
      )

    const pidOf = (child: SupervisedChild) => {
      const state = child.state()
      return state._tag === "Ready" ? state.connection.pid : undefined
    }

    const running = (): ReadonlyArray<RunningChild> => [
      ...[...pools.values()].flatMap((pool) =>
        pool.instances.map(({ child, mux }) => ({
          server: pool.server.name,
          scope: sharingOf(pool.server).scope,
          state: stateLabel(child),
          pid: pidOf(child),
          identity: pool.identity,
          sessions: mux.leases.size,
          readySince: child.readySince?.(),
          restarts: child.restarts?.() ?? 0,
        })),
      ),
      ...[...tracked.entries()].map(([child, identity]) => ({
        server: child.server.name,
        scope: "session",
        state: stateLabel(child),
        pid: pidOf(child),
        identity,
        sessions: 1,
        readySince: child.readySince?.(),
        restarts: child.restarts?.() ?? 0,
      })),
    ]

    // Follow reloads: a removed or changed server's children go; eager shared servers start.
    const follow = (servers: ReadonlyArray<ChildServer>) =>
      lock.withPermits(1)(
        Effect.gen(function* () {
          for (const pool of [...pools.values()]) {
            const next = servers.find((server) => server.name === pool.server.name)
            if (next === undefined) yield* retire(pool, "was removed")
            else if (!sameServer(next, pool.server)) yield* retire(pool, "was changed and restarted")
          }
          for (const server of servers) {
            const sharing = sharingOf(server)
            if (sharing.scope !== "shared" || sharing.start !== "eager" || pools.has(server.name)) continue
            yield* makePool(server, undefined, true)
          }
        }),
      )
    yield* catalog.changes.pipe(
      Stream.runForEach((configured) => follow(configured.servers)),
      Effect.forkScoped,
    )

    yield* registry.provide(running)
    return { lease, track, running } satisfies SharedChildrenShape
  }),
)
