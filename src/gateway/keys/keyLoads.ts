/**
 * What one load of the authorized keys file leaves behind, as pure functions: the keys, and the
 * keys that went missing since the last usable load (announced as revoked by the watcher).
 */
import type { StoredKey } from "./authorizedKeysFile.js"

export interface Snapshot {
  /** Identity of the file version the keys were read from ("missing", "unreachable:<code>" without one). */
  readonly version: string
  readonly keys: ReadonlyArray<StoredKey>
  /** False when the file is missing, unreadable or too open: no keys, but none was revoked either. */
  readonly usable: boolean
}

/** The loaded keys and the bookkeeping of removals, replaced together by one load at a time. */
export interface LoadState {
  readonly snapshot: Snapshot
  /** The keys of the last usable load. */
  readonly lastUsableKeys: ReadonlyArray<StoredKey>
  /**
   * Keys in the last usable load that a later usable load no longer has, not yet announced. Taken
   * from the loads themselves, which every login goes through: a key added and removed between two
   * looks of the watcher is still seen to go.
   */
  readonly removed: ReadonlySet<string>
}

export const unread: LoadState = {
  snapshot: { version: "unread", keys: [], usable: false },
  lastUsableKeys: [],
  removed: new Set(),
}

/** The state after a load found `keys`; only a usable load can tell that a key went away. */
export const settle = (
  previous: LoadState,
  version: string,
  keys: ReadonlyArray<StoredKey>,
  usable = false,
): LoadState => {
  const snapshot: Snapshot = { version, keys, usable }
  if (!usable) return { ...previous, snapshot }
  const present = new Set(keys.map((key) => key.fingerprint))
  const removed = new Set(previous.removed)
  for (const key of previous.lastUsableKeys) if (!present.has(key.fingerprint)) removed.add(key.fingerprint)
  for (const fingerprint of present) removed.delete(fingerprint)
  return { snapshot, lastUsableKeys: keys, removed }
}

/** The key is no longer known, so no later load counts it as removed. */
export const forget = (loaded: LoadState, fingerprint: string): LoadState => {
  const removed = new Set(loaded.removed)
  removed.delete(fingerprint)
  return {
    ...loaded,
    lastUsableKeys: loaded.lastUsableKeys.filter((key) => key.fingerprint !== fingerprint),
    removed,
  }
}
