/**
 * The server's host key: loaded from --server-key, or generated there (ed25519) on first start.
 * A private key readable by group or others is refused, like sshd does.
 */
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises"
import { dirname } from "node:path"
import { Context, Effect, Layer } from "effect"
import { expandHome } from "../../shared/paths.js"
import { checkBlob, fingerprintOf } from "../../shared/publicKey.js"
import { generateEd25519KeyPair, type ParsedKey, utils } from "../../shared/ssh2.js"
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

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const isMissing = (error: unknown): boolean =>
  typeof error === "object" && error !== null && "code" in error && error.code === "ENOENT"

const generate = (path: string, passphrase: string | undefined) =>
  Effect.tryPromise({
    try: async () => {
      const pair = generateEd25519KeyPair("mcp-ssh host key", passphrase)
      await mkdir(dirname(path), { recursive: true, mode: 0o700 })
      // "wx": never overwrite a key another process created in the meantime.
      await writeFile(path, pair.private, { mode: 0o600, flag: "wx" })
      await writeFile(`${path}.pub`, `${pair.public}\n`, { mode: 0o644 })
      await chmod(`${path}.pub`, 0o644)
    },
    catch: (error) => new HostKeyError({ path, reason: `cannot generate: ${errorText(error)}` }),
  })

export const loadHostKey = (configuredPath: string, passphrase: string | undefined) =>
  Effect.gen(function* () {
    const path = expandHome(configuredPath)
    const existing = yield* Effect.tryPromise({
      try: () => stat(path).then((info) => info as { mode: number } | undefined),
      catch: (error) => error,
    }).pipe(
      Effect.catchAll((error) =>
        isMissing(error)
          ? Effect.succeed(undefined)
          : Effect.fail(new HostKeyError({ path, reason: `cannot read: ${errorText(error)}` })),
      ),
    )
    if (existing === undefined) {
      yield* generate(path, passphrase)
      yield* Effect.logInfo("generated a new ed25519 host key").pipe(Effect.annotateLogs({ path }))
    } else if ((existing.mode & 0o077) !== 0) {
      return yield* new HostKeyError({
        path,
        reason: `permissions ${(existing.mode & 0o777).toString(8).padStart(4, "0")} are too open; the private key must not be accessible by others (chmod 600 ${path})`,
      })
    }
    const content = yield* Effect.tryPromise({
      try: () => readFile(path),
      catch: (error) => new HostKeyError({ path, reason: `cannot read: ${errorText(error)}` }),
    })
    const parsed = utils.parseKey(content, passphrase)
    if (parsed instanceof Error) {
      return yield* new HostKeyError({
        path,
        reason: `not a usable private key (${parsed.message})${passphrase === undefined ? "; if it is encrypted, give --passphrase" : ""}`,
      })
    }
    const key = Array.isArray(parsed) ? parsed[0] : parsed
    if (key === undefined || !key.isPrivateKey()) {
      return yield* new HostKeyError({ path, reason: "the file holds no private key" })
    }
    const blob = key.getPublicSSH()
    const problem = checkBlob(key.type, blob)
    if (problem !== undefined) return yield* new HostKeyError({ path, reason: problem.reason })
    return {
      path,
      privateKey: key,
      serverKey: { key: content, passphrase },
      publicKeyLine: `${key.type} ${blob.toString("base64")}`,
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
