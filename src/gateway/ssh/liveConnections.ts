/**
 * The authenticated connections of the gateway by the fingerprint of the key they logged in with,
 * each with how to end it (saying why) and how to tell whether the files still let it in: a revoked
 * key ends every connection that used it, and so does a changed line (see `recheck`).
 */
import type { Credentials } from "./loginDecision.js"

interface Entry {
  readonly end: (reason: string) => void
  /** Undefined while the login still holds; else why it no longer does. */
  readonly recheck: (credentials: Credentials) => string | undefined
}

export class LiveConnections {
  private readonly byKey = new Map<string, Set<Entry>>()

  /** Register a connection; the returned function forgets it. */
  add(
    fingerprint: string,
    end: (reason: string) => void,
    recheck: (credentials: Credentials) => string | undefined = () => undefined,
  ): () => void {
    const entry: Entry = { end, recheck }
    const entries = this.byKey.get(fingerprint) ?? new Set<Entry>()
    this.byKey.set(fingerprint, entries.add(entry))
    return () => {
      entries.delete(entry)
      if (entries.size === 0 && this.byKey.get(fingerprint) === entries) this.byKey.delete(fingerprint)
    }
  }

  endAll(fingerprint: string, reason: string): void {
    for (const entry of this.byKey.get(fingerprint) ?? []) entry.end(reason)
  }

  /** End every connection the files no longer let in as it logged in; how many were ended. */
  recheck(credentials: Credentials): number {
    let ended = 0
    for (const entries of this.byKey.values()) {
      for (const entry of entries) {
        const reason = entry.recheck(credentials)
        if (reason === undefined) continue
        ended++
        entry.end(reason)
      }
    }
    return ended
  }
}
