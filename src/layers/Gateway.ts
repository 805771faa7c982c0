/** Composition only: the live services that make the gateway, and the logger it writes with. */
import { Layer, Logger, LogLevel } from "effect"
import type { GatewaySettings } from "../domain/config.js"
import { AuditLive } from "../services/Audit.js"
import { CatalogLive } from "../services/Catalog.js"
import { ChildReaperLive } from "../services/ChildReaper.js"
import { EnrollmentTokensLive } from "../services/EnrollmentTokens.js"
import { GatewayConfig, type GatewayConfigShape } from "../services/GatewayConfig.js"
import { HostKeyLive } from "../services/HostKey.js"
import { HubLive } from "../services/Hub.js"
import { KeyApiLive } from "../services/KeyApi.js"
import { KeyStoreLive } from "../services/KeyStore.js"
import { McpSessionLive } from "../services/McpSession.js"
import { SshServerLive } from "../services/SshServer.js"
import { UpstreamLive } from "../services/Upstream.js"

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

const logLevelOf: Record<GatewaySettings["logLevel"], LogLevel.LogLevel> = {
  TRACE: LogLevel.Trace,
  DEBUG: LogLevel.Debug,
  INFO: LogLevel.Info,
  WARNING: LogLevel.Warning,
  WARN: LogLevel.Warning,
  ERROR: LogLevel.Error,
  CRITICAL: LogLevel.Fatal,
  FATAL: LogLevel.Fatal,
  NONE: LogLevel.None,
}

/** logfmt on stderr: stdout stays free, and every line is machine-readable. */
export const loggerLayer = (level: GatewaySettings["logLevel"]) =>
  Layer.merge(
    Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)),
    Logger.minimumLogLevel(logLevelOf[level]),
  )

/** The gateway plus the HTTP key API beside it (--run-key-server); it starts once SSH listens. */
export const GatewayWithKeyApiLayer = KeyApiLive.pipe(
  Layer.provide(EnrollmentTokensLive),
  Layer.provideMerge(GatewayLayer),
)

export const gatewayFromConfig = (config: GatewayConfigShape) =>
  (config.settings.runKeyServer ? GatewayWithKeyApiLayer : GatewayLayer).pipe(
    Layer.provide(Layer.succeed(GatewayConfig, config)),
  )
