/**
 * Which key store the configuration asks for (`--key-store`), for the gateway and for the offline
 * `keys` and `tokens` commands: the authorized keys file with its token file, or the PostgreSQL
 * database (keys, CA lines, revocations, tokens), each under the same services.
 */
import { Effect, Layer, Logger, LogLevel } from "effect"
import { GatewayConfig, type GatewayConfigShape } from "../config/GatewayConfig.js"
import { EnrollmentTokensLive } from "./EnrollmentTokens.js"
import { KeyDatabaseLive, KeyDatabaseOfflineLive } from "./KeyDatabase.js"
import { KeyStoreLive, KeyStoreOfflineLive } from "./KeyStore.js"
import { parseKeyStoreLocation } from "./keyStoreLocation.js"
import { PostgresEnrollmentTokensLive } from "./PostgresEnrollmentTokens.js"
import { PostgresKeyStoreLive, PostgresKeyStoreOfflineLive } from "./PostgresKeyStore.js"
import { PostgresRevokedKeysLive } from "./PostgresRevokedKeys.js"
import { RevokedKeysLive } from "./RevokedKeys.js"

/** The setting was checked when the configuration was read; anything but a database is the file. */
const usesDatabase = (config: GatewayConfigShape): boolean => {
  const location = parseKeyStoreLocation(config.settings.keyStore)
  return location._tag === "Right" && location.right._tag === "Postgres"
}

const FileKeys = EnrollmentTokensLive.pipe(Layer.provideMerge(Layer.merge(KeyStoreLive, RevokedKeysLive)))

/** One database connection pool and change feed for the three services. */
const DatabaseKeys = Layer.merge(PostgresEnrollmentTokensLive, PostgresRevokedKeysLive).pipe(
  Layer.provideMerge(PostgresKeyStoreLive),
  Layer.provide(KeyDatabaseLive),
)

/** The gateway's key store, revoked keys and enrollment tokens, as configured. */
export const KeyServicesLive = Layer.unwrapEffect(
  Effect.map(GatewayConfig, (config) => (usesDatabase(config) ? DatabaseKeys : FileKeys)),
)

/** The offline commands' database services (the key database itself too, for `keys import`). */
export const keyAdminDatabaseFromConfig = (config: GatewayConfigShape) =>
  PostgresEnrollmentTokensLive.pipe(
    Layer.provideMerge(PostgresKeyStoreOfflineLive),
    Layer.provideMerge(KeyDatabaseOfflineLive),
    Layer.provide(Layer.succeed(GatewayConfig, config)),
  )

/** For the offline commands: the same store and tokens as the gateway, watching and following nothing. */
export const keyAdminFromConfig = (config: GatewayConfigShape) =>
  usesDatabase(config)
    ? keyAdminDatabaseFromConfig(config)
    : EnrollmentTokensLive.pipe(
        Layer.provideMerge(KeyStoreOfflineLive),
        Layer.provide(Layer.succeed(GatewayConfig, config)),
      )

/** Warnings (a line of the file that is ignored) on stderr, as logfmt; routine info stays quiet. */
export const keyAdminLogger = Layer.merge(
  Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)),
  Logger.minimumLogLevel(LogLevel.Warning),
)
