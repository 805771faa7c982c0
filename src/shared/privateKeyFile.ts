/**
 * An OpenSSH private key file, as the gateway's host key and the client's key both use one: loaded,
 * or generated (ed25519) when missing with the private file 0600, the `.pub` beside it 0644 and new
 * parent directories 0700. A file that group or others can read is refused, as OpenSSH refuses it.
 * Each side words its own refusals and decides what else the key must satisfy.
 */
import { dirname } from "node:path"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { errorText } from "./errorText.js"
import {
  type FileError,
  makeDirectory,
  readBytesWithMode,
  statIfExists,
  writeFileWithMode,
} from "./fileSystem.js"
import { generateEd25519KeyPair, type ParsedKey, utils } from "./ssh2.js"

export interface PrivateKeyPolicy {
  /** The comment of a generated key. */
  readonly comment: string
  /** Another process generating the file at the same moment is fine: use its key. */
  readonly acceptConcurrentKey: boolean
  /** The reason for refusing the file at `path` with these permissions (`0644`). */
  readonly tooOpen: (mode: string, path: string) => string
  /** The reason for refusing a file ssh2 cannot parse, from ssh2's message. */
  readonly unusable: (parseError: string) => string
}

export interface LoadedPrivateKey {
  readonly path: string
  /** The file's bytes, as ssh2's client and server take them (with the passphrase). */
  readonly content: Buffer
  readonly key: ParsedKey
  /** The public key's SSH wire form. */
  readonly blob: Buffer
  /** The key was made in this run. */
  readonly generated: boolean
}

export class PrivateKeyError extends Data.TaggedError("PrivateKeyError")<{
  readonly path: string
  readonly reason: string
}> {}

const generate = (path: string, passphrase: string | undefined, comment: string) =>
  Effect.gen(function* () {
    const pair = yield* Effect.try({
      try: () => generateEd25519KeyPair(comment, passphrase),
      catch: (error) => new PrivateKeyError({ path, reason: `cannot generate: ${errorText(error)}` }),
    })
    yield* makeDirectory(dirname(path))
    // Exclusive: never overwrite a key another process created in the meantime.
    yield* writeFileWithMode(path, pair.private, 0o600, { exclusive: true })
    yield* writeFileWithMode(`${path}.pub`, `${pair.public}\n`, 0o644)
  })

const modeText = (mode: number): string => (mode & 0o777).toString(8).padStart(4, "0")

export const loadPrivateKeyFile = (
  path: string,
  passphrase: string | undefined,
  policy: PrivateKeyPolicy,
): Effect.Effect<LoadedPrivateKey, PrivateKeyError> =>
  Effect.gen(function* () {
    const fail = (reason: string) => new PrivateKeyError({ path, reason })
    const cannotRead = (error: FileError) => fail(`cannot read: ${error.message}`)
    const existing = yield* statIfExists(path).pipe(Effect.mapError(cannotRead))
    let generated = false
    if (Option.isNone(existing)) {
      generated = yield* generate(path, passphrase, policy.comment).pipe(
        Effect.as(true),
        Effect.catchIf(
          (error) => error._tag === "FileError" && error.code === "EEXIST" && policy.acceptConcurrentKey,
          () => Effect.succeed(false),
        ),
        Effect.mapError((error) =>
          error._tag === "FileError" ? fail(`cannot generate: ${error.message}`) : error,
        ),
      )
    }
    // Checked on the bytes read, whoever made the file: also one another process made meanwhile.
    const { content, mode } = yield* readBytesWithMode(path).pipe(Effect.mapError(cannotRead))
    if ((mode & 0o077) !== 0) return yield* fail(policy.tooOpen(modeText(mode), path))
    const parsed = utils.parseKey(content, passphrase)
    if (parsed instanceof Error) return yield* fail(policy.unusable(parsed.message))
    const key = Array.isArray(parsed) ? parsed[0] : parsed
    if (key === undefined || !key.isPrivateKey()) return yield* fail("the file holds no private key")
    return { path, content, key, blob: key.getPublicSSH(), generated }
  })
