/**
 * Where the gateway's configuration comes from, so it can be read again: the real gateway reads the
 * flags, MCP_SSH_* variables and servers_config.json it started with; tests hand in their own.
 */
import { Context, type Effect } from "effect"
import type { ConfigError } from "../errors.js"
import type { GatewayConfigShape } from "./GatewayConfig.js"

export class ConfigSource extends Context.Tag("mcp-ssh/ConfigSource")<
  ConfigSource,
  { readonly load: Effect.Effect<GatewayConfigShape, ConfigError> }
>() {}
