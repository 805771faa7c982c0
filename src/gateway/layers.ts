/** Composition only: the live services that make the gateway, and the logger it writes with. */
import { Layer, Logger } from "effect"
import { logLevelOf } from "../shared/logLevel.js"
import { CatalogLive } from "./children/Catalog.js"
import { ChildReaperLive } from "./children/ChildReaper.js"
import { UpstreamLive } from "./children/Upstream.js"
import { GatewayConfig, type GatewayConfigShape } from "./config/GatewayConfig.js"
import type { GatewaySettings } from "./config/settings.js"
import { HubLive } from "./hub/Hub.js"
import { EnrollmentTokensLive } from "./keys/EnrollmentTokens.js"
import { KeyApiLive } from "./keys/KeyApi.js"
import { KeyStoreLive } from "./keys/KeyStore.js"
import { MetricsLive } from "./ops/Metrics.js"
import { MetricsServerLive } from "./ops/MetricsServer.js"
import { AuditLive } from "./session/Audit.js"
import { McpSessionLive } from "./session/McpSession.js"
import { HostKeyLive } from "./ssh/HostKey.js"
import { SshServerLive } from "./ssh/SshServer.js"

/** Everything below the SSH server; tests replace single members (Upstream, KeyStore) with their own. */
export const SessionLayer = McpSessionLive.pipe(
  Layer.provide(HubLive),
  Layer.provide(Layer.merge(CatalogLive, AuditLive)),
  Layer.provide(UpstreamLive),
  Layer.provide(ChildReaperLive),
)

export const GatewayLayer = SshServerLive.pipe(
  Layer.provide(SessionLayer),
  Layer.provideMerge(Layer.mergeAll(HostKeyLive, KeyStoreLive)),
)

/** On stderr, so stdout stays free; logfmt or JSON, every line is machine-readable. */
export const loggerLayer = (level: GatewaySettings["logLevel"], format: GatewaySettings["logFormat"]) =>
  Layer.merge(
    Logger.replace(
      Logger.defaultLogger,
      Logger.withConsoleError(format === "json" ? Logger.jsonLogger : Logger.logfmtLogger),
    ),
    Logger.minimumLogLevel(logLevelOf[level]),
  )

/** The gateway plus the HTTP key API beside it (--run-key-server); it starts once SSH listens. */
export const GatewayWithKeyApiLayer = KeyApiLive.pipe(
  Layer.provide(EnrollmentTokensLive),
  Layer.provideMerge(GatewayLayer),
)

/**
 * Metrics (the no-op without --metrics-port) and their listener come first: a metrics port in use
 * refuses the start before SSH listens, and every part below reports to the same registry.
 */
const MetricsLayer = MetricsServerLive.pipe(Layer.provideMerge(MetricsLive))

export const gatewayFromConfig = (config: GatewayConfigShape) =>
  (config.settings.runKeyServer ? GatewayWithKeyApiLayer : GatewayLayer).pipe(
    Layer.provideMerge(MetricsLayer),
    Layer.provide(Layer.succeed(GatewayConfig, config)),
  )
