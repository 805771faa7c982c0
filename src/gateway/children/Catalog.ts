/**
 * The configured servers and what each offers, learned at gateway start (and for new or changed
 * servers at each reload) by starting it, finding out its protocol (openChild.ts) and listing its
 * tools and prompts. It lets
 * the gateway refuse a configuration whose merged names collide before any client sees it, and
 * declare a slow server's capabilities before it is up.
 */
import { Context, Duration, Effect, Layer, Option, type Scope, type Stream, SubscriptionRef } from "effect"
import {
  ErrorCode,
  errorResponse,
  isObject,
  isRequest,
  type JsonObject,
  type JsonRpcResponse,
} from "../../shared/jsonRpc.js"
import { openGate } from "../../shared/streams.js"
import { version } from "../../shared/version.js"
import type { AccessPolicy } from "../access/accessConfig.js"
import { type ChildServer, GatewayConfig } from "../config/GatewayConfig.js"
import { diffServers, type ServerDiff } from "../config/serverDiff.js"
import { ConfigError } from "../errors.js"
import { latestHandshakeVersion } from "../hub/mcp.js"
import { exposedName, findCollisions, type NamedEntry } from "../hub/naming.js"
import { openChild } from "./openChild.js"
import { ProtocolMemory, type ProtocolMemoryShape } from "./ProtocolMemory.js"
import { Upstream, type UpstreamConnection } from "./Upstream.js"

export interface ServerProfile {
  readonly capabilities: JsonObject
  readonly instructions: string | undefined
}

/**
 * What sessions follow: the servers and the access policy, published together so that a session
 * never sees new servers under an old policy (which could briefly widen what it may use).
 */
export interface Configured {
  readonly servers: ReadonlyArray<ChildServer>
  /** Absent: no `access` object, everything allowed. */
  readonly access: AccessPolicy | undefined
}

export interface CatalogShape {
  /** Profiles of the servers that could be probed; a server that failed its probe has none. */
  readonly profile: (server: string) => Option.Option<ServerProfile>
  /** The configured servers as they stand (enabled ones, in config order). */
  readonly servers: () => ReadonlyArray<ChildServer>
  /** The access policy as it stands. */
  readonly access: () => AccessPolicy | undefined
  /** The servers and policy as they stand, together. */
  readonly configured: () => Configured
  /** The configured servers and policy now, then after each reload (gateway-wide followers). */
  readonly changes: Stream.Stream<Configured>
  /**
   * Call `onChange` after each reload until the scope closes, and at once if the catalog is no
   * longer `basis` (a reload landed while the caller was starting). A plain callback, for the many
   * sessions: it must only hand the change over, not work in the caller's stead.
   */
  readonly follow: (
    basis: Configured,
    onChange: (configured: Configured) => void,
  ) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Adopt a new set of servers and policy: probe the servers that are new, changed or unprobed,
   * check the merged names of the whole set, then publish both. On a collision nothing changes.
   */
  readonly replace: (
    servers: ReadonlyArray<ChildServer>,
    access?: AccessPolicy,
  ) => Effect.Effect<ServerDiff, ConfigError>
  /** Why a server failed its last probe (for /health); none for a server that passed it. */
  readonly probeFailure: (server: string) => Option.Option<string>
}

export class Catalog extends Context.Tag("mcp-ssh/Catalog")<Catalog, CatalogShape>() {}

/** Every page of a list, following the server's cursors (bounded, in case a server loops). */
export const listAll = (connection: UpstreamConnection, method: string, itemsKey: string) =>
  Effect.gen(function* () {
    const items: Array<unknown> = []
    let cursor: string | undefined
    for (let page = 0; page < 1000; page++) {
      const response: JsonRpcResponse = yield* connection.request({
        jsonrpc: "2.0",
        id: `list-${page}`,
        method,
        ...(cursor === undefined ? {} : { params: { cursor } }),
      })
      const result = response.result
      if (!isObject(result)) break
      const pageItems = result[itemsKey]
      if (Array.isArray(pageItems)) items.push(...pageItems)
      cursor =
        typeof result.nextCursor === "string" && result.nextCursor !== "" ? result.nextCursor : undefined
      if (cursor === undefined) break
    }
    return items
  })

const namesOf = (items: ReadonlyArray<unknown>): Array<string> =>
  items.flatMap((item) => (isObject(item) && typeof item.name === "string" ? [item.name] : []))

interface ProbeResult {
  readonly server: ChildServer
  readonly profile: ServerProfile
  readonly tools: ReadonlyArray<string>
  readonly prompts: ReadonlyArray<string>
}

const probe = (
  upstream: Upstream["Type"],
  memory: ProtocolMemoryShape,
  server: ChildServer,
  options: { maxLineBytes: number; timeout: Duration.Duration },
) =>
  Effect.gen(function* () {
    // The same start as a session's child (server/discover or initialize), so a modern-only server
    // is profiled too, and one that exits on server/discover is remembered before any session.
    const { connection, result } = yield* openChild({
      upstream,
      server,
      process: {
        maxLineBytes: options.maxLineBytes,
        stopTimeout: Duration.seconds(1),
        requestTimeout: options.timeout,
        // Nobody reads the probe's output but the probe itself.
        outputReady: openGate,
      },
      handshake: Effect.succeed({
        protocolVersion: latestHandshakeVersion,
        // Servers offer some tools only to clients that can sample, elicit or list roots: claim all,
        // so every name that could collide is seen.
        capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } },
        clientInfo: { name: "mcp-ssh-probe", version },
      }),
      startupTimeout: options.timeout,
      memory,
      // Nobody is there to answer a request the server makes during the probe.
      deliver: (connection, message) =>
        isRequest(message)
          ? connection
              .send(
                errorResponse(message.id, {
                  code: ErrorCode.MethodNotFound,
                  message: "not available while probing",
                }),
              )
              .pipe(Effect.ignore)
          : Effect.void,
    })
    const capabilities = isObject(result.capabilities) ? result.capabilities : {}
    const tools =
      capabilities.tools === undefined ? [] : namesOf(yield* listAll(connection, "tools/list", "tools"))
    const prompts =
      capabilities.prompts === undefined ? [] : namesOf(yield* listAll(connection, "prompts/list", "prompts"))
    return {
      server,
      profile: {
        capabilities,
        instructions: typeof result.instructions === "string" ? result.instructions : undefined,
      },
      tools,
      prompts,
    } satisfies ProbeResult
  }).pipe(Effect.scoped, Effect.timeout(options.timeout))

const describeEntry = (kind: string, entry: NamedEntry) =>
  `${kind} '${entry.name}' of server '${entry.server}'`

const checkCollisions = (configPath: string, probed: Iterable<ProbeResult>) =>
  Effect.gen(function* () {
    const results = [...probed]
    for (const [kind, pick] of [
      ["tool", (result: ProbeResult) => result.tools],
      ["prompt", (result: ProbeResult) => result.prompts],
    ] as const) {
      const entries = results.flatMap((result) =>
        pick(result).map((name) => ({
          server: result.server.name,
          name,
          exposed: exposedName(result.server.name, result.server.prefix, name),
        })),
      )
      const collisions = findCollisions(entries)
      if (collisions.length > 0) {
        return yield* new ConfigError({
          message: `${configPath}: merged names collide; give one server a different "prefix":\n${collisions
            .map(
              ([first, second]) =>
                `  '${first.exposed}': ${describeEntry(kind, first)} and ${describeEntry(kind, second)}`,
            )
            .join("\n")}`,
        })
      }
    }
  })

export const CatalogLive = Layer.effect(
  Catalog,
  Effect.gen(function* () {
    const config = yield* GatewayConfig
    const upstream = yield* Upstream
    const memory = yield* ProtocolMemory
    const timeout = Duration.seconds(config.settings.startupTimeout)
    /** Each server's probe: its result, or why it failed (logged; the server is still tried per session). */
    const probeEach = (servers: ReadonlyArray<ChildServer>) =>
      Effect.forEach(
        servers,
        (server) =>
          probe(upstream, memory, server, { maxLineBytes: config.settings.maxLineBytes, timeout }).pipe(
            // A server left out is said once, here; sessions do not start it.
            Effect.tapErrorTag("ChildLeftOut", (leftOut) =>
              Effect.logError(`${leftOut.message}; the other servers go on without it`),
            ),
            Effect.mapError((error) =>
              error._tag === "TimeoutException"
                ? `no answer within ${Duration.format(timeout)}`
                : error.message,
            ),
            Effect.tapError((reason) =>
              memory.leftOut(server) !== undefined
                ? Effect.void
                : Effect.logWarning(
                    `could not probe server '${server.name}' (${reason}); it is still tried for each session`,
                  ),
            ),
            Effect.either,
            Effect.map((outcome) => [server.name, outcome] as const),
          ),
        { concurrency: "unbounded" },
      )

    /** Successful probes of the servers in `current`, by name; owned by `replace` and the start. */
    let probed = new Map<string, ProbeResult>()
    let failures = new Map<string, string>()
    let configured: Configured = { servers: [], access: undefined }
    const current = yield* SubscriptionRef.make<Configured>(configured)
    const followers = new Set<(configured: Configured) => void>()

    const adopt = (servers: ReadonlyArray<ChildServer>, access: AccessPolicy | undefined, diff: ServerDiff) =>
      Effect.gen(function* () {
        const kept = diff.unchanged.flatMap((server) => {
          const result = probed.get(server.name)
          return result === undefined ? [] : [result]
        })
        const keptNames = new Set(kept.map((result) => result.server.name))
        const outcomes = yield* probeEach(
          [...diff.added, ...diff.changed, ...diff.unchanged].filter((server) => !keptNames.has(server.name)),
        )
        const fresh = outcomes.flatMap(([, outcome]) => (outcome._tag === "Right" ? [outcome.right] : []))
        const next = new Map([...kept, ...fresh].map((result) => [result.server.name, result]))
        yield* checkCollisions(config.configPath, next.values())
        for (const result of fresh) {
          yield* Effect.logInfo(
            `server '${result.server.name}': ${result.tools.length} tool(s), ${result.prompts.length} prompt(s)`,
          )
        }
        probed = next
        failures = new Map(
          outcomes.flatMap(([name, outcome]) =>
            outcome._tag === "Left" ? [[name, outcome.left] as const] : [],
          ),
        )
        configured = { servers, access }
        yield* SubscriptionRef.set(current, configured)
        for (const follower of followers) follower(configured)
        return diff
      })

    yield* adopt(config.servers, config.access, diffServers([], config.servers))
    // One reload at a time; the Reloader serializes too, this keeps the Catalog right on its own.
    const serialized = yield* Effect.makeSemaphore(1)
    return {
      profile: (server: string) => Option.fromNullable(probed.get(server)?.profile),
      servers: () => configured.servers,
      access: () => configured.access,
      configured: () => configured,
      probeFailure: (server: string) => Option.fromNullable(failures.get(server)),
      changes: current.changes,
      follow: (basis, onChange) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            followers.add(onChange)
            if (configured !== basis) onChange(configured)
          }),
          () => Effect.sync(() => followers.delete(onChange)),
        ),
      replace: (servers: ReadonlyArray<ChildServer>, access?: AccessPolicy) =>
        serialized.withPermits(1)(
          Effect.suspend(() => adopt(servers, access, diffServers(configured.servers, servers))),
        ),
    } satisfies CatalogShape
  }),
)
