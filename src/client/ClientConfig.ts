/** mcp-ssh-client's settings, as the command line gave them (checked by src/client/settings.ts). */
import * as Context from "effect/Context"
import type { ClientSettings } from "./settings.js"

export class ClientConfig extends Context.Tag("mcp-ssh/ClientConfig")<ClientConfig, ClientSettings>() {}
