/**
 * What the gateway learnt about a server's protocol that outlives one child: a server whose child
 * exited on `server/discover` (a legacy server that dies on any request before initialize) is spoken
 * to with initialize from then on, in every session, without probing it again; one that speaks no
 * version the gateway speaks is not started again. Keyed by what the child is started with, so a
 * reload that changes the server probes the new version afresh.
 */
import { Context, Layer } from "effect"
import type { ChildServer } from "../config/GatewayConfig.js"

export interface ProtocolMemoryShape {
  readonly legacyOnly: (server: ChildServer) => boolean
  readonly rememberLegacy: (server: ChildServer) => void
  /** Why the server is left out, if it is. */
  readonly leftOut: (server: ChildServer) => string | undefined
  readonly rememberLeftOut: (server: ChildServer, reason: string) => void
}

export class ProtocolMemory extends Context.Tag("mcp-ssh/ProtocolMemory")<
  ProtocolMemory,
  ProtocolMemoryShape
>() {}

/** Everything a reload counts as a change of how the server starts or is spoken to (serverDiff.ts). */
const keyOf = (server: ChildServer) =>
  JSON.stringify([
    server.name,
    server.command,
    server.args,
    server.cwd ?? null,
    Object.entries(server.env).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
    server.protocol ?? "auto",
  ])

export const makeProtocolMemory = (): ProtocolMemoryShape => {
  const legacy = new Set<string>()
  const leftOut = new Map<string, string>()
  return {
    legacyOnly: (server) => legacy.has(keyOf(server)),
    rememberLegacy: (server) => {
      legacy.add(keyOf(server))
    },
    leftOut: (server) => leftOut.get(keyOf(server)),
    rememberLeftOut: (server, reason) => {
      leftOut.set(keyOf(server), reason)
    },
  }
}

export const ProtocolMemoryLive = Layer.sync(ProtocolMemory, makeProtocolMemory)
