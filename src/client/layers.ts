/** Composition only: the live services of mcp-ssh-client, and the logger it writes to stderr with. */
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import type * as LogLevel from "effect/LogLevel"
import { logLevelOf } from "../shared/logLevel.js"
import { BridgeLive } from "./Bridge.js"
import { ClientConfig } from "./ClientConfig.js"
import { ClientConnectionLive } from "./ClientConnection.js"
import { ClientKeyLive } from "./ClientKey.js"
import { GatewayConnectionLive } from "./GatewayConnection.js"
import { KeyServerClientLive } from "./KeyServerClient.js"
import { KnownHostsLive } from "./KnownHosts.js"
import type { ClientLogLevel, ClientSettings } from "./settings.js"

/** ClientConnection and Bridge, over everything they need; tests can swap single members. */
export const ClientLayer = Layer.merge(
  ClientConnectionLive.pipe(
    Layer.provide(Layer.mergeAll(ClientKeyLive, KnownHostsLive, KeyServerClientLive, GatewayConnectionLive)),
  ),
  BridgeLive,
)

export const clientFromSettings = (settings: ClientSettings) =>
  ClientLayer.pipe(Layer.provideMerge(Layer.succeed(ClientConfig, settings)))

const labelOf = (level: LogLevel.LogLevel): string => (level._tag === "Warning" ? "WARNING" : level.label)

/**
 * Plain lines on stderr (`mcp-ssh-client INFO connected to ...`): stdout carries MCP only, and MCP
 * hosts keep a server's stderr in their logs for people to read.
 */
export const clientLogger = (level: ClientLogLevel | undefined) =>
  Layer.merge(
    Logger.replace(
      Logger.defaultLogger,
      Logger.make(({ logLevel, message }) => {
        const parts = Array.isArray(message) ? message : [message]
        const text = parts.map((part) => (typeof part === "string" ? part : String(part))).join(" ")
        process.stderr.write(`mcp-ssh-client ${labelOf(logLevel)} ${text}\n`)
      }),
    ),
    level === undefined ? Layer.empty : Logger.minimumLogLevel(logLevelOf[level]),
  )
