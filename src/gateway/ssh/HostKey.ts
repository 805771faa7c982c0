/**
 * The server's host key: loaded from --server-key, or generated there (ed25519) on first start.
 * A private key readable by group or others is refused, like sshd does.
 */
import { Context, Effect, Layer } from "effect"
import { expandHome } from "../../shared/paths.js"
import { loadPrivateKeyFile } from "../../shared/privateKeyFile.js"
import { checkBlob, fingerprintOf, formatPublicKey } from "../../shared/publicKey.js"
import type { ParsedKey } from "../../shared/ssh2.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { HostKeyError } from "../errors.js"

export interface HostKeyShape {
  readonly path: string
  readonly privateKey: ParsedKey
  /** The key file's bytes and passphrase, in the form ssh2's server takes. */
  readonly serverKey: { readonly key: Buffer; readonly passphrase: string | undefined }
  /** `ssh-ed25519 AAAA...`, as served by the key API and written to known_hosts. */
  readonly publicKeyLine: string
  readonly fingerprint: string
}

export class HostKey extends Context.Tag("mcp-ssh/HostKey")<HostKey, HostKeyShape>() {}

export const loadHostKey = (configuredPath: string, passphrase: string | undefined) =>
  Effect.gen(function* () {
    const { path, content, key, blob, generated } = yield* loadPrivateKeyFile(
      expandHome(configuredPath),
      passphrase,
      {
        comment: "mcp-ssh host key",
        acceptConcurrentKey: false,
        tooOpen: (mode, path) =>
          `permissions ${mode} are too open; the private key must not be accessible by others (chmod 600 ${path})`,
        unusable: (problem) =>
          `not a usable private key (${problem})${passphrase === undefined ? "; if it is encrypted, give --passphrase" : ""}`,
      },
    ).pipe(Effect.mapError((error) => new HostKeyError({ path: error.path, reason: error.reason })))
    if (generated) {
      yield* Effect.logInfo("generated a new ed25519 host key").pipe(Effect.annotateLogs({ path }))
    }
    // Host keys follow the same rules as client keys (no DSA, RSA of 2048 bits or more).
    const problem = checkBlob(key.type, blob)
    if (problem !== undefined) return yield* new HostKeyError({ path, reason: problem.reason })
    return {
      path,
      privateKey: key,
      serverKey: { key: content, passphrase },
      publicKeyLine: formatPublicKey({ type: key.type, blob, comment: "" }),
      fingerprint: fingerprintOf(blob),
    } satisfies HostKeyShape
  })

export const HostKeyLive = Layer.effect(
  HostKey,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const hostKey = yield* loadHostKey(settings.serverKey, settings.passphrase)
    yield* Effect.logInfo(`host key ${hostKey.fingerprint} (${hostKey.privateKey.type})`).pipe(
      Effect.annotateLogs({ path: hostKey.path }),
    )
    return hostKey
  }),
)
