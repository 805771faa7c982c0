/**
 * Rows of the key database and what the gateway reads from them, as pure functions. A key row is an
 * authorized_keys line cut into columns: it is put back together and read with the same parser as
 * the file, so options mean exactly what they mean there (identity, groups, from=, expiry-time=...).
 */
import { createHash } from "node:crypto"
import { formatPublicKey } from "../../shared/publicKey.js"
import {
  type AuthorizedLine,
  parseAuthorizedKeyLine,
  type SkippedLine,
} from "../identity/authorizedKeyOptions.js"
import { noRevocations, type Revocations, type SerialRange } from "../identity/krl.js"
import type { StoredKey } from "./authorizedKeysFile.js"
import type { TokenRecord } from "./tokens.js"

export interface KeyRow {
  readonly id: string
  readonly kind: "key" | "cert-authority"
  readonly options: string | null
  readonly key_type: string
  readonly key_blob: string
  readonly fingerprint: string
  readonly comment: string
  readonly added_at: Date | string | null
  readonly source: string | null
}

/** The authorized_keys line a row stands for. */
export const keyRowLine = (row: Pick<KeyRow, "options" | "key_type" | "key_blob" | "comment">): string =>
  `${row.options === null || row.options === "" ? "" : `${row.options} `}${formatPublicKey({
    type: row.key_type,
    blob: Buffer.from(row.key_blob, "base64"),
    comment: row.comment,
  })}`

const isoOf = (value: Date | string | null): string | undefined =>
  value === null ? undefined : value instanceof Date ? value.toISOString() : new Date(value).toISOString()

/**
 * The keys of the rows, in row order, as the file store reads a file: a row whose line the parser
 * refuses (written by hand with an option the gateway cannot honour) is a problem, not a key.
 * `line` is the row's id, so log lines can point at it.
 */
export const storedKeysOfRows = (
  rows: ReadonlyArray<KeyRow>,
): { readonly keys: ReadonlyArray<StoredKey>; readonly problems: ReadonlyArray<SkippedLine> } => {
  const keys: Array<StoredKey> = []
  const problems: Array<SkippedLine> = []
  for (const row of rows) {
    const id = Number(row.id)
    const parsed = parseAuthorizedKeyLine(keyRowLine(row), id)
    if (parsed === undefined) {
      problems.push({ kind: "skipped", line: id, reason: "the row holds no key" })
      continue
    }
    if (parsed.kind === "skipped") {
      problems.push(parsed)
      continue
    }
    keys.push(storedKeyOf(parsed, isoOf(row.added_at), row.source ?? undefined))
  }
  return { keys, problems }
}

export const storedKeyOf = (
  line: AuthorizedLine,
  addedAt: string | undefined,
  source: string | undefined,
): StoredKey => ({
  ...line.key,
  kind: line.kind,
  options: line.optionsText,
  keyOptions: line.options,
  identity: line.kind === "key" ? line.identity : undefined,
  line: line.line,
  addedAt,
  source,
})

/** The columns of a parsed line, to insert (id, dates and source come from elsewhere). */
export const keyRowOfLine = (
  line: AuthorizedLine,
): Pick<KeyRow, "kind" | "options" | "key_type" | "key_blob" | "fingerprint" | "comment"> => ({
  kind: line.kind,
  options: line.optionsText ?? null,
  key_type: line.key.type,
  key_blob: line.key.blob.toString("base64"),
  fingerprint: line.key.fingerprint,
  comment: line.key.comment,
})

/** A version string for a set of rows: it changes whenever a line in effect changes. */
export const rowsVersion = (rows: ReadonlyArray<KeyRow>): string => {
  const hash = createHash("sha256")
  for (const row of rows) hash.update(`${row.id}\0${row.options ?? ""}\0${row.key_blob}\0${row.comment}\n`)
  return `db:${hash.digest("hex").slice(0, 16)}`
}

// --- enrollment tokens

export interface TokenRow {
  readonly id: string
  readonly sha256: string
  readonly uses: number
  readonly uses_left: number
  readonly created_at: Date | string
  readonly expires_at: Date | string
  readonly used_by: ReadonlyArray<string> | null
  readonly identity: string | null
  readonly groups: ReadonlyArray<string> | null
}

export const tokenRecordOfRow = (row: TokenRow): TokenRecord => ({
  id: row.id,
  sha256: row.sha256,
  uses: row.uses,
  uses_left: row.uses_left,
  created_at: isoOf(row.created_at) ?? "",
  expires_at: isoOf(row.expires_at) ?? "",
  used_by: [...(row.used_by ?? [])],
  ...(row.identity === null ? {} : { identity: row.identity }),
  ...(row.groups === null || row.groups.length === 0 ? {} : { groups: [...row.groups] }),
})

/** The parameters of an insert or update, in the column order of `tokenColumns`. */
export const tokenRowParameters = (record: TokenRecord): ReadonlyArray<unknown> => [
  record.id,
  record.sha256,
  record.uses,
  record.uses_left,
  record.created_at,
  record.expires_at,
  [...record.used_by],
  record.identity ?? null,
  record.groups === undefined ? null : [...record.groups],
]
export const tokenColumns = "id, sha256, uses, uses_left, created_at, expires_at, used_by, identity, groups"

/** What changed from `before` to `after` (the token functions return new records for changed ones). */
export const tokenChanges = (
  before: ReadonlyArray<TokenRecord>,
  after: ReadonlyArray<TokenRecord>,
): { readonly removed: ReadonlyArray<string>; readonly written: ReadonlyArray<TokenRecord> } => {
  const kept = new Set(after.map((record) => record.id))
  const previous = new Map(before.map((record) => [record.id, record]))
  return {
    removed: before.filter((record) => !kept.has(record.id)).map((record) => record.id),
    written: after.filter((record) => previous.get(record.id) !== record),
  }
}

// --- revocations

export interface RevokedKeyRow {
  readonly kind: "blob" | "sha1" | "sha256"
  readonly value: string
}

export interface RevokedCertificateRow {
  readonly ca_blob: string
  /** numeric comes back as text, so 64-bit serials stay exact. */
  readonly serial_low: string | null
  readonly serial_high: string | null
  readonly key_id: string | null
}

/** The revocations the rows hold, in the form isRevoked reads (ranges merged and sorted). */
export const revocationsOfRows = (
  keyRows: ReadonlyArray<RevokedKeyRow>,
  certificateRows: ReadonlyArray<RevokedCertificateRow>,
): Revocations => {
  const keys = new Set<string>()
  const sha1 = new Set<string>()
  const sha256 = new Set<string>()
  for (const row of keyRows) (row.kind === "blob" ? keys : row.kind === "sha1" ? sha1 : sha256).add(row.value)
  const ranges = new Map<string, Array<SerialRange>>()
  const keyIds = new Map<string, Set<string>>()
  for (const row of certificateRows) {
    if (row.serial_low !== null && row.serial_high !== null) {
      const list = ranges.get(row.ca_blob) ?? []
      list.push({ low: BigInt(row.serial_low), high: BigInt(row.serial_high) })
      ranges.set(row.ca_blob, list)
    }
    if (row.key_id !== null) {
      const ids = keyIds.get(row.ca_blob) ?? new Set<string>()
      ids.add(row.key_id)
      keyIds.set(row.ca_blob, ids)
    }
  }
  const certificates = new Map<string, { serials: ReadonlyArray<SerialRange>; keyIds: ReadonlySet<string> }>()
  for (const ca of new Set([...ranges.keys(), ...keyIds.keys()])) {
    certificates.set(ca, { serials: mergeRanges(ranges.get(ca) ?? []), keyIds: keyIds.get(ca) ?? new Set() })
  }
  return { ...noRevocations, format: "key list", keys, sha1, sha256, certificates }
}

/** Sorted, overlapping and adjacent ranges joined: the form the KRL reader's binary search needs. */
export const mergeRanges = (ranges: ReadonlyArray<SerialRange>): ReadonlyArray<SerialRange> => {
  const sorted = [...ranges].sort((a, b) => (a.low < b.low ? -1 : a.low > b.low ? 1 : 0))
  const merged: Array<SerialRange> = []
  for (const range of sorted) {
    const last = merged[merged.length - 1]
    if (last === undefined || range.low > last.high + 1n) merged.push(range)
    // Serials are bigint, which Math.max does not take.
    else if (range.high > last.high) merged[merged.length - 1] = { low: last.low, high: range.high }
  }
  return merged
}

/** Rows for what a revoked keys file (KRL or key list) holds, to import it. */
export const rowsOfRevocations = (
  revocations: Revocations,
): {
  readonly keys: ReadonlyArray<RevokedKeyRow>
  readonly certificates: ReadonlyArray<RevokedCertificateRow>
} => ({
  keys: [
    ...[...revocations.keys].map((value) => ({ kind: "blob" as const, value })),
    ...[...revocations.sha1].map((value) => ({ kind: "sha1" as const, value })),
    ...[...revocations.sha256].map((value) => ({ kind: "sha256" as const, value })),
  ],
  certificates: [...revocations.certificates].flatMap(([ca, entry]) => [
    ...entry.serials.map((range) => ({
      ca_blob: ca,
      serial_low: range.low.toString(),
      serial_high: range.high.toString(),
      key_id: null,
    })),
    ...[...entry.keyIds].map((keyId) => ({
      ca_blob: ca,
      serial_low: null,
      serial_high: null,
      key_id: keyId,
    })),
  ]),
})

/** Merge two sets of revocations (the file's and the database's): revoked in either is revoked. */
export const unionRevocations = (a: Revocations, b: Revocations): Revocations => {
  const certificates = new Map<string, { serials: ReadonlyArray<SerialRange>; keyIds: ReadonlySet<string> }>()
  for (const source of [a, b]) {
    for (const [ca, entry] of source.certificates) {
      const existing = certificates.get(ca)
      certificates.set(
        ca,
        existing === undefined
          ? entry
          : {
              serials: mergeRanges([...existing.serials, ...entry.serials]),
              keyIds: new Set([...existing.keyIds, ...entry.keyIds]),
            },
      )
    }
  }
  return {
    ...a,
    keys: new Set([...a.keys, ...b.keys]),
    sha1: new Set([...a.sha1, ...b.sha1]),
    sha256: new Set([...a.sha256, ...b.sha256]),
    certificates,
  }
}
