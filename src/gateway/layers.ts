/** Composition only: the live services that make the gateway, and the logger it writes with. */
import { Layer, Logger } from "effect"
import { logLevelOf } from "../shared/logLevel.js"
import { IdentityLimitsLive } from "./access/IdentityLimits.js"
import { CatalogLive } from "./children/Catalog.js"
import { ChildBudgetLive } from "./children/ChildBudget.js"
import { ChildReaperLive } from "./children/ChildReaper.js"
import { ChildRegistryLive } from "./children/ChildRegistry.js"
import { ProtocolMemoryLive } from "./children/ProtocolMemory.js"
import { SharedChildrenLive } from "./children/SharedChildren.js"
import { SparesLive } from "./children/Spares.js"
import { UpstreamLive } from "./children/Upstream.js"
import { ConfigSource } from "./config/ConfigSource.js"
import { GatewayConfig, type GatewayConfigShape } from "./config/GatewayConfig.js"
import { ReloaderLive, ReloadTargetLive } from "./config/Reloader.js"
import { ReloadTriggersLive } from "./config/reloadTriggers.js"
import type { GatewaySettings } from "./config/settings.js"
import { HubLive } from "./hub/Hub.js"
import { KeyApiLive } from "./keys/KeyApi.js"
import { KeyServicesLive } from "./keys/layers.js"
import { DrainLive } from "./ops/Drain.js"
import { GatewayServingLive, GatewayStatusLive } from "./ops/GatewayStatus.js"
import { MetricsLive } from "./ops/Metrics.js"
import { MetricsServerLive } from "./ops/MetricsServer.js"
import { AuditLive } from "./session/Audit.js"
import { McpSessionLive } from "./session/McpSession.js"
import { HostKeyLive } from "./ssh/HostKey.js"
import { SshServerLive } from "./ssh/SshServer.js"

/** The configured servers (one Catalog, shared by the sessions and the Reloader) and their reloads. */
const ServersLayer = Layer.mergeAll(ReloadTriggersLive, ReloadTargetLive).pipe(
  Layer.provideMerge(CatalogLive),
  Layer.provideMerge(Layer.merge(UpstreamLive, ProtocolMemoryLive)),
  Layer.provide(ChildReaperLive),
)

/** Everything below the SSH server. */
export const SessionLayer = McpSessionLive.pipe(
  Layer.provide(HubLive),
  Layer.provide(Layer.merge(AuditLive, IdentityLimitsLive)),
  Layer.provideMerge(Layer.merge(SharedChildrenLive, SparesLive)),
  Layer.provideMerge(ChildBudgetLive),
  // The Catalog also tells the gateway's status how each server did at its probe.
  Layer.provideMerge(ServersLayer),
)

/** The key store chosen by --key-store (file or database), its revoked keys and enrollment tokens. */
const KeysLayer = Layer.merge(HostKeyLive, KeyServicesLive)

/** The SSH server and what it serves; once it listens, the gateway's status says it serves. */
const ServingLayer = GatewayServingLive.pipe(
  Layer.provideMerge(SshServerLive),
  Layer.provideMerge(SessionLayer),
)

export const GatewayLayer = ServingLayer.pipe(Layer.provideMerge(KeysLayer))

/** On stderr, so stdout stays free; logfmt or JSON, every line is machine-readable. */
export const loggerLayer = (level: GatewaySettings["logLevel"], format: GatewaySettings["logFormat"]) =>
  Layer.merge(
    Logger.replace(
      Logger.defaultLogger,
      Logger.withConsoleError(format === "json" ? Logger.jsonLogger : Logger.logfmtLogger),
    ),
    Logger.minimumLogLevel(logLevelOf[level]),
  )

/**
 * The gateway plus the HTTP key API beside it (--run-key-server), built side by side: the API
 * listens while the servers are probed, so /ready can say "starting".
 */
export const GatewayWithKeyApiLayer = Layer.merge(KeyApiLive, ServingLayer).pipe(
  Layer.provideMerge(KeysLayer),
)

/**
 * The drain, the status that /ready reports and the Reloader: one of each, built first (the key API
 * answers while the servers are probed), shared by all.
 */
export const OpsLayer = Layer.mergeAll(
  GatewayStatusLive.pipe(Layer.provideMerge(DrainLive)),
  ReloaderLive,
  ChildRegistryLive,
)

/** `load` reads the configuration again, for reloads. */
export const gatewayFromConfig = (config: GatewayConfigShape, load: ConfigSource["Type"]["load"]) =>
  (config.settings.runKeyServer ? GatewayWithKeyApiLayer : GatewayLayer).pipe(
    // The metrics listener (also GET /ready) before SSH: a port in use refuses the start early.
    Layer.provideMerge(MetricsServerLive),
    Layer.provideMerge(OpsLayer),
    // Metrics (the no-op without --metrics-port) first: every part reports to the same registry.
    Layer.provideMerge(MetricsLive),
    Layer.provide(Layer.merge(Layer.succeed(GatewayConfig, config), Layer.succeed(ConfigSource, { load }))),
  )
