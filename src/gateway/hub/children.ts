/**
 * The children of one session: each configured server supervised (started, initialized with the
 * client's handshake, restarted with backoff), and what the other parts ask of them: the connection
 * of a child that is up, a bounded wait for one still starting, the merged view of their
 * capabilities, and the log level fanned out to them.
 */
import { Deferred, Duration, Effect, ExecutionStrategy, Exit, Option, Scope } from "effect"
import {
  ErrorCode,
  errorResponse,
  type JsonObject,
  type JsonRpcId,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../../shared/jsonRpc.js"
import type { CatalogShape } from "../children/Catalog.js"
import type { ChildBudgetShape } from "../children/ChildBudget.js"
import {
  type ClientHandshake,
  type ReadyChild,
  type SupervisedChild,
  type SupervisorHooks,
  type SupervisorOptions,
  superviseChild,
  type WarmChild,
} from "../children/ChildSupervisor.js"
import { withClientCapabilities } from "../children/modernChild.js"
import type { ProtocolMemoryShape } from "../children/ProtocolMemory.js"
import type { SharedChildrenShape } from "../children/SharedChildren.js"
import { guardCapabilities, type SparesShape, spareFits } from "../children/Spares.js"
import type { Upstream } from "../children/Upstream.js"
import { type ChildServer, resolveIdentity, sharingOf } from "../config/GatewayConfig.js"
import { sameServer } from "../config/serverDiff.js"
import { UpstreamError } from "../errors.js"
import { mergeCapabilities, mergeInstructions } from "./mcp.js"
import { modernVersion } from "./modern.js"
import type { SessionProtocol } from "./protocol.js"

export interface MergedView {
  readonly capabilities: JsonObject
  readonly instructions: string | undefined
}

/** What a reload did to one session's children. */
export interface ChildrenChange {
  /** Children stopped (after their calls in flight drained): removed, or replaced by a new version. */
  readonly retired: ReadonlyArray<SupervisedChild>
  readonly started: ReadonlyArray<SupervisedChild>
}

export interface SessionChildren {
  /** The session's children now, in config order; a reload replaces the array. */
  readonly all: ReadonlyArray<SupervisedChild>
  readonly ready: (server: string) => ReadyChild | undefined
  /** The child's connection; a child still starting gets up to --startup-wait to come up. */
  readonly whenReady: (server: string) => Effect.Effect<ReadyChild | undefined>
  /** Before deciding a name or URI is unknown, give children still starting their chance. */
  readonly settleStarting: Effect.Effect<void>
  readonly hasCapability: (child: SupervisedChild, capability: string) => boolean
  readonly notRunning: (id: JsonRpcId, server: string) => JsonRpcResponse
  /** Hand the children the client's handshake; fast ones are up when this returns. */
  readonly start: (handshake: ClientHandshake) => Effect.Effect<void>
  /** The merged server as it stands: up children as they are, the others as the probe saw them. */
  readonly mergedView: () => MergedView
  /** Remember the level (restarted children get it too) and send the request to every child that logs. */
  readonly setLevel: (request: JsonRpcRequest) => Effect.Effect<void>
  /**
   * Follow a reload: start new servers, retire removed ones, restart changed ones; leave the rest
   * alone. A retired child's calls in flight get up to its request timeout, then an error.
   */
  readonly apply: (servers: ReadonlyArray<ChildServer>) => Effect.Effect<ChildrenChange>
}

export interface SessionChildrenOptions {
  readonly upstream: Upstream["Type"]
  readonly catalog: CatalogShape
  readonly servers: ReadonlyArray<ChildServer>
  readonly supervisor: SupervisorOptions
  readonly startupWait: Duration.Duration
  readonly protocol: SessionProtocol
  readonly hooks: Pick<SupervisorHooks, "onMessage" | "onStateChange">
  /** Where `shared` and `identity` servers' children come from. */
  readonly shared: SharedChildrenShape
  /** Who the session is: the key of `identity` children, and `${MCP_SSH_IDENTITY}` in a session's own. */
  readonly identity: string
  readonly budget?: ChildBudgetShape
  readonly spares?: SparesShape
  readonly memory?: ProtocolMemoryShape
}

const readyState = (child: SupervisedChild | undefined): ReadyChild | undefined => {
  const state = child?.state()
  return state?._tag === "Ready" ? state : undefined
}

export const makeSessionChildren = (
  options: SessionChildrenOptions,
): Effect.Effect<SessionChildren, never, Scope.Scope> =>
  Effect.gen(function* () {
    const { protocol, startupWait } = options
    const handshake = yield* Deferred.make<ClientHandshake>()
    const sessionScope = yield* Effect.scope
    /** Each child lives in a scope of its own, so a reload can stop one and keep the others. */
    const scopes = new Map<SupervisedChild, Scope.CloseableScope>()
    let clientCapabilities: JsonObject | undefined
    const spares = options.spares
    /** A warm spare, whose requests for what this client cannot do are answered -32601. */
    const takeSpare = (from: SparesShape, server: ChildServer) =>
      // Without a spare ready the child spawns at once, as ever. With one, it is taken once the
      // client's initialize is known: a client the spare does not fit gets its own child.
      Effect.suspend(() =>
        from.ready(server.name) === 0
          ? Effect.succeed(undefined)
          : Deferred.await(handshake).pipe(
              Effect.flatMap((client) => (spareFits(client) ? from.take(server) : Effect.succeed(undefined))),
            ),
      ).pipe(
        Effect.map((warm): WarmChild | undefined =>
          warm === undefined
            ? undefined
            : {
                adopt: (onMessage, outputReady) => {
                  const adopted = warm.adopt(
                    guardCapabilities(() => clientCapabilities, onMessage),
                    outputReady,
                  )
                  // A modern spare's envelope names the spare's capabilities: this client's go instead.
                  return adopted.protocolVersion === modernVersion
                    ? {
                        ...adopted,
                        connection: withClientCapabilities(adopted.connection, () => clientCapabilities),
                      }
                    : adopted
                },
              },
        ),
      )
    const startChild = (server: ChildServer) =>
      Effect.gen(function* () {
        const scope = yield* Scope.fork(sessionScope, ExecutionStrategy.sequential)
        const child =
          sharingOf(server).scope === "session"
            ? yield* startOwn(server, scope)
            : yield* options.shared
                .lease(server, options.identity, {
                  ...options.hooks,
                  clientCapabilities: () => clientCapabilities,
                })
                .pipe(Scope.extend(scope))
        scopes.set(child, scope)
        return child
      })
    /** A child of the session's own; the view keeps the configured server, so reloads compare like with like. */
    const startOwn = (server: ChildServer, scope: Scope.Scope) =>
      Effect.gen(function* () {
        const resolved = resolveIdentity(server, options.identity)
        if (typeof resolved === "string") {
          const refused: SupervisedChild = {
            server,
            state: () => ({ _tag: "Down", reason: resolved, retryInMillis: 0 }),
            settled: Effect.void,
          }
          return refused
        }
        const child = yield* superviseChild(
          options.upstream,
          resolved,
          {
            ...options.supervisor,
            ...(options.budget === undefined ? {} : { budget: options.budget }),
            ...(options.memory === undefined ? {} : { memory: options.memory }),
            ...(spares === undefined || resolved !== server ? {} : { takeSpare: takeSpare(spares, server) }),
            owner: options.identity,
          },
          {
            ...options.hooks,
            handshake: Deferred.await(handshake),
            logLevel: () => protocol.logLevel,
          },
        ).pipe(Scope.extend(scope))
        const view: SupervisedChild = resolved === server ? child : { ...child, server }
        yield* options.shared.track(view, options.identity).pipe(Scope.extend(scope))
        return view
      })
    let all: ReadonlyArray<SupervisedChild> = yield* Effect.forEach(options.servers, startChild)
    let byName = new Map(all.map((child) => [child.server.name, child]))
    const ready = (server: string) => readyState(byName.get(server))
    const hasCapability = (child: SupervisedChild, capability: string) =>
      readyState(child)?.capabilities[capability] !== undefined

    const whenReady = (server: string): Effect.Effect<ReadyChild | undefined> =>
      Effect.suspend(() => {
        const child = byName.get(server)
        if (child === undefined || child.state()._tag !== "Starting") return Effect.succeed(ready(server))
        return child.settled.pipe(
          Effect.timeout(startupWait),
          Effect.ignore,
          Effect.map(() => ready(server)),
        )
      })

    const settleStarting = Effect.suspend(() =>
      Effect.forEach(
        all.filter((child) => child.state()._tag === "Starting"),
        (child) => whenReady(child.server.name),
        { concurrency: "unbounded", discard: true },
      ),
    )

    const notRunning = (id: JsonRpcId, server: string): JsonRpcResponse => {
      const state = byName.get(server)?.state()
      const why =
        state?._tag !== "Down"
          ? "it is still starting"
          : state.leftOut === true
            ? state.reason
            : `${state.reason}; restarting in ${Duration.format(Duration.millis(state.retryInMillis))}`
      return errorResponse(id, {
        code: ErrorCode.ServerUnavailable,
        message: `server '${server}' is not running: ${why}`,
      })
    }

    // Fast children make it into the first answer; slower ones join later with list_changed.
    const start = (params: ClientHandshake) =>
      Effect.sync(() => {
        clientCapabilities = params.capabilities
      }).pipe(
        Effect.zipRight(Deferred.succeed(handshake, params)),
        // Children already up (a running shared server) need no wait, nor its timer.
        Effect.zipRight(
          Effect.suspend(() =>
            all.every((child) => child.state()._tag !== "Starting")
              ? Effect.void
              : Effect.forEach(all, (child) => child.settled, {
                  concurrency: "unbounded",
                  discard: true,
                }).pipe(Effect.timeout(startupWait), Effect.ignore),
          ),
        ),
      )

    const mergedView = () => {
      const known = all.map((child) => {
        const up = readyState(child)
        const profile = Option.getOrUndefined(options.catalog.profile(child.server.name))
        return {
          server: child.server.name,
          capabilities: up?.capabilities ?? profile?.capabilities ?? {},
          instructions: up?.instructions ?? profile?.instructions,
        }
      })
      return {
        capabilities: mergeCapabilities(known.map((entry) => entry.capabilities)),
        instructions: mergeInstructions(known),
      }
    }

    const setLevel = (request: JsonRpcRequest) =>
      Effect.suspend(() => {
        const level = request.params?.level
        protocol.logLevel = typeof level === "string" ? level : undefined
        return Effect.forEach(
          all.filter((child) => hasCapability(child, "logging")),
          (child) =>
            whenReady(child.server.name).pipe(
              Effect.flatMap((up) =>
                up === undefined ? Effect.void : Effect.ignore(up.connection.request(request)),
              ),
            ),
          { concurrency: "unbounded", discard: true },
        )
      })

    /** Calls in flight finish (up to the server's timeout) or fail with `why`; then the child stops. */
    const retire = (child: SupervisedChild, why: string) => {
      const scope = scopes.get(child)
      scopes.delete(child)
      const up = readyState(child)
      const reason = new UpstreamError({
        server: child.server.name,
        code: ErrorCode.ServerUnavailable,
        reason: why,
      })
      const drained =
        up === undefined
          ? Effect.void
          : up.connection.drain(Duration.seconds(child.server.requestTimeout), reason)
      return drained.pipe(
        Effect.zipRight(scope === undefined ? Effect.void : Scope.close(scope, Exit.void)),
        Effect.forkIn(sessionScope),
        Effect.asVoid,
      )
    }

    const apply = (servers: ReadonlyArray<ChildServer>) =>
      Effect.gen(function* () {
        const wanted = new Map(servers.map((server) => [server.name, server]))
        const retired: Array<SupervisedChild> = []
        const started: Array<SupervisedChild> = []
        for (const child of all) {
          const next = wanted.get(child.server.name)
          if (next !== undefined && sameServer(child.server, next)) continue
          retired.push(child)
          yield* retire(child, next === undefined ? "was removed" : "was changed and restarted")
        }
        const next: Array<SupervisedChild> = []
        for (const server of servers) {
          const kept = byName.get(server.name)
          if (kept !== undefined && !retired.includes(kept)) {
            next.push(kept)
            continue
          }
          const child = yield* startChild(server)
          started.push(child)
          next.push(child)
        }
        all = next
        byName = new Map(all.map((child) => [child.server.name, child]))
        return { retired, started } satisfies ChildrenChange
      })

    return {
      get all() {
        return all
      },
      apply,
      ready,
      whenReady,
      settleStarting,
      hasCapability,
      notRunning,
      start,
      mergedView,
      setLevel,
    } satisfies SessionChildren
  })
