/**
 * Issued enrollment tokens, in a JSON file beside the authorized keys (hashes only, 0600). The
 * running server and the offline CLI both read and write it, under the key store's write lock, so a
 * token created by `mcp-ssh-server tokens create` works at once and a use is never counted twice.
 */
import { randomBytes } from "node:crypto"
import { Clock, Context, Effect, Either, Layer, Option } from "effect"
import { expandHome } from "../../shared/paths.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { StoreError } from "../errors.js"
import { readTextIfExists, writeFileAtomic } from "./files.js"
import { KeyStore, type StoreWriteError } from "./KeyStore.js"
import {
  checkToken,
  formatToken,
  formatTokenFile,
  newRecord,
  parseTokenFile,
  pruneExpired,
  redeemToken,
  type TokenCheck,
  type TokenIdentity,
  type TokenRecord,
} from "./tokens.js"

export interface IssuedToken {
  /** The secret itself: shown once, never stored. */
  readonly token: string
  readonly id: string
  readonly uses: number
  readonly expiresAt: string
  readonly identity: TokenIdentity
}

/** Both stores' last step of `create`: log the new token (never the secret) and say what was issued. */
export const announceIssued = (
  record: TokenRecord,
  token: string,
  uses: number,
): Effect.Effect<IssuedToken> => {
  const names = [
    ...(record.identity === undefined ? [] : [`identity ${record.identity}`]),
    ...(record.groups === undefined ? [] : [`groups ${record.groups.join(",")}`]),
  ]
  return Effect.as(
    Effect.logInfo(
      `created enrollment token ${record.id} (${uses} use(s), until ${record.expires_at}${names.map((name) => `, ${name}`).join("")})`,
    ),
    {
      token,
      id: record.id,
      uses,
      expiresAt: record.expires_at,
      identity: { identity: record.identity, groups: record.groups ?? [] },
    },
  )
}

export interface EnrollmentTokensShape {
  /** The token file, or the database URL without password. */
  readonly path: string
  readonly create: (options: {
    readonly uses: number
    readonly ttlSeconds: number
    /** Checked already (checkTokenIdentity). */
    readonly identity?: TokenIdentity | undefined
  }) => Effect.Effect<IssuedToken, StoreWriteError>
  /** May this token register this key? Counts nothing. */
  readonly check: (token: string, fingerprint: string) => Effect.Effect<TokenCheck, StoreWriteError>
  /**
   * Check the token and, if `consume`, count one use for this key. Run it inside the key store's
   * write lock together with adding the key, so both happen or neither.
   */
  readonly redeem: (
    token: string,
    fingerprint: string,
    consume: boolean,
  ) => Effect.Effect<TokenCheck, StoreWriteError>
}

export class EnrollmentTokens extends Context.Tag("mcp-ssh/EnrollmentTokens")<
  EnrollmentTokens,
  EnrollmentTokensShape
>() {}

/** Where the tokens live: --token-store, or beside the authorized keys. */
export const tokenStorePath = (settings: {
  readonly tokenStore: string | undefined
  readonly authorizedClients: string
}): string => expandHome(settings.tokenStore ?? `${settings.authorizedClients}.tokens`)

export const EnrollmentTokensLive = Layer.effect(
  EnrollmentTokens,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const keyStore = yield* KeyStore
    const path = tokenStorePath(settings)

    const read: Effect.Effect<ReadonlyArray<TokenRecord>, StoreError> = Effect.flatMap(
      readTextIfExists(path),
      (existing) => {
        if (Option.isNone(existing)) return Effect.succeed([])
        // Whoever can write this file can mint tokens, so a loose mode disables it, as sshd would.
        if ((existing.value.mode & 0o022) !== 0) {
          return Effect.fail(
            new StoreError({ path, reason: "is writable by group or others; check it and chmod 600 it" }),
          )
        }
        return Either.match(parseTokenFile(existing.value.text), {
          onLeft: (problem) =>
            Effect.fail(
              new StoreError({ path, reason: `is not a token store (${problem}); fix or remove it` }),
            ),
          onRight: Effect.succeed,
        })
      },
    )
    const write = (records: ReadonlyArray<TokenRecord>) => writeFileAtomic(path, formatTokenFile(records))
    const now = Effect.map(Clock.currentTimeMillis, (millis) => new Date(millis))

    return {
      path,
      create: ({ uses, ttlSeconds, identity }) =>
        keyStore.withWriteLock(
          Effect.gen(function* () {
            const token = formatToken(randomBytes(32))
            const record = newRecord({
              id: randomBytes(4).toString("hex"),
              token,
              uses,
              ttlSeconds,
              now: yield* now,
              identity,
            })
            yield* write([...pruneExpired(yield* read, yield* now), record])
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
            const changed =
              result.records.length !== records.length ||
              result.records.some((record, index) => record !== records[index])
            if (changed) yield* write(result.records)
            return result.check
          }),
        ),
    } satisfies EnrollmentTokensShape
  }),
)
