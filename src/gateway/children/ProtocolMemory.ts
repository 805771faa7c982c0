/**
 * What the gateway learnt about a server's protocol that outlives one child: a server whose child
 * exited on `server/discover` (a legacy server that dies on any request before initialize) is spoken
 * to with initialize from then on, in every session, without probing it again. Keyed by what the
 * child is started with, so a reload that changes the server probes the new version afresh.
 */
import { Context, Layer } from "effect"
import type { ChildServer } from "../config/GatewayConfig.js"

export interface ProtocolMemoryShape {
  readonly legacyOnly: (server: ChildServer) => boolean
  readonly rememberLegacy: (server: ChildServer) => void
}

export class ProtocolMemory extends Context.Tag("mcp-ssh/ProtocolMemory")<
  ProtocolMemory,
  ProtocolMemoryShape
>() {}

const keyOf = (server: ChildServer) =>
  JSON.stringify([server.name, server.command, server.args, server.cwd ?? null])

export const makeProtocolMemory = (): ProtocolMemoryShape => {
  const legacy = new Set<string>()
  return {
    legacyOnly: (server) => legacy.has(keyOf(server)),
    rememberLegacy: (server) => {
      legacy.add(keyOf(server))
    },
  }
}

export const ProtocolMemoryLive = Layer.sync(ProtocolMemory, makeProtocolMemory)
