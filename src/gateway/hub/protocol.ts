/**
 * Where a session stands in the MCP lifecycle: which protocol generation its client speaks, and
 * whether the client has the merged picture yet. Written only by the lifecycle part (lifecycle.ts);
 * the other parts read it. The log level the client asked for lives here too, written only by the
 * setLevel fan-out (children.ts), because a restarted child and the log relay both need it.
 */
export type Era = "undecided" | "legacy" | "modern"

export class SessionProtocol {
  /** Decided by the client's first request, as MCP servers on stdio do. */
  era: Era = "undecided"
  /** A modern client that only asked server/discover may still turn out to be a legacy one. */
  modernServed = false
  /** Set once the client has the merged lists; later changes are announced with list_changed. */
  announced = false
  /** A 2025-era initialize was answered (a second one is refused). */
  initialized = false
  logLevel: string | undefined = undefined
}
