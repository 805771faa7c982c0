/**
 * Enrollment tokens: secrets that let a client register its key through POST /register, each with a
 * number of uses and an expiry. Only their SHA-256 is stored (the tokens are 256 random bits, so a
 * fast hash is enough: nobody can guess one from its hash), in a JSON file the offline CLI and the
 * running server share.
 */
import { createHash, timingSafeEqual } from "node:crypto"
import { Either, ParseResult, Schema } from "effect"
import { groupNameProblem, identityNameProblem } from "../identity/authorizedKeyOptions.js"

export const tokenPrefix = "mcpssh_"
export const maxUses = 10_000
export const maxTtlSeconds = 365 * 24 * 3600
export const defaultTtl = "1h"

export const formatToken = (random: Uint8Array): string =>
  `${tokenPrefix}${Buffer.from(random).toString("base64url")}`

export const hashToken = (token: string): string => createHash("sha256").update(token, "utf8").digest("hex")

/** Compare two secrets without the time depending on where they differ (or on their lengths). */
export const secretsEqual = (given: string, expected: string): boolean =>
  timingSafeEqual(
    createHash("sha256").update(given, "utf8").digest(),
    createHash("sha256").update(expected, "utf8").digest(),
  )

const TokenRecordSchema = Schema.Struct({
  id: Schema.String,
  sha256: Schema.String.pipe(Schema.pattern(/^[0-9a-f]{64}$/)),
  uses: Schema.Int,
  uses_left: Schema.Int,
  created_at: Schema.String,
  expires_at: Schema.String,
  /** Keys registered with this token, so a client retrying after a lost answer gets the same answer. */
  used_by: Schema.Array(Schema.String),
  /** Written as `mcp-identity` / `mcp-groups` on the line of each key it registers. */
  identity: Schema.optional(Schema.String),
  groups: Schema.optional(Schema.Array(Schema.String)),
})
export type TokenRecord = typeof TokenRecordSchema.Type

const TokenFileSchema = Schema.parseJson(
  Schema.Struct({ version: Schema.Literal(1), tokens: Schema.Array(TokenRecordSchema) }),
)

export const parseTokenFile = (text: string): Either.Either<ReadonlyArray<TokenRecord>, string> =>
  text.trim() === ""
    ? Either.right([])
    : Schema.decodeUnknownEither(TokenFileSchema)(text).pipe(
        Either.map((file) => file.tokens),
        Either.mapLeft((error) =>
          ParseResult.ArrayFormatter.formatErrorSync(error)
            .map((issue) => `${issue.path.join(".") || "(top level)"}: ${issue.message}`)
            .join("; "),
        ),
      )

export const formatTokenFile = (records: ReadonlyArray<TokenRecord>): string =>
  `${JSON.stringify({ version: 1, tokens: records }, null, 2)}\n`

/** `90`, `90s`, `10m`, `12h`, `7d`: a lifetime in seconds. */
export const parseTtl = (text: string): Either.Either<number, string> => {
  const match = /^\s*(\d+)\s*([smhd]?)\s*$/i.exec(text)
  if (match === null) return Either.left(`'${text}' is not a duration; use e.g. 90s, 10m, 12h or 7d`)
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }[(match[2] ?? "").toLowerCase()] ?? 1
  const seconds = Number(match[1]) * unit
  if (seconds < 1) return Either.left("the lifetime must be at least 1 second")
  if (seconds > maxTtlSeconds) return Either.left("the lifetime may be at most 365 days")
  return Either.right(seconds)
}

export const checkUses = (uses: number): Either.Either<number, string> =>
  Number.isInteger(uses) && uses >= 1 && uses <= maxUses
    ? Either.right(uses)
    : Either.left(`uses must be a whole number from 1 to ${maxUses}`)

/** The identity and groups a token gives the keys it registers (none: the key's comment names it). */
export interface TokenIdentity {
  readonly identity: string | undefined
  readonly groups: ReadonlyArray<string>
}

/** Names as `mcp-identity` / `mcp-groups` take them; groups may come as a list or "a,b". */
export const checkTokenIdentity = (
  identity: string | undefined,
  groups: ReadonlyArray<string> | string | undefined,
): Either.Either<TokenIdentity, string> => {
  const list =
    groups === undefined
      ? []
      : (typeof groups === "string" ? groups.split(",") : groups).map((group) => group.trim())
  const identityProblem = identity === undefined ? undefined : identityNameProblem(identity)
  if (identityProblem !== undefined) return Either.left(`identity: ${identityProblem}`)
  for (const group of list) {
    const problem = groupNameProblem(group)
    if (problem !== undefined) return Either.left(`groups: ${problem}`)
  }
  return Either.right({ identity, groups: [...new Set(list)] })
}

export const newRecord = (options: {
  readonly id: string
  readonly token: string
  readonly uses: number
  readonly ttlSeconds: number
  readonly now: Date
  readonly identity?: TokenIdentity | undefined
}): TokenRecord => ({
  id: options.id,
  sha256: hashToken(options.token),
  uses: options.uses,
  uses_left: options.uses,
  created_at: options.now.toISOString(),
  expires_at: new Date(options.now.getTime() + options.ttlSeconds * 1000).toISOString(),
  used_by: [],
  ...(options.identity?.identity === undefined ? {} : { identity: options.identity.identity }),
  ...(options.identity === undefined || options.identity.groups.length === 0
    ? {}
    : { groups: options.identity.groups }),
})

export type TokenCheck =
  | {
      readonly _tag: "Accepted"
      readonly id: string
      readonly alreadyUsedForThisKey: boolean
      /** What the token says the key's line must carry. */
      readonly identity: TokenIdentity
    }
  | { readonly _tag: "Rejected"; readonly reason: string }

const isExpired = (record: TokenRecord, now: Date): boolean => Date.parse(record.expires_at) <= now.getTime()

/** Every record is compared, so the time taken does not tell which one matched. */
const findRecord = (records: ReadonlyArray<TokenRecord>, token: string): TokenRecord | undefined => {
  const given = Buffer.from(hashToken(token), "hex")
  let found: TokenRecord | undefined
  for (const record of records) {
    const stored = Buffer.from(record.sha256, "hex")
    if (stored.length === given.length && timingSafeEqual(stored, given) && found === undefined)
      found = record
  }
  return found
}

/** May this token register the key with this fingerprint now? Nothing is consumed. */
export const checkToken = (
  records: ReadonlyArray<TokenRecord>,
  token: string,
  fingerprint: string,
  now: Date,
): TokenCheck => {
  const record = findRecord(records, token)
  if (record === undefined) return { _tag: "Rejected", reason: "the enrollment token is not valid" }
  if (isExpired(record, now)) return { _tag: "Rejected", reason: "the enrollment token has expired" }
  const again = record.used_by.includes(fingerprint)
  if (record.uses_left <= 0 && !again) {
    return { _tag: "Rejected", reason: "the enrollment token has no uses left" }
  }
  return {
    _tag: "Accepted",
    id: record.id,
    alreadyUsedForThisKey: again,
    identity: { identity: record.identity, groups: record.groups ?? [] },
  }
}

/**
 * Check the token and, when `consume` is set and this key has not used it yet, count one use.
 * Used-up tokens are kept until they expire, for retries; long-expired ones are dropped.
 */
export const redeemToken = (
  records: ReadonlyArray<TokenRecord>,
  token: string,
  fingerprint: string,
  now: Date,
  consume: boolean,
): { readonly records: ReadonlyArray<TokenRecord>; readonly check: TokenCheck } => {
  const check = checkToken(records, token, fingerprint, now)
  const kept = pruneExpired(records, now)
  if (check._tag === "Rejected" || !consume || check.alreadyUsedForThisKey) return { records: kept, check }
  return {
    records: kept.map((record) =>
      record.id === check.id
        ? { ...record, uses_left: record.uses_left - 1, used_by: [...record.used_by, fingerprint] }
        : record,
    ),
    check,
  }
}

/** Expired tokens are kept a day, so a late client hears "expired" rather than "not valid". */
const keptAfterExpiry = 24 * 3600 * 1000

export const pruneExpired = (records: ReadonlyArray<TokenRecord>, now: Date): ReadonlyArray<TokenRecord> =>
  records.filter((record) => Date.parse(record.expires_at) + keptAfterExpiry > now.getTime())
