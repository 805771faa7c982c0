/**
 * Revoked keys and certificate serials in the key database, for several gateways sharing them: what a
 * KRL or a revoked key list holds (`keys import --revoked-keys` fills it), read again at every change
 * notification and every 30 s. A `--revoked-keys` file still applies beside it: revoked in either is
 * revoked, and an unusable file refuses every login as it does alone.
 *
 * While the database cannot be reached the revocations last read stay in force: an outage never
 * takes one back.
 */
import { createHash } from "node:crypto"
import { Effect, Layer, Queue, Schedule, SynchronizedRef } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { noRevocations, type Revocations } from "../identity/krl.js"
import { KeyDatabase } from "./KeyDatabase.js"
import { resyncInterval } from "./PostgresKeyStore.js"
import {
  type RevokedCertificateRow,
  type RevokedKeyRow,
  revocationsOfRows,
  unionRevocations,
} from "./postgresRows.js"
import { makeRevokedKeys, type RevocationState, RevokedKeys } from "./RevokedKeys.js"

interface DatabaseRevocations {
  readonly version: string
  readonly revocations: Revocations
}

export const PostgresRevokedKeysLive = Layer.scoped(
  RevokedKeys,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const database = yield* KeyDatabase
    const file = settings.revokedKeys === undefined ? undefined : yield* makeRevokedKeys(settings.revokedKeys)
    const state = yield* SynchronizedRef.make<DatabaseRevocations>({
      version: "unread",
      revocations: noRevocations,
    })

    const load = SynchronizedRef.updateEffect(state, (previous) =>
      Effect.gen(function* () {
        const keys = yield* database.query<RevokedKeyRow>(
          "SELECT kind, value FROM mcp_ssh_revoked_keys ORDER BY id",
        )
        const certificates = yield* database.query<RevokedCertificateRow>(
          "SELECT ca_blob, serial_low::text AS serial_low, serial_high::text AS serial_high, key_id FROM mcp_ssh_revoked_certificates ORDER BY id",
        )
        const version = `db:${createHash("sha256")
          .update(JSON.stringify([keys, certificates]))
          .digest("hex")
          .slice(0, 16)}`
        if (version === previous.version) return previous
        if (keys.length + certificates.length > 0 || previous.version !== "unread")
          yield* Effect.logInfo(
            `loaded ${keys.length} revoked key(s) and ${certificates.length} revoked certificate entr(ies) from ${database.shown}`,
          )
        return { version, revocations: revocationsOfRows(keys, certificates) }
      }),
    )
    // Subscribed before the first read: a change notified while it runs is read again after it.
    const changes = yield* database.changes
    // As for the keys: the first read must succeed; later failures keep what was read.
    yield* load
    const follow = Effect.gen(function* () {
      const onChange = Effect.forever(
        Queue.take(changes).pipe(
          Effect.zipRight(Queue.takeAll(changes)),
          Effect.zipRight(Effect.ignore(load)),
        ),
      )
      const backstop = Effect.repeat(Effect.ignore(load), Schedule.spaced(resyncInterval))
      return yield* Effect.all([onChange, backstop], { concurrency: 2 })
    })
    yield* Effect.forkScoped(follow)

    const current: Effect.Effect<RevocationState> = Effect.gen(function* () {
      const fromDatabase = yield* SynchronizedRef.get(state)
      // Logins ask at every step: without a file there is nothing to unite.
      if (file === undefined) return { _tag: "Loaded", ...fromDatabase }
      const fromFile = yield* file.current
      if (fromFile._tag === "Unusable") return fromFile
      return {
        _tag: "Loaded",
        version: `${fromFile.version}|${fromDatabase.version}`,
        revocations: unionRevocations(fromFile.revocations, fromDatabase.revocations),
      }
    })
    return { current }
  }),
)
