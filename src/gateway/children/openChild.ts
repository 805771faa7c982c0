/**
 * One life's start of a child: the process, and the protocol it speaks. `auto` probes with
 * server/discover (discover.ts): a modern child is wrapped so the gateway sees a 2025-era one
 * (modernChild.ts); a legacy one gets initialize on the same process, or on a new one if it exited on
 * the probe (remembered, so that server is not probed again). A pinned protocol skips the guess.
 */
import { Duration, Effect, ExecutionStrategy, Exit, FiberSet, Scope } from "effect"
import { ErrorCode, isObject, type JsonObject } from "../../shared/jsonRpc.js"
import type { ChildServer } from "../config/GatewayConfig.js"
import { ChildLeftOut, UpstreamError } from "../errors.js"
import { modernVersion } from "../hub/modern.js"
import type { ClientHandshake } from "./ChildSupervisor.js"
import {
  classifyDiscover,
  describeOffered,
  discoverRequest,
  type ProbeVerdict,
  probeMillis,
  refusedVersions,
  relayableCapabilities,
} from "./discover.js"
import { makeModernChild } from "./modernChild.js"
import type { ProtocolMemoryShape } from "./ProtocolMemory.js"
import type { ChildMessage, Upstream, UpstreamConnection, UpstreamOptions } from "./Upstream.js"

export interface OpenedChild {
  readonly connection: UpstreamConnection
  /** initialize's result, or for a modern child the discover result (capabilities, instructions). */
  readonly result: JsonObject
  readonly protocolVersion: string
}

export interface OpenChildOptions {
  readonly upstream: Upstream["Type"]
  readonly server: ChildServer
  readonly process: Omit<UpstreamOptions, "onMessage">
  /** The client's handshake; awaited once the process is started, so the spawn does not wait for it. */
  readonly handshake: Effect.Effect<ClientHandshake>
  readonly startupTimeout: Duration.Duration
  readonly memory: ProtocolMemoryShape
  /** Where the child's own messages go, with the connection the gateway uses for it. */
  readonly deliver: (connection: UpstreamConnection, message: ChildMessage) => Effect.Effect<void>
}

const failed = (server: string, reason: string) =>
  new UpstreamError({ server, code: ErrorCode.ServerUnavailable, reason })

export const openChild = (options: OpenChildOptions) =>
  Effect.gen(function* () {
    const { server } = options
    const lifeScope = yield* Effect.scope

    /** A process whose messages go where `target` says: the adapter's, once it is modern. */
    const startProcess = (scope: Scope.Scope) =>
      Effect.gen(function* () {
        const target = { onMessage: options.deliver }
        const connection = yield* options.upstream
          .start(server, {
            ...options.process,
            onMessage: (connection, message) => target.onMessage(connection, message),
          })
          .pipe(Scope.extend(scope))
        return { connection, target }
      })

    /** A child that speaks none of the gateway's versions: remembered, so it is not started again. */
    const leaveOut = (reason: string) =>
      Effect.suspend(() => {
        options.memory.rememberLeftOut(server, reason)
        return new ChildLeftOut({ server: server.name, reason })
      })

    const initialize = (connection: UpstreamConnection) =>
      Effect.gen(function* () {
        const handshake = yield* options.handshake
        const response = yield* connection
          .request({ jsonrpc: "2.0", id: "initialize", method: "initialize", params: { ...handshake } })
          .pipe(
            Effect.timeoutFail({
              duration: options.startupTimeout,
              onTimeout: () =>
                failed(
                  server.name,
                  `did not answer initialize within ${Duration.format(options.startupTimeout)}`,
                ),
            }),
          )
        const offered = refusedVersions(response)
        // A modern server that was slow to answer server/discover: the caller may probe it again.
        if (offered?.includes(modernVersion)) return "offers modern" as const
        if (offered !== undefined) return yield* leaveOut(describeOffered(offered))
        const result = response.result
        if (response.error !== undefined || !isObject(result)) {
          return yield* failed(
            server.name,
            `refused initialize: ${response.error?.message ?? "the result is not an object"}`,
          )
        }
        yield* connection.send({ jsonrpc: "2.0", method: "notifications/initialized" })
        return {
          connection,
          result,
          protocolVersion:
            typeof result.protocolVersion === "string" ? result.protocolVersion : handshake.protocolVersion,
        } satisfies OpenedChild
      })

    const probe = (
      connection: UpstreamConnection,
      handshake: ClientHandshake,
      within: Duration.Duration,
    ): Effect.Effect<ProbeVerdict | "exited"> =>
      connection
        .request(discoverRequest(relayableCapabilities(handshake.capabilities), handshake.clientInfo))
        .pipe(
          Effect.map(classifyDiscover),
          Effect.timeout(within),
          Effect.catchTags({
            TimeoutException: () =>
              Effect.succeed<ProbeVerdict>({ _tag: "Legacy", why: "it did not answer server/discover" }),
            UpstreamError: (error) =>
              Effect.succeed<ProbeVerdict | "exited">(
                error.code === ErrorCode.ServerUnavailable ? "exited" : { _tag: "Legacy", why: error.reason },
              ),
          }),
        )

    const modern = (
      started: Effect.Effect.Success<ReturnType<typeof startProcess>>,
      discover: JsonObject,
      handshake: ClientHandshake,
    ) =>
      Effect.gen(function* () {
        const fibers = yield* FiberSet.make<void>()
        const run = yield* FiberSet.runtime(fibers)<never>()
        const capabilities = isObject(discover.capabilities) ? discover.capabilities : {}
        const child = makeModernChild({
          raw: started.connection,
          capabilities,
          clientCapabilities: handshake.capabilities,
          clientInfo: handshake.clientInfo,
          deliver: options.deliver,
          run: (effect) => {
            run(effect)
          },
        })
        started.target.onMessage = (_connection, message) => child.fromChild(message)
        return {
          connection: child.connection,
          result: discover,
          protocolVersion: modernVersion,
        } satisfies OpenedChild
      })

    /** initialize, where the child is known to want it: a refusal that offers 2026-07-28 is an error. */
    const initializeOnly = (connection: UpstreamConnection) =>
      Effect.flatMap(initialize(connection), (opened) =>
        opened === "offers modern"
          ? failed(server.name, `refused initialize: it speaks only MCP ${modernVersion}`)
          : Effect.succeed(opened),
      )

    const mode = server.protocol ?? "auto"
    const known = options.memory.leftOut(server)
    if (known !== undefined)
      return yield* new ChildLeftOut({ server: server.name, reason: known, known: true })
    if (mode === "2025-11-25" || (mode === "auto" && options.memory.legacyOnly(server))) {
      const { connection } = yield* startProcess(lifeScope)
      return yield* initializeOnly(connection)
    }
    // A pinned modern server gets the whole startup time; auto only a short one (a legacy server
    // that ignores the probe should not hold up the start).
    const probeTime =
      mode === "2026-07-28"
        ? options.startupTimeout
        : Duration.millis(Math.min(probeMillis, Duration.toMillis(options.startupTimeout)))
    // The probe's process is closed early if it exited on the probe, else it lives with the life.
    const probeScope = yield* Scope.fork(lifeScope, ExecutionStrategy.sequential)
    const started = yield* startProcess(probeScope)
    const verdict = yield* probe(started.connection, yield* options.handshake, probeTime)
    if (verdict === "exited") {
      yield* Scope.close(probeScope, Exit.void)
      if (mode === "2026-07-28") return yield* failed(server.name, "exited on server/discover")
      options.memory.rememberLegacy(server)
      yield* Effect.logInfo(
        `server '${server.name}' exited on server/discover: restarted, and spoken to with initialize from now on`,
      )
      const { connection } = yield* startProcess(lifeScope)
      return yield* initializeOnly(connection)
    }
    switch (verdict._tag) {
      case "Modern":
        return yield* modern(started, verdict.discover, yield* options.handshake)
      case "Unsupported":
        yield* Scope.close(probeScope, Exit.void)
        return yield* leaveOut(describeOffered(verdict.offered))
      case "Legacy":
        if (mode === "2026-07-28")
          return yield* failed(
            server.name,
            `does not speak MCP ${modernVersion} (protocol in the config): ${verdict.why}`,
          )
        {
          yield* Effect.logDebug(`server '${server.name}' speaks the initialize handshake: ${verdict.why}`)
          const opened = yield* initialize(started.connection)
          if (opened !== "offers modern") return opened
          // It refused initialize for 2026-07-28: it was only slow to answer the probe. Ask again.
          const handshake = yield* options.handshake
          const again = yield* probe(started.connection, handshake, options.startupTimeout)
          if (again !== "exited" && again._tag === "Modern")
            return yield* modern(started, again.discover, handshake)
          return yield* failed(
            server.name,
            `refused initialize for MCP ${modernVersion}, and server/discover too`,
          )
        }
    }
  })
