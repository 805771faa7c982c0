/**
 * The gateway in process: the real McpSession, Hub, Catalog and Audit over in-memory streams, with
 * scripted fake children in place of processes. All wiring lives here, so tests depend only on the
 * JSON-RPC lines a client sees and on what the fake children receive, never on the Hub's insides.
 *
 *   const gateway = yield* startGateway({ servers: { alpha: { tools: [{ name: "echo" }] } } })
 *   const client = yield* gateway.connect()
 *   yield* client.initialize()
 *   const answer = yield* client.request(1, "tools/call", { name: "alpha__echo", arguments: {} })
 *
 * Timing is the Effect clock's: under `it.effect`/`it.scoped` the TestClock drives the Hub's deadlines
 * and restart backoff (TestClock.adjust, or advanceUntil); under `it.live`/`it.scopedLive` it is real.
 */
import {
  Context,
  Duration,
  Effect,
  Either,
  Fiber,
  FiberRef,
  HashSet,
  Layer,
  Logger,
  Option,
  Schema,
  type Scope,
  TestClock,
} from "effect"
import {
  type AccessPolicy,
  AccessSection,
  checkAccess,
  compileAccess,
} from "../../../src/gateway/access/accessConfig.js"
import { IdentityLimitsLive } from "../../../src/gateway/access/IdentityLimits.js"
import { Catalog, CatalogLive } from "../../../src/gateway/children/Catalog.js"
import { ChildBudgetLive } from "../../../src/gateway/children/ChildBudget.js"
import { ChildRegistryLive } from "../../../src/gateway/children/ChildRegistry.js"
import { ProtocolMemoryLive } from "../../../src/gateway/children/ProtocolMemory.js"
import { SharedChildrenLive } from "../../../src/gateway/children/SharedChildren.js"
import { SparesLive } from "../../../src/gateway/children/Spares.js"
import { type ChildServer, GatewayConfig } from "../../../src/gateway/config/GatewayConfig.js"
import type { ServerDiff } from "../../../src/gateway/config/serverDiff.js"
import { decodeSettings, type GatewaySettings } from "../../../src/gateway/config/settings.js"
import { ConfigError } from "../../../src/gateway/errors.js"
import { type ClientIdentity, HubLive } from "../../../src/gateway/hub/Hub.js"
import { Drain, DrainLive, type DrainShape } from "../../../src/gateway/ops/Drain.js"
import { Audit, type AuditEntry, AuditLive } from "../../../src/gateway/session/Audit.js"
import { McpSession, McpSessionLive } from "../../../src/gateway/session/McpSession.js"
import { connectClient, type TestClient } from "./client.js"
import { type FakeChild, type FakeServerScript, makeFakeUpstream } from "./fakeChild.js"
import { Recorded } from "./recorded.js"

export type { TestClient, WireMessage } from "./client.js"
export {
  ChildError,
  type FakeChild,
  type FakePrompt,
  type FakeResource,
  type FakeServerScript,
  type FakeTool,
  type Reply,
  type ToolCall,
  text,
} from "./fakeChild.js"
export { Recorded } from "./recorded.js"

/** The `_meta` envelope a 2026-07-28 client puts on every request; `extra` overrides its fields. */
export const modernEnvelope = (extra: Record<string, unknown> = {}) => ({
  "io.modelcontextprotocol/protocolVersion": "2026-07-28",
  "io.modelcontextprotocol/clientCapabilities": {},
  "io.modelcontextprotocol/clientInfo": { name: "raw-modern", version: "1" },
  ...extra,
})

export interface InProcessOptions {
  /** The configured servers, in config order, each a scripted fake child. */
  readonly servers: Readonly<Record<string, FakeServerScript>>
  /** Settings over the defaults (the log level defaults to WARNING, which keeps the real audit quiet). */
  readonly settings?: Partial<GatewaySettings>
  /** Record audit entries (gateway.audit) instead of the real audit writer. */
  readonly recordAudit?: boolean
  /** The `access` object of servers_config.json, as JSON; checked as the real config is. */
  readonly access?: unknown
}

/** Who a test session logs in as: an identity name and its groups (from its key or certificate). */
export interface TestWho {
  readonly identity: string
  readonly groups?: ReadonlyArray<string>
}

export interface InProcessGateway {
  /** A session as an SSH channel would open it; `selection` is an exec command's server names. */
  readonly connect: (options?: {
    readonly selection?: ReadonlyArray<string>
    /** Log in as this identity (default: testIdentity, in no group). */
    readonly as?: TestWho
  }) => Effect.Effect<TestClient, never, Scope.Scope>
  readonly child: (name: string) => FakeChild
  /** Audit entries, when recordAudit was asked for. */
  readonly audit: Recorded<AuditEntry>
  /** Everything logged, one logfmt line each, as the gateway writes its log. */
  readonly logs: Recorded<string>
  /**
   * Apply a new set of servers, as a config reload does. A server named before keeps its fake child;
   * `version` stands for the rest of its config: a different one makes it a changed server.
   */
  readonly reload: (
    servers: Readonly<Record<string, FakeServerScript & { readonly version?: string }>>,
    access?: unknown,
  ) => Effect.Effect<ServerDiff, ConfigError>
  /** The gateway's drain (what SIGTERM starts), to drive it without signals. */
  readonly drain: DrainShape
}

export const testIdentity: ClientIdentity = {
  fingerprint: "SHA256:in-process-test-key",
  username: "mcp",
  address: "in-process",
  identity: "in-process-test",
  groups: [],
}

/** The `access` JSON as loadGatewayConfig takes it: decoded, checked against the servers, compiled. */
const accessPolicy = (
  raw: unknown,
  serverKeys: ReadonlyArray<string>,
): Effect.Effect<AccessPolicy | undefined, ConfigError> =>
  Effect.gen(function* () {
    if (raw === undefined) return undefined
    const section = yield* Schema.decodeUnknown(AccessSection, { onExcessProperty: "error" })(raw).pipe(
      Effect.mapError((error) => new ConfigError({ message: `access: ${error.message}` })),
    )
    const { problems } = checkAccess(section, serverKeys)
    if (problems.length > 0) return yield* new ConfigError({ message: problems.join("\n") })
    return compileAccess(section)
  })

/** Seconds a fake server's requests may take when its script names no timeout (the config default). */
const defaultRequestTimeout = 60

const settingsWith = (overrides: Partial<GatewaySettings>): GatewaySettings => {
  const defaults = decodeSettings({})
  if (Either.isLeft(defaults)) throw new Error(`the default settings do not decode: ${defaults.left}`)
  return { ...defaults.right, logLevel: "WARNING", ...overrides }
}

export const startGateway = (
  options: InProcessOptions,
): Effect.Effect<InProcessGateway, ConfigError, Scope.Scope> =>
  Effect.gen(function* () {
    const logs = new Recorded<string>("log line")
    // Replaces the console logger for this test's fibers: the log is asserted on, not printed.
    yield* Effect.locallyScoped(
      FiberRef.currentLoggers,
      HashSet.make(Logger.map(Logger.logfmtLogger, (line) => logs.push(line))),
    )
    const audit = new Recorded<AuditEntry>("audit entry")
    const childServer = (
      name: string,
      script: FakeServerScript & { readonly version?: string },
    ): ChildServer => ({
      name,
      command: "fake-mcp-server",
      args: script.version === undefined ? [] : [script.version],
      env: {},
      cwd: undefined,
      prefix: script.prefix,
      requestTimeout: script.timeout ?? defaultRequestTimeout,
      ...(script.scope === undefined ? {} : { scope: script.scope }),
      ...(script.idleTimeout === undefined ? {} : { idleTimeout: script.idleTimeout }),
    })
    const servers = Object.entries(options.servers).map(([name, script]) => childServer(name, script))
    const access = yield* accessPolicy(options.access, Object.keys(options.servers))
    const config = {
      configPath: "/in-process/servers_config.json",
      settings: settingsWith(options.settings ?? {}),
      servers,
      ...(access === undefined ? {} : { access }),
    }
    const fakes = makeFakeUpstream(options.servers)
    const auditLayer =
      options.recordAudit === true
        ? Layer.succeed(Audit, { record: (entry: AuditEntry) => audit.push(entry) })
        : AuditLive
    const sessionLayer = McpSessionLive.pipe(
      Layer.provide(HubLive),
      Layer.provide(Layer.merge(auditLayer, IdentityLimitsLive)),
      Layer.provideMerge(Layer.merge(SharedChildrenLive, SparesLive)),
      Layer.provideMerge(ChildBudgetLive),
      Layer.provideMerge(ChildRegistryLive),
    )
    const context = yield* Layer.build(
      sessionLayer.pipe(
        Layer.provideMerge(CatalogLive),
        Layer.provideMerge(ProtocolMemoryLive),
        Layer.provide(fakes.layer),
        Layer.provideMerge(DrainLive),
        Layer.provide(Layer.succeed(GatewayConfig, config)),
      ),
    )
    const session = Context.get(context, McpSession)
    const catalog = Context.get(context, Catalog)
    return {
      connect: (connectOptions = {}) =>
        connectClient(
          session,
          connectOptions.selection ?? [],
          connectOptions.as === undefined
            ? testIdentity
            : {
                ...testIdentity,
                identity: connectOptions.as.identity,
                groups: connectOptions.as.groups ?? [],
              },
        ),
      child: (name) => {
        const child = fakes.child(name)
        if (child === undefined) throw new Error(`no server '${name}' in this gateway`)
        return child
      },
      audit,
      logs,
      reload: (next, nextAccess) =>
        Effect.gen(function* () {
          const policy = yield* accessPolicy(nextAccess, Object.keys(next))
          return yield* catalog.replace(
            Object.entries(next).map(([name, script]) => {
              fakes.add(name, script)
              return childServer(name, script)
            }),
            policy,
          )
        }),
      drain: Context.get(context, Drain),
    } satisfies InProcessGateway
  })

/** Every tool the client can see now, in list order, following the merged cursor. */
export const toolNames = (client: TestClient, id: number) =>
  Effect.gen(function* () {
    const names: Array<string> = []
    let cursor: string | undefined
    for (let page = 0; page < 10; page++) {
      const response = yield* client.request(
        `${id}/${page}`,
        "tools/list",
        cursor === undefined ? {} : { cursor },
      )
      const result = (response.result ?? {}) as {
        tools?: ReadonlyArray<{ name: string }>
        nextCursor?: string
      }
      names.push(...(result.tools ?? []).map((tool) => tool.name))
      cursor = result.nextCursor
      if (cursor === undefined) break
    }
    return names
  })

/** One turn of the real event loop: what the streams have to deliver gets delivered. */
const realTurn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

/**
 * Move the TestClock forward in small steps, letting real IO run between them, until `effect`
 * completes: for answers that wait on a short sleep inside the gateway (its wait for more requests of
 * a child's burst), without knowing how long that sleep is. Dies when `limit` passes first.
 */
export const advanceUntil = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  options: { readonly step?: Duration.DurationInput; readonly limit?: Duration.DurationInput } = {},
): Effect.Effect<A, E, R> =>
  Effect.gen(function* () {
    const step = Duration.decode(options.step ?? "1 millis")
    const limit = Duration.toMillis(options.limit ?? "100 millis")
    const fiber = yield* Effect.fork(effect)
    for (let elapsed = 0; elapsed <= limit; elapsed += Duration.toMillis(step)) {
      for (let turn = 0; turn < 3; turn++) yield* realTurn
      if (Option.isSome(yield* Fiber.poll(fiber))) return yield* Fiber.join(fiber)
      yield* TestClock.adjust(step)
    }
    yield* Fiber.interrupt(fiber)
    return yield* Effect.dieMessage(`not done after moving the clock ${limit} ms`)
  })
