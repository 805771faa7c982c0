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
import { DrainLive } from "./ops/Drain.js"
import { GatewayServingLive, GatewayStatusLive } from "./ops/GatewayStatus.js"
import { AuditLive } from "./session/Audit.js"
import { McpSessionLive } from "./session/McpSession.js"
import { HostKeyLive } from "./ssh/HostKey.js"
import { SshServerLive } from "./ssh/SshServer.js"

/** Everything below the SSH server; tests replace single members (Upstream, KeyStore) with their own. */
export const SessionLayer = McpSessionLive.pipe(
  Layer.provide(HubLive),
  // The Catalog also tells the gateway's status how each server did at its start probe.
  Layer.provideMerge(Layer.merge(CatalogLive, AuditLive)),
  Layer.provide(UpstreamLive),
  Layer.provide(ChildReaperLive),
)

const KeysLayer = Layer.mergeAll(HostKeyLive, KeyStoreLive)

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
export const GatewayWithKeyApiLayer = Layer.merge(
  KeyApiLive.pipe(Layer.provide(EnrollmentTokensLive)),
  ServingLayer,
).pipe(Layer.provideMerge(KeysLayer))

/** The drain and the status that /ready reports: one of each, built first, shared by all. */
export const OpsLayer = GatewayStatusLive.pipe(Layer.provideMerge(DrainLive))

export const gatewayFromConfig = (config: GatewayConfigShape) =>
  (config.settings.runKeyServer ? GatewayWithKeyApiLayer : GatewayLayer).pipe(
    Layer.provideMerge(OpsLayer),
    Layer.provide(Layer.succeed(GatewayConfig, config)),
  )
