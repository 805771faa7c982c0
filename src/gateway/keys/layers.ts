/**
 * Composition for the offline `keys` and `tokens` commands: the same key store and token files as
 * the gateway (under the same lock), without the SSH server, the children or the HTTP API.
 */
import { Layer, Logger, LogLevel } from "effect"
import { GatewayConfig, type GatewayConfigShape } from "../config/GatewayConfig.js"
import { EnrollmentTokensLive } from "./EnrollmentTokens.js"
import { KeyStoreOfflineLive } from "./KeyStore.js"

export const keyAdminFromConfig = (config: GatewayConfigShape) =>
  EnrollmentTokensLive.pipe(
    Layer.provideMerge(KeyStoreOfflineLive),
    Layer.provide(Layer.succeed(GatewayConfig, config)),
  )

/** Warnings (a line of the file that is ignored) on stderr, as logfmt; routine info stays quiet. */
export const keyAdminLogger = Layer.merge(
  Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)),
  Logger.minimumLogLevel(LogLevel.Warning),
)
