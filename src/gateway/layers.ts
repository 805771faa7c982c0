/** Composition only: the live services that make the gateway, and the logger it writes with. */
import { Layer, Logger } from "effect"
import { logLevelOf } from "../shared/logLevel.js"
import { CatalogLive } from "./children/Catalog.js"
import { ChildReaperLive } from "./children/ChildReaper.js"
import { UpstreamLive } from "./children/Upstream.js"
import { ConfigSource } from "./config/ConfigSource.js"
import { GatewayConfig, type GatewayConfigShape } from "./config/GatewayConfig.js"
import { ReloaderLive } from "./config/Reloader.js"
import { ReloadTriggersLive } from "./config/reloadTriggers.js"
import type { GatewaySettings } from "./config/settings.js"
import { HubLive } from "./hub/Hub.js"
import { EnrollmentTokensLive } from "./keys/EnrollmentTokens.js"
import { KeyApiLive } from "./keys/KeyApi.js"
import { KeyStoreLive } from "./keys/KeyStore.js"
import { RevokedKeysLive } from "./keys/RevokedKeys.js"
import { AuditLive } from "./session/Audit.js"
import { McpSessionLive } from "./session/McpSession.js"
import { HostKeyLive } from "./ssh/HostKey.js"
import { SshServerLive } from "./ssh/SshServer.js"

/** The configured servers (one Catalog, shared by the sessions and the Reloader) and their reloads. */
const ServersLayer = ReloadTriggersLive.pipe(
  Layer.provideMerge(ReloaderLive),
  Layer.provideMerge(CatalogLive),
  Layer.provideMerge(UpstreamLive),
  Layer.provide(ChildReaperLive),
)

/** Everything below the SSH server. */
export const SessionLayer = McpSessionLive.pipe(
  Layer.provide(HubLive),
  Layer.provide(AuditLive),
  Layer.provideMerge(ServersLayer),
)

/** The SSH server, and beside it what the key API needs of the rest: the Catalog and the Reloader. */
export const GatewayLayer = SshServerLive.pipe(
  Layer.provideMerge(SessionLayer),
  Layer.provideMerge(Layer.mergeAll(HostKeyLive, KeyStoreLive, RevokedKeysLive)),
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

/** `load` reads the configuration again, for reloads. */
export const gatewayFromConfig = (config: GatewayConfigShape, load: ConfigSource["Type"]["load"]) =>
  (config.settings.runKeyServer ? GatewayWithKeyApiLayer : GatewayLayer).pipe(
    Layer.provide(Layer.merge(Layer.succeed(GatewayConfig, config), Layer.succeed(ConfigSource, { load }))),
  )
