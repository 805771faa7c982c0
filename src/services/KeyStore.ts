/**
 * The client keys allowed in: an OpenSSH authorized_keys file at --authorized-clients, re-read when it
 * changes (so edits take effect without a restart). Keys are matched by blob in constant time.
 */
import { timingSafeEqual } from "node:crypto"
import { readFile, stat } from "node:fs/promises"
import { Context, Effect, Layer, Option, Ref } from "effect"
import { type AuthorizedKey, parseAuthorizedKeys } from "../domain/authorizedKeys.js"
import { expandHome, GatewayConfig } from "./GatewayConfig.js"

export interface KeyStoreShape {
  readonly path: string
  readonly list: Effect.Effect<ReadonlyArray<AuthorizedKey>>
  /** The authorized key with exactly this blob, if any. */
  readonly find: (blob: Buffer) => Effect.Effect<Option.Option<AuthorizedKey>>
}

export class KeyStore extends Context.Tag("mcp-ssh/KeyStore")<KeyStore, KeyStoreShape>() {}

interface Snapshot {
  /** Identity of the file version the keys were read from; "" when there is no usable file. */
  readonly version: string
  readonly keys: ReadonlyArray<AuthorizedKey>
}

/** Compares every key, whatever matches first, so timing does not tell which keys are present. */
export const findByBlob = (
  keys: ReadonlyArray<AuthorizedKey>,
  blob: Buffer,
): Option.Option<AuthorizedKey> => {
  let found: AuthorizedKey | undefined
  for (const key of keys) {
    const same = key.blob.length === blob.length && timingSafeEqual(key.blob, blob)
    if (same && found === undefined) found = key
  }
  return Option.fromNullable(found)
}

export const makeFileKeyStore = (configuredPath: string) =>
  Effect.gen(function* () {
    const path = expandHome(configuredPath)
    const snapshot = yield* Ref.make<Snapshot>({ version: "unread", keys: [] })

    const reload = (version: string, keys: ReadonlyArray<AuthorizedKey>) =>
      Ref.set(snapshot, { version, keys }).pipe(Effect.as(keys))

    const current: Effect.Effect<ReadonlyArray<AuthorizedKey>> = Effect.gen(function* () {
      const info = yield* Effect.tryPromise(() => stat(path)).pipe(Effect.option)
      const previous = yield* Ref.get(snapshot)
      if (Option.isNone(info)) {
        if (previous.version !== "missing") {
          yield* Effect.logWarning(`authorized keys file ${path} does not exist: no client can log in`)
        }
        return yield* reload("missing", [])
      }
      const { mtimeMs, ctimeMs, size, ino, mode } = info.value
      const version = `${ino}:${size}:${mtimeMs}:${ctimeMs}:${mode}`
      if (version === previous.version) return previous.keys
      if ((mode & 0o022) !== 0) {
        yield* Effect.logError(
          `authorized keys file ${path} is writable by group or others (mode ${(mode & 0o777).toString(8)}): ignored until fixed`,
        )
        return yield* reload(version, [])
      }
      const text = yield* Effect.tryPromise(() => readFile(path, "utf8")).pipe(Effect.option)
      if (Option.isNone(text)) {
        yield* Effect.logError(`authorized keys file ${path} cannot be read`)
        return yield* reload(version, [])
      }
      const parsed = parseAuthorizedKeys(text.value)
      for (const problem of parsed.problems) {
        yield* Effect.logWarning(`${path}:${problem.line}: ignored: ${problem.reason}`)
      }
      yield* Effect.logInfo(`loaded ${parsed.keys.length} authorized key(s) from ${path}`)
      return yield* reload(version, parsed.keys)
    })

    return {
      path,
      list: current,
      find: (blob) => Effect.map(current, (keys) => findByBlob(keys, blob)),
    } satisfies KeyStoreShape
  })

export const KeyStoreLive = Layer.effect(
  KeyStore,
  Effect.flatMap(GatewayConfig, ({ settings }) => makeFileKeyStore(settings.authorizedClients)),
)
