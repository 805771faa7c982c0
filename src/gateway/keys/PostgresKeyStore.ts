/**
 * The key store in PostgreSQL (`--key-store postgres://...`), for several gateways sharing keys: the
 * same service as the file store, answered from an in-memory snapshot of the database.
 *
 * - The snapshot is read again at every change notification (every write notifies, from any replica
 *   or the CLI), after the change feed reconnects, and every 30 s as a backstop.
 * - Keys that leave the snapshot are announced as revoked, so their live connections end on every
 *   replica, as when a line leaves the authorized keys file.
 * - While the database cannot be reached the last snapshot stays: known keys log in, keys removed
 *   before the outage stay out; a failed read never empties it. Writes fail with StoreUnavailable.
 */
import {
  Clock,
  Duration,
  Effect,
  FiberRef,
  Layer,
  PubSub,
  Queue,
  Ref,
  Schedule,
  SynchronizedRef,
} from "effect"
import { formatPublicKey, type PublicKey } from "../../shared/publicKey.js"
import { parseAuthorizedKeyLine } from "../identity/authorizedKeyOptions.js"
import type { StoredKey } from "./authorizedKeysFile.js"
import { type DatabaseError, KeyDatabase, type KeyDatabaseShape, type Querier } from "./KeyDatabase.js"
import { allByBlob, findByBlob, KeyStore, type KeyStoreShape } from "./KeyStore.js"
import { forget, type LoadState, settle, unread } from "./keyLoads.js"
import { changeChannel, writeLockKey } from "./postgresMigrations.js"
import {
  type KeyRow,
  keyRowOfLine,
  type RevokedCertificateRow,
  type RevokedKeyRow,
  rowsVersion,
  storedKeysOfRows,
} from "./postgresRows.js"

/** The backstop: a notification lost with its connection is made good within this. */
export const resyncInterval = Duration.seconds(30)

const keyColumns = "id::text AS id, kind, options, key_type, key_blob, fingerprint, comment, added_at, source"

/** The state with the key gone from its snapshot too, under a version no read has, so the next read settles. */
const withoutKey = (loaded: LoadState, fingerprint: string): LoadState => ({
  ...loaded,
  snapshot: {
    ...loaded.snapshot,
    version: `${loaded.snapshot.version}-${fingerprint}`,
    keys: loaded.snapshot.keys.filter((key) => key.fingerprint !== fingerprint),
  },
})

/** Record a change, and tell every replica (delivered when the transaction commits). */
export const recordChange = (
  tx: Querier,
  database: KeyDatabaseShape,
  change: {
    readonly action: string
    readonly fingerprint: string | null
    readonly kind: string | null
    readonly options: string | null
    readonly source: string | null
  },
) =>
  Effect.zipRight(
    tx.query(
      "INSERT INTO mcp_ssh_key_history (action, fingerprint, kind, options, source, replica) VALUES ($1, $2, $3, $4, $5, $6)",
      [change.action, change.fingerprint, change.kind, change.options, change.source, database.replica],
    ),
    tx.query("SELECT pg_notify($1, $2)", [changeChannel, change.action]),
  )

export const makePostgresKeyStore = Effect.gen(function* () {
  const database = yield* KeyDatabase
  const { shown } = database
  const state = yield* SynchronizedRef.make<LoadState>(unread)
  const revokedKeys = yield* PubSub.unbounded<string>()
  /** Whether the last read failed, so an outage is logged once, and its end too. */
  const failing = yield* Ref.make(false)

  const readRows = database.query<KeyRow>(`SELECT ${keyColumns} FROM mcp_ssh_authorized_keys ORDER BY id`)

  /**
   * Read the database into the snapshot, one load at a time; keys gone since the last read are
   * announced. A failed read keeps the snapshot as it was.
   */
  const resync: Effect.Effect<void, DatabaseError> = Effect.gen(function* () {
    const gone = yield* SynchronizedRef.modifyEffect(state, (previous) =>
      Effect.gen(function* () {
        const rows = yield* readRows
        const version = rowsVersion(rows)
        if (version === previous.snapshot.version) return [[], previous] as const
        const parsed = storedKeysOfRows(rows)
        for (const problem of parsed.problems)
          yield* Effect.logWarning(
            `key database ${shown}: key row ${problem.line} ignored: ${problem.reason}`,
          )
        const next = settle(previous, version, parsed.keys, true)
        yield* Effect.logInfo(`loaded ${parsed.keys.length} authorized key(s) from ${shown}`)
        return [[...next.removed], { ...next, removed: new Set<string>() }] as const
      }),
    )
    if (yield* Ref.getAndSet(failing, false))
      yield* Effect.logInfo(`key database ${shown} is reachable again; keys re-read`)
    for (const fingerprint of gone) {
      yield* Effect.logInfo(`key ${fingerprint} is no longer in ${shown}: treated as revoked`)
      yield* PubSub.publish(revokedKeys, fingerprint)
    }
  }).pipe(
    Effect.tapError((error) =>
      Effect.flatMap(Ref.getAndSet(failing, true), (already) =>
        already
          ? Effect.void
          : Effect.logError(`${error.message}; serving the last snapshot of the keys until it returns`),
      ),
    ),
  )

  // The first read must succeed: an empty snapshot would let nobody in and say nothing about why.
  yield* resync

  const snapshot = Effect.map(SynchronizedRef.get(state), (loaded) => loaded.snapshot)
  const current = Effect.map(snapshot, (loaded) => loaded.keys)
  const keyLines = (keys: ReadonlyArray<StoredKey>) => keys.filter((key) => key.kind === "key")

  // --- write side: one writer at a time across every replica and the CLI (an advisory lock), and
  // nested calls in one fiber do not wait for themselves, as the file store's lock file.
  const holdsLock = FiberRef.unsafeMake(false)
  // One writer of this process waits for the advisory lock at a time: each waiter holds a pooled
  // connection, and waiters filling the pool would starve the holder of the one it writes with.
  const semaphore = yield* Effect.makeSemaphore(1)
  const withWriteLock = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | DatabaseError, R> =>
    Effect.flatMap(FiberRef.get(holdsLock), (held) =>
      held
        ? effect
        : semaphore.withPermits(1)(
            database.withAdvisoryLock(writeLockKey, Effect.locally(effect, holdsLock, true)),
          ),
    )

  const contains = (blob: Buffer) =>
    Effect.map(
      database.query("SELECT 1 FROM mcp_ssh_authorized_keys WHERE key_blob = $1 LIMIT 1", [
        blob.toString("base64"),
      ]),
      (rows) => rows.length > 0,
    )

  const add = (key: PublicKey, source: string, options?: string) =>
    withWriteLock(
      Effect.gen(function* () {
        if (yield* contains(key.blob)) return false
        // The gateway's own options only (an enrollment token's identity); read back as a line would be.
        const line = parseAuthorizedKeyLine(
          `${options === undefined ? "" : `${options} `}${formatPublicKey(key)}`,
          0,
        )
        if (line === undefined || line.kind === "skipped")
          return yield* Effect.dieMessage(`the gateway wrote options it cannot read back: ${options ?? ""}`)
        const row = keyRowOfLine(line)
        const addedAt = new Date(yield* Clock.currentTimeMillis).toISOString()
        yield* database.transaction((tx) =>
          Effect.zipRight(
            tx.query(
              "INSERT INTO mcp_ssh_authorized_keys (kind, options, key_type, key_blob, fingerprint, comment, added_at, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
              [
                row.kind,
                row.options,
                row.key_type,
                row.key_blob,
                row.fingerprint,
                row.comment,
                addedAt,
                source,
              ],
            ),
            recordChange(tx, database, {
              action: "add",
              fingerprint: row.fingerprint,
              kind: row.kind,
              options: row.options,
              source,
            }),
          ),
        )
        yield* Effect.logInfo(
          `added key ${key.fingerprint} (${key.type}) from ${source}${options === undefined ? "" : ` with ${options}`}`,
        )
        // This replica sees it now; the others at the notification.
        yield* Effect.ignore(resync)
        return true
      }),
    )

  const revoke = (fingerprint: string, source = "unknown") =>
    withWriteLock(
      Effect.gen(function* () {
        const removed = yield* database.transaction((tx) =>
          Effect.gen(function* () {
            const rows = yield* tx.query<{ kind: string; options: string | null }>(
              "DELETE FROM mcp_ssh_authorized_keys WHERE fingerprint = $1 RETURNING kind, options",
              [fingerprint],
            )
            if (rows.length > 0)
              yield* recordChange(tx, database, {
                action: "revoke",
                fingerprint,
                kind: rows[0]?.kind ?? null,
                options: rows[0]?.options ?? null,
                source,
              })
            return rows.length
          }),
        )
        if (removed === 0) return 0
        // Committed: out of the snapshot and announced here at once (a login before the read below, or
        // through an outage that fails it, must not find it), and forgotten so no read announces it again.
        yield* Effect.uninterruptible(
          Effect.gen(function* () {
            yield* Effect.logInfo(`revoked key ${fingerprint} (${source})`)
            yield* SynchronizedRef.update(state, (loaded) =>
              withoutKey(forget(loaded, fingerprint), fingerprint),
            )
            yield* PubSub.publish(revokedKeys, fingerprint)
          }),
        )
        yield* Effect.ignore(resync)
        return removed
      }),
    )

  /**
   * Follow the change feed, with the periodic backstop; failures are logged by resync itself.
   * `changes` is subscribed before the first read, so no change between the two goes unread.
   */
  const follow = (changes: Queue.Dequeue<void>) =>
    Effect.gen(function* () {
      const onChange = Effect.forever(
        Effect.gen(function* () {
          yield* Queue.take(changes)
          // A burst of notifications is one read.
          yield* Queue.takeAll(changes)
          yield* Effect.ignore(resync)
        }),
      )
      const backstop = Effect.repeat(Effect.ignore(resync), Schedule.spaced(resyncInterval))
      return yield* Effect.zipRight(Effect.all([onChange, backstop], { concurrency: 2 }), Effect.never)
    })

  return {
    store: {
      path: shown,
      watchedFiles: [],
      list: current,
      find: (blob) => Effect.map(current, (keys) => findByBlob(keyLines(keys), blob)),
      findAuthority: (blob) =>
        Effect.map(current, (keys) =>
          allByBlob(
            keys.filter((key) => key.kind === "cert-authority"),
            blob,
          ),
        ),
      snapshot,
      contains,
      add,
      revoke,
      withWriteLock,
      revocations: PubSub.subscribe(revokedKeys),
    } satisfies KeyStoreShape,
    follow,
    resync,
  }
})

/** The gateway's key store in the database: follows the changes of every replica. */
export const PostgresKeyStoreLive = Layer.scoped(
  KeyStore,
  Effect.gen(function* () {
    // Subscribed before the first read: a change notified while it runs is read again after it.
    const changes = yield* Effect.flatMap(KeyDatabase, (database) => database.changes)
    const { store, follow } = yield* makePostgresKeyStore
    yield* Effect.forkScoped(follow(changes))
    return store
  }),
)

/** The offline CLI's: reads and writes the database, follows nothing. */
export const PostgresKeyStoreOfflineLive = Layer.effect(
  KeyStore,
  Effect.map(makePostgresKeyStore, ({ store }) => store),
)

export interface ImportCounts {
  readonly added: number
  readonly present: number
  readonly authorities: number
  readonly revokedAdded: number
  readonly revokedPresent: number
}

/**
 * `keys import`: the lines of an authorized keys file (and the entries of a revoked keys file) into
 * the database, in one transaction under the write lock. A line already there with the same key and
 * options counts as present, so importing twice adds nothing. The caller has refused bad lines.
 */
export const importIntoDatabase = (
  keys: ReadonlyArray<StoredKey>,
  revoked: {
    readonly keys: ReadonlyArray<RevokedKeyRow>
    readonly certificates: ReadonlyArray<RevokedCertificateRow>
  },
  source: string,
) =>
  Effect.gen(function* () {
    const database = yield* KeyDatabase
    const now = new Date(yield* Clock.currentTimeMillis).toISOString()
    return yield* database.withAdvisoryLock(
      writeLockKey,
      database.transaction((tx) =>
        Effect.gen(function* () {
          let added = 0
          let present = 0
          let authorities = 0
          for (const key of keys) {
            const blob = key.blob.toString("base64")
            const existing = yield* tx.query(
              "SELECT 1 FROM mcp_ssh_authorized_keys WHERE key_blob = $1 AND coalesce(options, '') = $2 LIMIT 1",
              [blob, key.options ?? ""],
            )
            if (existing.length > 0) {
              present++
              continue
            }
            const lineSource = key.source ?? `${source}:${key.line}`
            yield* tx.query(
              "INSERT INTO mcp_ssh_authorized_keys (kind, options, key_type, key_blob, fingerprint, comment, added_at, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
              [
                key.kind,
                key.options ?? null,
                key.type,
                blob,
                key.fingerprint,
                key.comment,
                key.addedAt ?? now,
                lineSource,
              ],
            )
            yield* tx.query(
              "INSERT INTO mcp_ssh_key_history (action, fingerprint, kind, options, source, replica) VALUES ('import', $1, $2, $3, $4, $5)",
              [key.fingerprint, key.kind, key.options ?? null, lineSource, database.replica],
            )
            added++
            if (key.kind === "cert-authority") authorities++
          }
          let revokedAdded = 0
          for (const row of revoked.keys) {
            const inserted = yield* tx.query(
              "INSERT INTO mcp_ssh_revoked_keys (kind, value, source) VALUES ($1, $2, $3) ON CONFLICT (kind, value) DO NOTHING RETURNING id",
              [row.kind, row.value, source],
            )
            revokedAdded += inserted.length
          }
          for (const row of revoked.certificates) {
            const inserted = yield* tx.query(
              `INSERT INTO mcp_ssh_revoked_certificates (ca_blob, serial_low, serial_high, key_id, source)
               SELECT $1, $2::numeric, $3::numeric, $4::text, $5
               WHERE NOT EXISTS (SELECT 1 FROM mcp_ssh_revoked_certificates WHERE ca_blob = $1
                 AND serial_low IS NOT DISTINCT FROM $2::numeric AND serial_high IS NOT DISTINCT FROM $3::numeric
                 AND key_id IS NOT DISTINCT FROM $4::text)
               RETURNING id`,
              [row.ca_blob, row.serial_low, row.serial_high, row.key_id, source],
            )
            revokedAdded += inserted.length
          }
          const revokedPresent = revoked.keys.length + revoked.certificates.length - revokedAdded
          if (added + revokedAdded > 0) yield* tx.query("SELECT pg_notify($1, 'import')", [changeChannel])
          return { added, present, authorities, revokedAdded, revokedPresent } satisfies ImportCounts
        }),
      ),
    )
  })
