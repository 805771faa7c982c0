/**
 * What a child sends of its own accord, on its way to the client: its requests (to the client, or
 * into an input_required round for a 2026 client), log messages tagged with the server's name,
 * changes for the change feed, and anything else as it is.
 */
import { Effect } from "effect"
import { isRequest } from "../../shared/jsonRpc.js"
import type { SupervisedChild } from "../children/ChildSupervisor.js"
import type { ChildMessage, UpstreamConnection } from "../children/Upstream.js"
import type { ChangeFeed } from "./changeFeed.js"
import type { InputRounds } from "./inputRounds.js"
import type { SessionProtocol } from "./protocol.js"
import type { ServerRequests } from "./serverRequests.js"
import type { ClientOutput } from "./types.js"

export const makeChildMessages =
  (
    output: ClientOutput,
    protocol: SessionProtocol,
    serverRequests: ServerRequests,
    inputRounds: InputRounds,
    feed: ChangeFeed,
  ) =>
  (child: SupervisedChild, connection: UpstreamConnection, message: ChildMessage): Effect.Effect<void> => {
    if (isRequest(message)) {
      if (message.method === "ping") {
        return connection.send({ jsonrpc: "2.0", id: message.id, result: {} }).pipe(Effect.ignore)
      }
      return protocol.era === "modern"
        ? inputRounds.ask(connection, message)
        : serverRequests.forward(child, connection, message)
    }
    const params = message.params ?? {}
    switch (message.method) {
      case "notifications/message": {
        // A modern client gets log messages only when its requests ask for a level.
        if (protocol.era === "modern" && protocol.logLevel === undefined) return Effect.void
        const name = child.server.name
        const logger = typeof params.logger === "string" ? `${name}/${params.logger}` : name
        return Effect.sync(() => output.write({ ...message, params: { ...params, logger } }))
      }
      case "notifications/resources/updated":
      case "notifications/tools/list_changed":
      case "notifications/prompts/list_changed":
      case "notifications/resources/list_changed":
        return Effect.sync(() => feed.emit(message.method, message.params))
      case "notifications/cancelled":
        return serverRequests.withdrawn(connection, params)
      default:
        return Effect.sync(() => output.write(message))
    }
  }
