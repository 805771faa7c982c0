/**
 * Warm spares for session servers (`"spares": N`): N children per server started and initialized
 * ahead of the sessions, so a new session takes one instead of waiting for a spawn; each one taken
 * is replaced in the background. A spare is initialized with what the gateway can relay (it does not
 * know its client yet), so it is taken once the client's initialize is known, and only by a client
 * it fits (spareFits); once taken, a request of the child for a capability its client lacks gets
 * -32601. A server whose config names `${MCP_SSH_IDENTITY}` gets no spares (whose identity?).
 * Reloads: spares of a removed or changed server stop; new ones start for the new version.
 */
import { Context, Duration, Effect, ExecutionStrategy, Exit, Layer, Scope, Stream } from "effect"
import { ErrorCode, errorResponse, isObject, isRequest, type JsonObject } from "../../shared/jsonRpc.js"
import { type OutputGate, openGate } from "../../shared/streams.js"
import { version } from "../../shared/version.js"
import { type ChildServer, GatewayConfig, sharingOf } from "../config/GatewayConfig.js"
import { sameServer } from "../config/serverDiff.js"
import { latestHandshakeVersion } from "../hub/mcp.js"
import { Catalog } from "./Catalog.js"
import { ChildBudget } from "./ChildBudget.js"
import type { ClientHandshake, WarmChild } from "./ChildSupervisor.js"
import { capabilityFor } from "./multiplex.js"
import { openChild } from "./openChild.js"
import { ProtocolMemory } from "./ProtocolMemory.js"
import { type ChildMessage, Upstream, type UpstreamConnection } from "./Upstream.js"

export interface SparesShape {
  /** A warm child of this server for a session, if one is ready; its scope becomes the caller's. */
  readonly take: (server: ChildServer) => Effect.Effect<WarmChild | undefined, never, Scope.Scope>
  /** Spares ready now, per server (for tests and the log). */
  readonly ready: (server: string) => number
}

export class Spares extends Context.Tag("mcp-ssh/Spares")<Spares, SparesShape>() {}

interface Spare {
  readonly server: ChildServer
  readonly scope: Scope.CloseableScope
  readonly connection: UpstreamConnection
  readonly result: JsonObject
  readonly protocolVersion: string
  /** Where its messages go and what its output waits on: the service's until a session adopts it. */
  readonly target: {
    onMessage: (connection: UpstreamConnection, message: ChildMessage) => Effect.Effect<void>
    outputReady: OutputGate
  }
}

/**
 * What a spare is told in initialize, before its client is known: what the gateway can relay. A
 * client's missing capability is covered by guardCapabilities; one it has beyond these is not, so
 * such a client gets no spare (spareFits).
 */
const relayCapabilities: JsonObject = {
  sampling: {},
  elicitation: { form: {} },
  roots: { listChanged: true },
}

/** Whether `inner` says nothing `outer` does not: every key, at every depth, with the same leaves. */
const within = (inner: unknown, outer: unknown): boolean => {
  if (!isObject(inner) || !isObject(outer)) return inner === outer
  return Object.entries(inner).every(([key, value]) => key in outer && within(value, outer[key]))
}

/**
 * Whether a spare, initialized ahead with relayCapabilities, can serve this client as a child started
 * for it would: the client has no capability the spare was not told of (a sub-capability such as URL
 * elicitation or sampling with tools, `experimental`), since a child cannot be initialized again;
 * otherwise the session starts its own child. The version is not compared: a spare speaks the newest
 * with the gateway, as a shared child does, and its answers reach an older client as they are.
 */
export const spareFits = (client: ClientHandshake): boolean => {
  const capabilities = client.capabilities
  // An empty elicitation capability means form mode (MCP 2025-11-25).
  const elicitation = capabilities.elicitation
  const normalized =
    isObject(elicitation) && Object.keys(elicitation).length === 0
      ? { ...capabilities, elicitation: { form: {} } }
      : capabilities
  return within(normalized, relayCapabilities)
}

/** Until a session takes it, a spare's own requests are refused and its notifications dropped. */
const idle = (connection: UpstreamConnection, message: ChildMessage) =>
  isRequest(message)
    ? connection
        .send(errorResponse(message.id, { code: ErrorCode.MethodNotFound, message: "no client yet" }))
        .pipe(Effect.ignore)
    : Effect.void

/** A delay before trying again after a spare failed to start, so a broken server does not spin. */
const retryDelay = Duration.seconds(5)

export const SparesLive = Layer.scoped(
  Spares,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const upstream = yield* Upstream
    const catalog = yield* Catalog
    const budget = yield* ChildBudget
    const memory = yield* ProtocolMemory
    const serviceScope = yield* Effect.scope
    const pools = new Map<string, Array<Spare>>()
    /** The version of each server spares are kept for; a reload replaces it. */
    const wanted = new Map<string, ChildServer>()

    const startOne = (server: ChildServer): Effect.Effect<void> =>
      Effect.gen(function* () {
        if (wanted.get(server.name) !== server) return
        const scope = yield* Scope.fork(serviceScope, ExecutionStrategy.sequential)
        const started = yield* Effect.gen(function* () {
          yield* budget.take(undefined)
          const target: Spare["target"] = { onMessage: idle, outputReady: openGate }
          // The same start as a session's child: a modern server's spare is probed and wrapped too.
          const { connection, result, protocolVersion } = yield* openChild({
            upstream,
            server,
            process: {
              maxLineBytes: settings.maxLineBytes,
              stopTimeout: Duration.seconds(settings.childStopTimeout),
              requestTimeout: Duration.seconds(server.requestTimeout),
              outputReady: { wait: (resume) => target.outputReady.wait(resume) },
            },
            handshake: Effect.succeed({
              protocolVersion: latestHandshakeVersion,
              capabilities: relayCapabilities,
              clientInfo: { name: "mcp-ssh", version },
            }),
            startupTimeout: Duration.seconds(settings.startupTimeout),
            memory,
            deliver: (connection, message) => target.onMessage(connection, message),
          })
          return { connection, result, protocolVersion, target }
        }).pipe(Scope.extend(scope), Effect.either)
        if (started._tag === "Left") {
          yield* Scope.close(scope, Exit.void)
          const reason = started.left.message
          // A server that speaks no version the gateway speaks gets no spares; its sessions say why.
          if (started.left._tag === "ChildLeftOut")
            return yield* Effect.logWarning(`no spares of server '${server.name}': ${reason}`)
          yield* Effect.logWarning(`a spare of server '${server.name}' did not start: ${reason}`)
          return yield* Effect.sleep(retryDelay).pipe(Effect.zipRight(startOne(server)))
        }
        const { connection, result, protocolVersion, target } = started.right
        const spare: Spare = { server, scope, connection, result, protocolVersion, target }
        const pool = pools.get(server.name) ?? []
        pools.set(server.name, pool)
        pool.push(spare)
        yield* Effect.logDebug(`a spare of server '${server.name}' is ready (${pool.length} ready)`)
        // A spare that dies while waiting is replaced.
        yield* connection.exited.pipe(
          Effect.flatMap(() =>
            Effect.suspend(() => {
              const index = pool.indexOf(spare)
              if (index === -1) return Effect.void
              pool.splice(index, 1)
              return Scope.close(scope, Exit.void).pipe(Effect.zipRight(startOne(server)))
            }),
          ),
          Effect.interruptible,
          Effect.forkIn(scope),
        )
      }).pipe(Effect.interruptible)

    const replenish = (server: ChildServer) =>
      startOne(server).pipe(Effect.forkIn(serviceScope), Effect.asVoid)

    const take = (server: ChildServer) =>
      Effect.gen(function* () {
        const pool = pools.get(server.name)
        const found = pool?.findIndex((spare) => sameServer(spare.server, server)) ?? -1
        if (pool === undefined || found === -1) return undefined
        const [spare] = pool.splice(found, 1)
        if (spare === undefined) return undefined
        // The spare now ends with the session's child, not with the service.
        yield* Effect.addFinalizer(() => Scope.close(spare.scope, Exit.void))
        yield* replenish(server)
        const warm: WarmChild = {
          adopt: (onMessage, outputReady) => {
            spare.target.outputReady = outputReady
            spare.target.onMessage = onMessage
            return {
              connection: spare.connection,
              result: spare.result,
              protocolVersion: spare.protocolVersion,
            }
          },
        }
        return warm
      })

    const follow = (servers: ReadonlyArray<ChildServer>) =>
      Effect.gen(function* () {
        for (const [name, pool] of pools) {
          const next = servers.find((server) => server.name === name)
          if (next !== undefined && sameServer(next, wanted.get(name) ?? next)) continue
          pools.delete(name)
          wanted.delete(name)
          yield* Effect.forEach(pool, (spare) => Scope.close(spare.scope, Exit.void), { discard: true })
        }
        for (const server of servers) {
          const { scope, spares } = sharingOf(server)
          const current = wanted.get(server.name)
          if (scope !== "session" || spares === 0 || (current !== undefined && sameServer(current, server)))
            continue
          if (JSON.stringify([server.env, server.args, server.cwd]).includes("${MCP_SSH_IDENTITY}")) continue
          wanted.set(server.name, server)
          for (let index = 0; index < spares; index++) yield* replenish(server)
        }
      })
    yield* catalog.changes.pipe(
      Stream.runForEach((configured) => follow(configured.servers)),
      Effect.forkScoped,
    )

    return {
      take: (server) => (sharingOf(server).spares > 0 ? take(server) : Effect.succeed(undefined)),
      ready: (name) => pools.get(name)?.length ?? 0,
    } satisfies SparesShape
  }),
)

/** A taken spare's requests for what its client cannot do are answered here, with -32601. */
export const guardCapabilities =
  (
    clientCapabilities: () => JsonObject | undefined,
    onMessage: (connection: UpstreamConnection, message: ChildMessage) => Effect.Effect<void>,
  ) =>
  (connection: UpstreamConnection, message: ChildMessage): Effect.Effect<void> => {
    if (!isRequest(message)) return onMessage(connection, message)
    const needed = capabilityFor[message.method]
    const capabilities = clientCapabilities()
    if (needed === undefined || capabilities === undefined || capabilities[needed] !== undefined)
      return onMessage(connection, message)
    return connection
      .send(
        errorResponse(message.id, {
          code: ErrorCode.MethodNotFound,
          message: `Method not found: the client does not support ${needed}`,
        }),
      )
      .pipe(Effect.ignore)
  }
