/** mcp-ssh-client's settings, as the command line gave them (checked by src/domain/clientSettings). */
import * as Context from "effect/Context"
import type { ClientSettings } from "../domain/clientSettings.js"

export class ClientConfig extends Context.Tag("mcp-ssh/ClientConfig")<ClientConfig, ClientSettings>() {}
