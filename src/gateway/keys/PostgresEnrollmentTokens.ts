/**
 * Enrollment tokens in the key database (hashes only), shared by every replica: a token created on
 * one (or by the CLI) registers keys through any other. Same rules as the token file (tokens.ts);
 * reads and writes run under the key store's write lock, so a use is counted once across replicas.
 */
import { randomBytes } from "node:crypto"
import { Clock, Effect, Layer } from "effect"
import { announceIssued, EnrollmentTokens, type EnrollmentTokensShape } from "./EnrollmentTokens.js"
import { KeyDatabase, type Querier } from "./KeyDatabase.js"
import { KeyStore } from "./KeyStore.js"
import {
  type TokenRow,
  tokenChanges,
  tokenColumns,
  tokenRecordOfRow,
  tokenRowParameters,
} from "./postgresRows.js"
import { checkToken, formatToken, newRecord, pruneExpired, redeemToken, type TokenRecord } from "./tokens.js"

const upsert = `INSERT INTO mcp_ssh_enrollment_tokens (${tokenColumns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO UPDATE SET uses_left = EXCLUDED.uses_left, used_by = EXCLUDED.used_by`

/** Apply what changed between the records read and the records to keep, in one transaction. */
const writeChanges = (tx: Querier, before: ReadonlyArray<TokenRecord>, after: ReadonlyArray<TokenRecord>) =>
  Effect.gen(function* () {
    const { removed, written } = tokenChanges(before, after)
    if (removed.length > 0)
      yield* tx.query("DELETE FROM mcp_ssh_enrollment_tokens WHERE id = ANY($1::text[])", [removed])
    for (const record of written) yield* tx.query(upsert, tokenRowParameters(record))
  })

export const PostgresEnrollmentTokensLive = Layer.effect(
  EnrollmentTokens,
  Effect.gen(function* () {
    const database = yield* KeyDatabase
    const keyStore = yield* KeyStore
    const read = Effect.map(
      database.query<TokenRow>(
        `SELECT ${tokenColumns} FROM mcp_ssh_enrollment_tokens ORDER BY created_at, id`,
      ),
      (rows) => rows.map(tokenRecordOfRow),
    )
    const now = Effect.map(Clock.currentTimeMillis, (millis) => new Date(millis))

    return {
      path: database.shown,
      create: ({ uses, ttlSeconds, identity }) =>
        keyStore.withWriteLock(
          Effect.gen(function* () {
            const token = formatToken(randomBytes(32))
            const at = yield* now
            const record = newRecord({
              id: randomBytes(4).toString("hex"),
              token,
              uses,
              ttlSeconds,
              now: at,
              identity,
            })
            const records = yield* read
            yield* database.transaction((tx) =>
              writeChanges(tx, records, [...pruneExpired(records, at), record]),
            )
            return yield* announceIssued(record, token, uses)
          }),
        ),
      check: (token, fingerprint) =>
        Effect.gen(function* () {
          return checkToken(yield* read, token, fingerprint, yield* now)
        }),
      redeem: (token, fingerprint, consume) =>
        keyStore.withWriteLock(
          Effect.gen(function* () {
            const records = yield* read
            const result = redeemToken(records, token, fingerprint, yield* now, consume)
            yield* database.transaction((tx) => writeChanges(tx, records, result.records))
            return result.check
          }),
        ),
    } satisfies EnrollmentTokensShape
  }),
)
