/**
 * Keeps one child MCP server of a session running: starts it, finds out which protocol it speaks
 * (server/discover, else the initialize handshake with the client's capabilities), relays what it
 * sends, and when it stops restarts it with capped exponential backoff. A child that speaks no
 * version the gateway speaks is left out, not restarted. Closing the session's scope stops it for good.
 */
import { Deferred, Duration, Effect, Exit, type Scope } from "effect"
import { ErrorCode, isObject, type JsonObject } from "../../shared/jsonRpc.js"
import type { OutputGate } from "../../shared/streams.js"
import type { ChildServer } from "../config/GatewayConfig.js"
import { ChildLeftOut, UpstreamError } from "../errors.js"
import { Metrics } from "../ops/Metrics.js"
import type { ChildBudgetShape } from "./ChildBudget.js"
import { openChild } from "./openChild.js"
import { makeProtocolMemory, type ProtocolMemoryShape } from "./ProtocolMemory.js"
import type { ChildMessage, Upstream, UpstreamConnection, UpstreamOptions } from "./Upstream.js"

/** What the gateway tells a child in initialize: the client's own version, capabilities and identity. */
export interface ClientHandshake {
  readonly protocolVersion: string
  readonly capabilities: JsonObject
  readonly clientInfo: JsonObject
}

export interface ReadyChild {
  readonly _tag: "Ready"
  readonly connection: UpstreamConnection
  readonly capabilities: JsonObject
  readonly instructions: string | undefined
  readonly protocolVersion: string
}

export type ChildState =
  | { readonly _tag: "Starting" }
  | ReadyChild
  | {
      readonly _tag: "Down"
      readonly reason: string
      readonly retryInMillis: number
      /** It speaks no protocol version the gateway speaks: it is not restarted. */
      readonly leftOut?: boolean
    }

export interface SupervisedChild {
  readonly server: ChildServer
  readonly state: () => ChildState
  /** Completes once the first start has succeeded or failed. */
  readonly settled: Effect.Effect<void>
  /** How often it was restarted, and since when (epoch ms) the current life is ready: for the admin. */
  readonly restarts?: () => number
  readonly readySince?: () => number | undefined
}

export interface SupervisorHooks {
  readonly handshake: Effect.Effect<ClientHandshake>
  readonly logLevel: () => string | undefined
  readonly onMessage: (
    child: SupervisedChild,
    connection: UpstreamConnection,
    message: ChildMessage,
  ) => Effect.Effect<void>
  readonly onStateChange: (
    child: SupervisedChild,
    previous: ChildState,
    next: ChildState,
  ) => Effect.Effect<void>
}

export interface SupervisorOptions extends Omit<UpstreamOptions, "requestTimeout" | "onMessage"> {
  readonly startupTimeout: Duration.Duration
  readonly backoffBase?: Duration.Duration
  readonly backoffCap?: Duration.Duration
  /** Who shares the child, for the metrics' `scope` label (default: session). */
  readonly scope?: string
  /** The process budget: each life takes a place before it spawns. */
  readonly budget?: ChildBudgetShape
  /** The identity whose budget the child counts against (none for a child shared by all). */
  readonly owner?: string
  /** A warm spare for the first life, if one is ready (Spares.ts); its scope becomes the life's. */
  readonly takeSpare?: Effect.Effect<WarmChild | undefined, never, Scope.Scope>
  /** What is known of servers' protocols beyond one child (default: this child's own memory). */
  readonly memory?: ProtocolMemoryShape
}

/** A child started and initialized ahead of its session; `adopt` gives it its session's handlers. */
export interface WarmChild {
  readonly adopt: (
    onMessage: (connection: UpstreamConnection, message: ChildMessage) => Effect.Effect<void>,
    outputReady: OutputGate,
  ) => {
    readonly connection: UpstreamConnection
    readonly result: JsonObject
    readonly protocolVersion: string
  }
}

/** A child that stayed up this long is considered healthy again: its next restart starts fast. */
const stableAfter = Duration.seconds(30)

export const backoffDelay = (
  failures: number,
  base: Duration.Duration,
  cap: Duration.Duration,
): Duration.Duration => Duration.min(Duration.times(base, 2 ** Math.min(failures, 20)), cap)

export const superviseChild = (
  upstream: Upstream["Type"],
  server: ChildServer,
  options: SupervisorOptions,
  hooks: SupervisorHooks,
): Effect.Effect<SupervisedChild, never, Scope.Scope> =>
  Effect.gen(function* () {
    let state: ChildState = { _tag: "Starting" }
    const firstSettled = yield* Deferred.make<void>()
    let restarts = 0
    let readySince: number | undefined
    const child: SupervisedChild = {
      server,
      state: () => state,
      settled: Deferred.await(firstSettled),
      restarts: () => restarts,
      readySince: () => readySince,
    }
    const log = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.annotateLogs(effect, { server: server.name })
    const metrics = yield* Metrics
    const scope = options.scope ?? "session"
    const memory = options.memory ?? makeProtocolMemory()

    const setState = (next: ChildState) =>
      Effect.suspend(() => {
        const previous = state
        state = next
        if (next._tag !== "Starting") Deferred.unsafeDone(firstSettled, Exit.void)
        return hooks.onStateChange(child, previous, next)
      })

    /**
     * A new child: a place in the budget, the process, and the protocol it speaks (openChild.ts):
     * server/discover or initialize with the client's handshake.
     */
    const spawn = Effect.gen(function* () {
      if (options.budget !== undefined) {
        yield* options.budget.take(options.owner).pipe(
          Effect.mapError(
            (refused) =>
              new UpstreamError({
                server: server.name,
                code: ErrorCode.ServerUnavailable,
                reason: refused.message,
              }),
          ),
        )
      }
      return yield* openChild({
        upstream,
        server,
        process: {
          maxLineBytes: options.maxLineBytes,
          stopTimeout: options.stopTimeout,
          requestTimeout: Duration.seconds(server.requestTimeout),
          outputReady: options.outputReady,
        },
        handshake: hooks.handshake,
        startupTimeout: options.startupTimeout,
        memory,
        deliver: (connection, message) => hooks.onMessage(child, connection, message),
      })
    })

    let lives = 0
    /** One life of the child: start, handshake, serve until it exits. Returns how long it was up. */
    const life = Effect.gen(function* () {
      // The first life takes a warm spare when there is one: no spawn, no initialize to wait for.
      const spare = lives++ === 0 && options.takeSpare !== undefined ? yield* options.takeSpare : undefined
      const { connection, result, protocolVersion } =
        spare === undefined
          ? yield* spawn
          : spare.adopt(
              (connection, message) => hooks.onMessage(child, connection, message),
              options.outputReady,
            )
      yield* Effect.acquireRelease(
        Effect.sync(() => metrics.childStarted(server.name, scope, connection.pid)),
        (gone) => Effect.sync(gone),
      )
      const capabilities = isObject(result.capabilities) ? result.capabilities : {}
      const level = hooks.logLevel()
      if (level !== undefined && capabilities.logging !== undefined) {
        yield* connection
          .request({ jsonrpc: "2.0", id: "set-level", method: "logging/setLevel", params: { level } })
          .pipe(Effect.ignore)
      }
      const readyAt = Date.now()
      readySince = readyAt
      yield* setState({
        _tag: "Ready",
        connection,
        capabilities,
        instructions: typeof result.instructions === "string" ? result.instructions : undefined,
        protocolVersion:
          typeof result.protocolVersion === "string" ? result.protocolVersion : protocolVersion,
      })
      yield* log(Effect.logDebug("ready"))
      const exited = yield* connection.exited
      return { reason: exited.reason, upMillis: Date.now() - readyAt }
    }).pipe(Effect.scoped)

    const base = options.backoffBase ?? Duration.millis(250)
    const cap = options.backoffCap ?? Duration.seconds(30)
    const keepRunning = Effect.gen(function* () {
      let failures = 0
      while (true) {
        const outcome = yield* life.pipe(
          Effect.catchTag("ChildLeftOut", (leftOut) => Effect.succeed(leftOut)),
          Effect.either,
        )
        if (outcome._tag === "Right" && outcome.right instanceof ChildLeftOut) {
          const line = `${outcome.right.message}; the other servers go on without it`
          yield* log(outcome.right.known === true ? Effect.logDebug(line) : Effect.logError(line))
          readySince = undefined
          return yield* setState({
            _tag: "Down",
            reason: outcome.right.message,
            retryInMillis: 0,
            leftOut: true,
          })
        }
        // A life that returns ended with the child's own exit; a stop ends it by interruption.
        const ended =
          outcome._tag === "Right" && !(outcome.right instanceof ChildLeftOut) ? outcome.right : undefined
        if (ended !== undefined) metrics.childCrashed(server.name)
        const reason =
          outcome._tag === "Left"
            ? outcome.left.message
            : `server '${server.name}' ${ended?.reason ?? "stopped"}`
        if (ended !== undefined && ended.upMillis >= Duration.toMillis(stableAfter)) failures = 0
        const delay = backoffDelay(failures, base, cap)
        failures++
        yield* log(Effect.logWarning(`${reason}; restarting in ${Duration.format(delay)}`))
        readySince = undefined
        yield* setState({ _tag: "Down", reason, retryInMillis: Duration.toMillis(delay) })
        yield* Effect.sleep(delay)
        metrics.childRestarted(server.name)
        restarts++
        yield* setState({ _tag: "Starting" })
      }
    })
    yield* Effect.forkScoped(keepRunning)
    return child
  })
