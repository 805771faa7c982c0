/**
 * The authenticated connections of the gateway by the fingerprint of the key they logged in with,
 * each with how to end it: a revoked key ends every connection that used it.
 */
export class LiveConnections {
  private readonly byKey = new Map<string, Set<() => void>>()

  /** Register a connection; the returned function forgets it. */
  add(fingerprint: string, end: () => void): () => void {
    const ends = this.byKey.get(fingerprint) ?? new Set<() => void>()
    this.byKey.set(fingerprint, ends.add(end))
    return () => {
      ends.delete(end)
      if (ends.size === 0 && this.byKey.get(fingerprint) === ends) this.byKey.delete(fingerprint)
    }
  }

  endAll(fingerprint: string): void {
    for (const end of this.byKey.get(fingerprint) ?? []) end()
  }
}
