/**
 * The client's own key: loaded from --client-key, or generated there (ed25519, OpenSSH format) when
 * missing: private file 0600, `.pub` beside it 0644, parent directory created 0700. A private key
 * that group or others can read is refused, as OpenSSH refuses it.
 */
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises"
import { hostname } from "node:os"
import { dirname } from "node:path"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { fingerprintOf, isKeyProblem } from "../shared/publicKey.js"
import { generateEd25519KeyPair, utils } from "../shared/ssh2.js"
import { validateSubmittedKey } from "../shared/submittedKey.js"
import { ClientConfig } from "./ClientConfig.js"
import { ClientKeyError } from "./errors.js"

export interface ClientKeyShape {
  readonly path: string
  /** The key file's bytes and passphrase, as ssh2's client takes them. */
  readonly privateKey: Buffer
  readonly passphrase: string | undefined
  /** `ssh-ed25519 AAAA... comment`, as registered with the key API (comment dropped if unfit). */
  readonly publicKeyLine: string
  readonly fingerprint: string
  /** The key was made in this run. */
  readonly generated: boolean
}

export class ClientKey extends Context.Tag("mcp-ssh/ClientKey")<ClientKey, ClientKeyShape>() {}

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const codeOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

const generate = (path: string, passphrase: string | undefined) =>
  Effect.tryPromise({
    try: async () => {
      const comment = `mcp-ssh-client@${hostname()}`
      const pair = generateEd25519KeyPair(comment, passphrase)
      await mkdir(dirname(path), { recursive: true, mode: 0o700 })
      // "wx": never overwrite a key another process created in the meantime.
      await writeFile(path, pair.private, { mode: 0o600, flag: "wx" })
      await writeFile(`${path}.pub`, `${pair.public}\n`, { mode: 0o644 })
      await chmod(`${path}.pub`, 0o644)
    },
    catch: (error) =>
      codeOf(error) === "EEXIST"
        ? "exists"
        : new ClientKeyError({ path, reason: `cannot generate: ${errorText(error)}` }),
  })

const modeText = (mode: number): string => (mode & 0o777).toString(8).padStart(4, "0")

export const loadClientKey = (path: string, passphrase: string | undefined) =>
  Effect.gen(function* () {
    const existing = yield* Effect.tryPromise({
      try: () => stat(path).then((info): number | undefined => info.mode),
      catch: (error) => error,
    }).pipe(
      Effect.catchAll((error) =>
        codeOf(error) === "ENOENT"
          ? Effect.succeed(undefined)
          : Effect.fail(new ClientKeyError({ path, reason: `cannot read: ${errorText(error)}` })),
      ),
    )
    let generated = false
    if (existing === undefined) {
      const made = yield* generate(path, passphrase).pipe(
        Effect.as(true),
        // Another client started at the same moment made it first: use theirs.
        Effect.catchIf(
          (error): error is "exists" => error === "exists",
          () => Effect.succeed(false),
        ),
      )
      if (made) {
        generated = true
        yield* Effect.logInfo(`generated a new ed25519 client key at ${path} (public half: ${path}.pub)`)
      }
    } else if ((existing & 0o077) !== 0) {
      return yield* new ClientKeyError({
        path,
        reason: `permissions ${modeText(existing)} are too open: a private key must not be accessible by others (chmod 600 ${path})`,
      })
    }
    const content = yield* Effect.tryPromise({
      try: () => readFile(path),
      catch: (error) => new ClientKeyError({ path, reason: `cannot read: ${errorText(error)}` }),
    })
    const parsed = utils.parseKey(content, passphrase)
    if (parsed instanceof Error) {
      const encrypted = /passphrase|encrypt|decrypt/i.test(parsed.message)
      return yield* new ClientKeyError({
        path,
        reason: encrypted
          ? `cannot decrypt the key: ${passphrase === undefined ? "it is encrypted; give --passphrase" : "wrong --passphrase"}`
          : `not a usable private key (${parsed.message})`,
      })
    }
    const key = Array.isArray(parsed) ? parsed[0] : parsed
    if (key === undefined || !key.isPrivateKey()) {
      return yield* new ClientKeyError({ path, reason: "the file holds no private key" })
    }
    const blob = key.getPublicSSH()
    const bare = `${key.type} ${blob.toString("base64")}`
    const withComment = key.comment === "" ? bare : `${bare} ${key.comment}`
    // The key API refuses comments it cannot store safely; the key alone is what matters.
    const publicKeyLine = isKeyProblem(validateSubmittedKey(withComment)) ? bare : withComment
    return {
      path,
      privateKey: content,
      passphrase,
      publicKeyLine,
      fingerprint: fingerprintOf(blob),
      generated,
    } satisfies ClientKeyShape
  })

export const ClientKeyLive = Layer.effect(
  ClientKey,
  Effect.flatMap(ClientConfig, (settings) => loadClientKey(settings.clientKey, settings.passphrase)),
)
