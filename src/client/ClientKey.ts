/**
 * The client's own key: loaded from --client-key, or generated there (ed25519, OpenSSH format) when
 * missing (see privateKeyFile.ts), and the public key line it registers.
 */
import { hostname } from "node:os"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { loadPrivateKeyFile } from "../shared/privateKeyFile.js"
import { fingerprintOf, formatPublicKey, isKeyProblem } from "../shared/publicKey.js"
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

export const loadClientKey = (path: string, passphrase: string | undefined) =>
  Effect.gen(function* () {
    const { content, key, blob, generated } = yield* loadPrivateKeyFile(path, passphrase, {
      comment: `mcp-ssh-client@${hostname()}`,
      // Another client started at the same moment made it first: use theirs.
      acceptConcurrentKey: true,
      tooOpen: (mode) =>
        `permissions ${mode} are too open: a private key must not be accessible by others (chmod 600 ${path})`,
      unusable: (problem) =>
        /passphrase|encrypt|decrypt/i.test(problem)
          ? `cannot decrypt the key: ${passphrase === undefined ? "it is encrypted; give --passphrase" : "wrong --passphrase"}`
          : `not a usable private key (${problem})`,
    }).pipe(Effect.mapError((error) => new ClientKeyError({ path: error.path, reason: error.reason })))
    if (generated) {
      yield* Effect.logInfo(`generated a new ed25519 client key at ${path} (public half: ${path}.pub)`)
    }
    const withComment = formatPublicKey({ type: key.type, blob, comment: key.comment })
    // The key API refuses comments it cannot store safely; the key alone is what matters.
    const publicKeyLine = isKeyProblem(validateSubmittedKey(withComment))
      ? formatPublicKey({ type: key.type, blob, comment: "" })
      : withComment
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
