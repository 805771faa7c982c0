/**
 * The client keys allowed in: an OpenSSH authorized_keys file at --authorized-clients, re-read when it
 * changes (so edits take effect without a restart). Keys are matched by blob in constant time.
 *
 * The write side (add, revoke) edits the file atomically under a lock that the running server and
 * the offline CLI share, and announces revoked keys so their live connections can be closed.
 */
import { timingSafeEqual } from "node:crypto"
import {
  Clock,
  Context,
  Duration,
  Effect,
  Either,
  FiberRef,
  Layer,
  Option,
  PubSub,
  type Queue,
  Schedule,
  Scope,
  SynchronizedRef,
} from "effect"
import { readText, statIfExists } from "../../shared/fileSystem.js"
import { expandHome } from "../../shared/paths.js"
import { type AuthorizedKey, type PublicKey, parseAuthorizedKeys } from "../../shared/publicKey.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { StoreError, type StoreUnavailable } from "../errors.js"
import { appendKey, readStoredKeys, removeKey, type StoredKey } from "./authorizedKeysFile.js"
import { lockFile, readTextIfExists, writeFileAtomic } from "./files.js"
import { forget, type LoadState, type Snapshot, settle, unread } from "./keyLoads.js"

/** A write that failed: the store refused it, or (a database) cannot be reached now. */
export type StoreWriteError = StoreError | StoreUnavailable

export interface KeyStoreShape {
  /** Where the keys are, as logs may show it: the file's path, or the database URL without password. */
  readonly path: string
  /** Files whose changes the server watches to re-read the keys at once (none for a database). */
  readonly watchedFiles: ReadonlyArray<string>
  /** The keys, with when and how each was added when the gateway added it. */
  readonly list: Effect.Effect<ReadonlyArray<StoredKey>>
  /** The authorized key with exactly this blob, if any (key lines only: a CA line is no key). */
  readonly find: (blob: Buffer) => Effect.Effect<Option.Option<StoredKey>>
  /** The cert-authority lines of the CA with exactly this blob, in file order. */
  readonly findAuthority: (blob: Buffer) => Effect.Effect<ReadonlyArray<StoredKey>>
  /** The file as last loaded (re-read when it changed): every line in effect, and whether it was usable. */
  readonly snapshot: Effect.Effect<Snapshot>
  /** Whether the file holds this key now, read afresh (for decisions taken under the write lock). */
  readonly contains: (blob: Buffer) => Effect.Effect<boolean, StoreWriteError>
  /**
   * Add the key unless it is there already; true when it was added. `options` (the gateway's own,
   * e.g. an enrollment token's `mcp-identity`) are written before it.
   */
  readonly add: (key: PublicKey, source: string, options?: string) => Effect.Effect<boolean, StoreWriteError>
  /** Remove every line of the key with this fingerprint; the number of lines removed. `source` says who. */
  readonly revoke: (fingerprint: string, source?: string) => Effect.Effect<number, StoreWriteError>
  /**
   * Run `effect` as the only writer of the store: one fiber of this process at a time (a
   * semaphore), one process at a time (a lock file beside the keys). Nested calls do not wait.
   */
  readonly withWriteLock: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
  ) => Effect.Effect<A, E | StoreWriteError, R>
  /** Fingerprints of keys revoked from now on: by `revoke`, or removed from the file by hand. */
  readonly revocations: Effect.Effect<Queue.Dequeue<string>, never, Scope.Scope>
}

export class KeyStore extends Context.Tag("mcp-ssh/KeyStore")<KeyStore, KeyStoreShape>() {}

/** Compares every key, whatever matches first, so timing does not tell which keys are present. */
export const findByBlob = <K extends AuthorizedKey>(keys: ReadonlyArray<K>, blob: Buffer): Option.Option<K> =>
  Option.fromNullable(allByBlob(keys, blob)[0])

/** Every line with this blob, in file order; every line is compared, as in findByBlob. */
export const allByBlob = <K extends AuthorizedKey>(
  keys: ReadonlyArray<K>,
  blob: Buffer,
): ReadonlyArray<K> => {
  const found: Array<K> = []
  for (const key of keys) {
    if (key.blob.length === blob.length && timingSafeEqual(key.blob, blob)) found.push(key)
  }
  return found
}

const keyLines = (keys: ReadonlyArray<StoredKey>) => keys.filter((key) => key.kind === "key")
const authorityLines = (keys: ReadonlyArray<StoredKey>) => keys.filter((key) => key.kind === "cert-authority")

export const makeFileKeyStore = (configuredPath: string) =>
  Effect.gen(function* () {
    const path = expandHome(configuredPath)
    const state = yield* SynchronizedRef.make(unread)

    /** The next state from the file as it is now; run only inside the state's lock. */
    const load = (previous: LoadState): Effect.Effect<LoadState> =>
      Effect.gen(function* () {
        const info = yield* Effect.either(statIfExists(path))
        if (Either.isLeft(info)) {
          // EACCES, ENOTDIR, EIO...: said as they are, so the fix is not looked for in the wrong place.
          const version = `unreachable:${info.left.code ?? info.left.message}`
          if (previous.snapshot.version !== version)
            yield* Effect.logError(
              `authorized keys file ${path} cannot be examined (${info.left.message}): no client can log in`,
            )
          return settle(previous, version, [])
        }
        if (Option.isNone(info.right)) {
          if (previous.snapshot.version !== "missing")
            yield* Effect.logWarning(`authorized keys file ${path} does not exist: no client can log in`)
          return settle(previous, "missing", [])
        }
        const { mtimeMs, ctimeMs, size, ino, mode } = info.right.value
        const version = `${ino}:${size}:${mtimeMs}:${ctimeMs}:${mode}`
        if (version === previous.snapshot.version) return previous
        if ((mode & 0o022) !== 0) {
          yield* Effect.logError(
            `authorized keys file ${path} is writable by group or others (mode ${(mode & 0o777).toString(8)}): ignored until fixed`,
          )
          return settle(previous, version, [])
        }
        const text = yield* Effect.either(readText(path))
        if (Either.isLeft(text)) {
          yield* Effect.logError(`authorized keys file ${path} cannot be read (${text.left.message})`)
          return settle(previous, version, [])
        }
        const parsed = readStoredKeys(text.right)
        for (const problem of parsed.problems) {
          yield* Effect.logWarning(`${path}:${problem.line}: ignored: ${problem.reason}`)
        }
        for (const key of parsed.keys) {
          for (const warning of key.keyOptions.warnings) {
            yield* Effect.logWarning(`${path}:${key.line}: ${warning}`)
          }
        }
        yield* Effect.logInfo(`loaded ${parsed.keys.length} authorized key(s) from ${path}`)
        return settle(previous, version, parsed.keys, true)
      })

    /**
     * Logins reload concurrently: one load at a time (stat, read, replace the state), so a slow load
     * of an older file never lands after a newer one and brings back keys, or removals, already gone.
     */
    const refresh = SynchronizedRef.updateAndGetEffect(state, load)
    const snapshot = Effect.map(refresh, (loaded) => loaded.snapshot)
    const current = Effect.map(snapshot, (loaded) => loaded.keys)

    // --- write side
    const semaphore = yield* Effect.makeSemaphore(1)
    const holdsLock = FiberRef.unsafeMake(false)
    const lockPath = `${path}.lock`
    const withWriteLock = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StoreError, R> =>
      Effect.flatMap(FiberRef.get(holdsLock), (held) =>
        held
          ? effect
          : semaphore.withPermits(1)(
              Effect.acquireUseRelease(
                Scope.make(),
                (scope) =>
                  Scope.extend(lockFile(lockPath), scope).pipe(
                    Effect.zipRight(Effect.locally(effect, holdsLock, true)),
                  ),
                (scope, exit) => Scope.close(scope, exit),
              ),
            ),
      )

    /** The file's text for an edit; a file others could have written is not built upon. */
    const readForEdit = Effect.flatMap(readTextIfExists(path), (existing) =>
      Option.match(existing, {
        onNone: () => Effect.succeed(""),
        onSome: ({ text, mode }) =>
          (mode & 0o022) !== 0
            ? Effect.fail(
                new StoreError({
                  path,
                  reason: `is writable by group or others (mode ${(mode & 0o777).toString(8)}); check it and chmod 600 it first`,
                }),
              )
            : Effect.succeed(text),
      }),
    )

    const revokedKeys = yield* PubSub.unbounded<string>()

    const add = (key: PublicKey, source: string, options?: string) =>
      withWriteLock(
        Effect.gen(function* () {
          const now = yield* Clock.currentTimeMillis
          const metadata = { addedAt: new Date(now).toISOString(), source }
          const edit = appendKey(yield* readForEdit, key, metadata, options)
          if (!edit.added) return false
          yield* writeFileAtomic(path, edit.content)
          yield* Effect.logInfo(
            `added key ${key.fingerprint} (${key.type}) from ${source}${options === undefined ? "" : ` with ${options}`}`,
          )
          return true
        }),
      )

    const revoke = (fingerprint: string) =>
      withWriteLock(
        Effect.gen(function* () {
          const edit = removeKey(yield* readForEdit, fingerprint)
          if (edit.removed === 0) return 0
          // Written, forgotten by the watcher and announced as one step: a request cut short between
          // them would leave the key's live sessions open, announced by nobody.
          yield* Effect.uninterruptible(
            Effect.gen(function* () {
              yield* writeFileAtomic(path, edit.content)
              yield* Effect.logInfo(`revoked key ${fingerprint}`)
              // Announced here, so the watcher must not announce it again when a load sees it gone.
              yield* SynchronizedRef.update(state, (loaded) => forget(loaded, fingerprint))
              yield* PubSub.publish(revokedKeys, fingerprint)
            }),
          )
          return edit.removed
        }),
      )

    const contains = (blob: Buffer) =>
      Effect.map(readTextIfExists(path), (existing) =>
        Option.match(existing, {
          onNone: () => false,
          onSome: ({ text }) => parseAuthorizedKeys(text).keys.some((key) => key.blob.equals(blob)),
        }),
      )

    /**
     * Keys that vanish from the file (an edit by hand, another process) count as revoked. A second
     * look a moment later keeps an editor that truncates before writing from ending every session.
     */
    const watchForRemovals = Effect.gen(function* () {
      const check = Effect.gen(function* () {
        if ((yield* refresh).removed.size === 0) return
        yield* Effect.sleep(Duration.millis(300))
        // A load in between takes back the keys that returned; an unusable file decides nothing yet.
        // Loaded and taken in one step, so no other load can add or take back a removal in between.
        const gone = yield* SynchronizedRef.modifyEffect(state, (loaded) =>
          Effect.map(load(loaded), (next): readonly [ReadonlyArray<string>, LoadState] =>
            next.snapshot.usable ? [[...next.removed], { ...next, removed: new Set() }] : [[], next],
          ),
        )
        for (const fingerprint of gone) {
          yield* Effect.logInfo(`key ${fingerprint} is no longer in ${path}: treated as revoked`)
          yield* PubSub.publish(revokedKeys, fingerprint)
        }
      })
      return yield* Effect.repeat(check, Schedule.spaced(Duration.seconds(1))).pipe(
        Effect.zipRight(Effect.never),
      )
    })

    return {
      path,
      watchedFiles: [path],
      list: current,
      find: (blob) => Effect.map(current, (keys) => findByBlob(keyLines(keys), blob)),
      findAuthority: (blob) => Effect.map(current, (keys) => allByBlob(authorityLines(keys), blob)),
      snapshot,
      contains,
      add,
      revoke,
      withWriteLock,
      revocations: PubSub.subscribe(revokedKeys),
      watchForRemovals,
    } satisfies KeyStoreShape & { readonly watchForRemovals: Effect.Effect<never> }
  })

/** The gateway's key store: also watches the file, so keys removed by hand end their sessions. */
export const KeyStoreLive = Layer.scoped(
  KeyStore,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const store = yield* makeFileKeyStore(settings.authorizedClients)
    yield* Effect.forkScoped(store.watchForRemovals)
    return store
  }),
)

/** The key store of the offline CLI: reads and writes the same file, watches nothing. */
export const KeyStoreOfflineLive = Layer.effect(
  KeyStore,
  Effect.flatMap(GatewayConfig, ({ settings }) => makeFileKeyStore(settings.authorizedClients)),
)
