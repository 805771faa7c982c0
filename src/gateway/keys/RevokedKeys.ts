/**
 * `--revoked-keys`: the keys and certificates no login may use, as sshd's RevokedKeys reads them (an
 * OpenSSH KRL, or a list of public keys). Re-read when the file changes, like the authorized keys, so
 * `ssh-keygen -k -u` takes effect at the next login.
 *
 * Fail closed, as sshd: while the file is configured but missing, unreadable or not a valid KRL or key
 * list, every login is refused (logged once per version of the file). Live connections are left alone
 * then: an unreadable file says nothing about which of them to end.
 */
import { Context, Effect, Either, Layer, Option, SynchronizedRef } from "effect"
import { readBytesWithMode, statIfExists } from "../../shared/fileSystem.js"
import { expandHome } from "../../shared/paths.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { noRevocations, parseRevokedKeysFile, type Revocations } from "../identity/krl.js"

export type RevocationState =
  | { readonly _tag: "Loaded"; readonly version: string; readonly revocations: Revocations }
  /** Configured but not usable: refuse every login. */
  | { readonly _tag: "Unusable"; readonly version: string; readonly reason: string }

export interface RevokedKeysShape {
  /** The revocations as the file is now (read again only when it changed). */
  readonly current: Effect.Effect<RevocationState>
}

export class RevokedKeys extends Context.Tag("mcp-ssh/RevokedKeys")<RevokedKeys, RevokedKeysShape>() {}

/** Without --revoked-keys nothing is revoked. */
export const nothingRevoked: RevocationState = { _tag: "Loaded", version: "none", revocations: noRevocations }

export const makeRevokedKeys = (configuredPath: string) =>
  Effect.gen(function* () {
    const path = expandHome(configuredPath)
    const state = yield* SynchronizedRef.make<RevocationState>({
      _tag: "Unusable",
      version: "unread",
      reason: "not read yet",
    })

    const unusable = (previous: RevocationState, version: string, reason: string) =>
      previous.version === version
        ? Effect.succeed(previous)
        : Effect.as(
            Effect.logError(`revoked keys file ${path} ${reason}: every login is refused until it is fixed`),
            { _tag: "Unusable" as const, version, reason },
          )

    const load = (previous: RevocationState): Effect.Effect<RevocationState> =>
      Effect.gen(function* () {
        const info = yield* Effect.either(statIfExists(path))
        if (Either.isLeft(info))
          return yield* unusable(previous, "unreachable", `cannot be examined (${info.left.message})`)
        if (Option.isNone(info.right)) return yield* unusable(previous, "missing", "does not exist")
        const { mtimeMs, ctimeMs, size, ino } = info.right.value
        const version = `${ino}:${size}:${mtimeMs}:${ctimeMs}`
        if (version === previous.version) return previous
        const read = yield* Effect.either(readBytesWithMode(path))
        if (Either.isLeft(read))
          return yield* unusable(previous, version, `cannot be read (${read.left.message})`)
        const parsed = parseRevokedKeysFile(read.right.content)
        if (Either.isLeft(parsed))
          return yield* unusable(previous, version, `is not usable (${parsed.left.message})`)
        const revocations = parsed.right
        yield* Effect.logInfo(
          `loaded revoked keys from ${path} (${revocations.format}${revocations.format === "krl" ? ` version ${revocations.version}` : ""}: ${describe(revocations)})`,
        )
        return { _tag: "Loaded", version, revocations }
      })

    // One load at a time, as the key store: an older read never lands after a newer one.
    const current = SynchronizedRef.updateAndGetEffect(state, load)
    yield* current
    return { current } satisfies RevokedKeysShape
  })

const describe = (revocations: Revocations): string => {
  const keys = revocations.keys.size + revocations.sha1.size + revocations.sha256.size
  let serials = 0
  for (const entry of revocations.certificates.values()) serials += entry.serials.length + entry.keyIds.size
  return `${keys} key(s), ${serials} certificate serial range(s) or key id(s)`
}

export const RevokedKeysLive = Layer.effect(
  RevokedKeys,
  Effect.flatMap(GatewayConfig, ({ settings }) =>
    settings.revokedKeys === undefined
      ? Effect.succeed({ current: Effect.succeed(nothingRevoked) })
      : makeRevokedKeys(settings.revokedKeys),
  ),
)
