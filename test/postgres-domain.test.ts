/**
 * The PostgreSQL key store's pure parts, without a database: the --key-store setting and its
 * redaction, key rows <-> authorized_keys lines (same option semantics as the file), token rows,
 * revocation rows, and how driver errors are classified.
 */
import { Effect, Either, Layer, Logger, LogLevel, Option, PubSub } from "effect"
import { describe, expect, it } from "vitest"
import { decodeSettings } from "../src/gateway/config/settings.js"
import { StoreUnavailable } from "../src/gateway/errors.js"
import { parseAuthorizedKeyLines } from "../src/gateway/identity/authorizedKeyOptions.js"
import { isRevoked, noRevocations } from "../src/gateway/identity/krl.js"
import { readStoredKeys } from "../src/gateway/keys/authorizedKeysFile.js"
import { KeyDatabase, type KeyDatabaseShape } from "../src/gateway/keys/KeyDatabase.js"
import {
  parseKeyStoreLocation,
  redactSecrets,
  redactUrl,
  urlSecrets,
} from "../src/gateway/keys/keyStoreLocation.js"
import { makePostgresKeyStore } from "../src/gateway/keys/PostgresKeyStore.js"
import { classifyDatabaseError } from "../src/gateway/keys/postgresErrors.js"
import {
  type KeyRow,
  keyRowLine,
  keyRowOfLine,
  mergeRanges,
  revocationsOfRows,
  rowsOfRevocations,
  rowsVersion,
  storedKeysOfRows,
  tokenChanges,
  tokenRecordOfRow,
  tokenRowParameters,
  unionRevocations,
} from "../src/gateway/keys/postgresRows.js"
import { newRecord, redeemToken } from "../src/gateway/keys/tokens.js"

const ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
const other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBd3jY3u6PNhzRJqsp1oM3fDyrUcVvRUTnBhOUlUeflt"

describe("--key-store", () => {
  it("takes file or a postgres URL with a host and a database", () => {
    expect(parseKeyStoreLocation("file")).toEqual(Either.right({ _tag: "File" }))
    for (const url of ["postgres://mcp@db:5432/keys", "postgresql://mcp@db/keys?sslmode=require"]) {
      const parsed = parseKeyStoreLocation(url)
      expect(Either.isRight(parsed) && parsed.right._tag === "Postgres" && parsed.right.shown).toBe(url)
    }
    expect(Either.getLeft(parseKeyStoreLocation("mysql://db/keys"))).toEqual(
      expect.objectContaining({ value: expect.stringMatching(/not a mysql: URL/) }),
    )
    expect(Either.getLeft(parseKeyStoreLocation("postgres://mcp@db"))).toEqual(
      expect.objectContaining({ value: expect.stringMatching(/names no database/) }),
    )
    expect(Either.isLeft(parseKeyStoreLocation("files"))).toBe(true)
  })

  it("never shows a password: not in the URL shown, nor in a refusal naming the setting", () => {
    expect(redactUrl("postgres://mcp:s3cr%40t@db:5432/keys")).toBe("postgres://mcp@db:5432/keys")
    expect(redactUrl("postgres://mcp@db/keys?password=s3cret&sslmode=require")).not.toContain("s3cret")
    expect(redactUrl("not a url with s3cret")).not.toContain("s3cret")
    const parsed = parseKeyStoreLocation("postgres://mcp:s3cret@db:5432/keys")
    expect(Either.isRight(parsed) && parsed.right._tag === "Postgres" && parsed.right.passwordInUrl).toBe(
      true,
    )
    const refused = decodeSettings({
      keyStore: { value: "postgres://mcp:s3cret@db:5432", source: "--key-store" },
    })
    expect(Either.isLeft(refused)).toBe(true)
    const message = Either.isLeft(refused) ? refused.left : ""
    expect(message).toMatch(/^--key-store: .*names no database/)
    expect(message).not.toContain("s3cret")
    expect(redactSecrets("password s3cr@t or s3cr%40t", ["s3cr@t"])).toBe("password *** or ***")
    // A password given as a query parameter is redacted from the driver's messages as well.
    const secrets = urlSecrets("postgres://mcp@db/keys?sslmode=require&password=qu3ry%40pw")
    expect(classifyDatabaseError(new Error("bad option qu3ry@pw"), secrets).reason).not.toContain("qu3ry")
  })

  it("defaults to the file", () => {
    const settings = decodeSettings({})
    expect(Either.isRight(settings) && settings.right.keyStore).toBe("file")
  })
})

const row = (id: number, line: string, extra: Partial<KeyRow> = {}): KeyRow => {
  const parsed = parseAuthorizedKeyLines(line).lines[0]
  if (parsed === undefined) throw new Error(`not a line: ${line}`)
  return { id: String(id), ...keyRowOfLine(parsed), added_at: null, source: null, ...extra }
}

describe("key rows", () => {
  it("are authorized_keys lines cut into columns, read back with the file's parser and meaning", () => {
    const lines = [
      `mcp-identity="alice",mcp-groups="ops,dev",from="10.0.0.0/8",expiry-time="20990101" ${ed25519} alice@laptop`,
      `cert-authority,principals="alice" ${other} team-ca`,
    ]
    const rows = lines.map((line, index) => row(index + 1, line, { added_at: new Date(0), source: "cli" }))
    expect(rows[0]?.kind).toBe("key")
    expect(rows[1]?.kind).toBe("cert-authority")
    expect(rows.map(keyRowLine)).toEqual(lines)
    const fromRows = storedKeysOfRows(rows)
    const fromFile = readStoredKeys(lines.join("\n"))
    expect(fromRows.problems).toEqual([])
    expect(fromRows.keys.map((key) => [key.kind, key.identity, key.keyOptions, key.options])).toEqual(
      fromFile.keys.map((key) => [key.kind, key.identity, key.keyOptions, key.options]),
    )
    expect(fromRows.keys[0]?.addedAt).toBe("1970-01-01T00:00:00.000Z")
    expect(fromRows.keys[0]?.source).toBe("cli")
    expect(fromRows.keys[1]?.line).toBe(2)
  })

  it("a row with an option the gateway cannot honour is a problem naming the row, not a key", () => {
    const bad: KeyRow = { ...row(7, ed25519), options: 'command="/bin/sh"' }
    const read = storedKeysOfRows([bad, row(8, other)])
    expect(read.keys.map((key) => key.line)).toEqual([8])
    expect(read.problems).toEqual([expect.objectContaining({ line: 7 })])
  })

  it("have a version that changes with any line in effect", () => {
    const rows = [row(1, ed25519), row(2, other)]
    expect(rowsVersion(rows)).toBe(rowsVersion([...rows]))
    expect(rowsVersion(rows)).not.toBe(rowsVersion(rows.slice(0, 1)))
    expect(rowsVersion(rows)).not.toBe(
      rowsVersion([{ ...row(1, ed25519), options: "mcp-identity=x" }, row(2, other)]),
    )
  })
})

describe("token rows", () => {
  it("round-trip a record, and a redemption changes exactly the used record", () => {
    const now = new Date("2026-01-01T00:00:00.000Z")
    const record = newRecord({
      id: "ab12cd34",
      token: "mcpssh_x",
      uses: 2,
      ttlSeconds: 60,
      now,
      identity: { identity: "bob", groups: ["ops"] },
    })
    const [id, sha256, uses, usesLeft, createdAt, expiresAt, usedBy, identity, groups] =
      tokenRowParameters(record)
    const back = tokenRecordOfRow({
      id: String(id),
      sha256: String(sha256),
      uses: Number(uses),
      uses_left: Number(usesLeft),
      created_at: new Date(String(createdAt)),
      expires_at: new Date(String(expiresAt)),
      used_by: usedBy as Array<string>,
      identity: identity as string,
      groups: groups as Array<string>,
    })
    expect(back).toEqual(record)
    const redeemed = redeemToken([back], "mcpssh_x", "SHA256:k", now, true)
    expect(tokenChanges([back], redeemed.records)).toEqual({ removed: [], written: [redeemed.records[0]] })
    const expired = redeemToken([back], "mcpssh_x", "SHA256:k", new Date("2026-01-03T00:00:00.000Z"), true)
    expect(tokenChanges([back], expired.records)).toEqual({ removed: ["ab12cd34"], written: [] })
  })
})

describe("revocation rows", () => {
  it("hold what a revoked keys file holds, and answer as it does", () => {
    const blob = Buffer.from(ed25519.split(" ")[1] ?? "", "base64")
    const revocations = {
      ...noRevocations,
      keys: new Set([blob.toString("base64")]),
      sha256: new Set(["ab".repeat(32)]),
      certificates: new Map([
        ["", { serials: [{ low: 5n, high: 9n }], keyIds: new Set(["lost-laptop"]) }],
        ["Q0E=", { serials: [{ low: 2n ** 64n - 1n, high: 2n ** 64n - 1n }], keyIds: new Set<string>() }],
      ]),
    }
    const rows = rowsOfRevocations(revocations)
    const back = revocationsOfRows(rows.keys, rows.certificates)
    expect(back.keys).toEqual(revocations.keys)
    expect(back.sha256).toEqual(revocations.sha256)
    expect(back.certificates).toEqual(revocations.certificates)
    expect(isRevoked(back, { key: blob })).toBe(true)
  })

  it("merge serial ranges and unite two sources", () => {
    expect(
      mergeRanges([
        { low: 10n, high: 12n },
        { low: 1n, high: 3n },
        { low: 4n, high: 5n },
        { low: 11n, high: 20n },
      ]),
    ).toEqual([
      { low: 1n, high: 5n },
      { low: 10n, high: 20n },
    ])
    const a = { ...noRevocations, keys: new Set(["a"]) }
    const b = { ...noRevocations, keys: new Set(["b"]) }
    expect([...unionRevocations(a, b).keys]).toEqual(["a", "b"])
  })
})

describe("driver errors", () => {
  it("a refused or broken connection is an outage; a bad password or a bad query is not", () => {
    const refused = Object.assign(new AggregateError([], ""), { code: "ECONNREFUSED" })
    expect(classifyDatabaseError(refused, [])).toEqual({ unavailable: true, reason: "ECONNREFUSED" })
    expect(classifyDatabaseError(new Error("Connection terminated unexpectedly"), []).unavailable).toBe(true)
    expect(
      classifyDatabaseError(Object.assign(new Error("shutting down"), { code: "57P01" }), []).unavailable,
    ).toBe(true)
    expect(
      classifyDatabaseError(Object.assign(new Error("auth failed"), { code: "28P01" }), []).unavailable,
    ).toBe(false)
    expect(classifyDatabaseError(Object.assign(new Error("syntax"), { code: "42601" }), []).unavailable).toBe(
      false,
    )
    expect(classifyDatabaseError(new Error("bad s3cret here"), ["s3cret"]).reason).toBe("bad *** here")
  })
})

/** A key database in memory whose reads fail once `down` is set: the store's logic without PostgreSQL. */
const memoryDatabase = (rows: Array<KeyRow>) => {
  const state = { down: false, downAfterWrite: false }
  const query = <R extends object>(sql: string, params: ReadonlyArray<unknown> = []) =>
    Effect.suspend((): Effect.Effect<ReadonlyArray<R>, StoreUnavailable> => {
      if (state.down) return Effect.fail(new StoreUnavailable({ store: "memory", reason: "stopped" }))
      if (sql.startsWith("DELETE FROM mcp_ssh_authorized_keys")) {
        const gone = rows.filter((candidate) => candidate.fingerprint === params[0])
        for (const key of gone) rows.splice(rows.indexOf(key), 1)
        return Effect.succeed(gone.map((key) => ({ kind: key.kind, options: key.options }) as unknown as R))
      }
      // The change is recorded and notified last in its transaction: the database stops after it.
      if (sql.startsWith("SELECT pg_notify") && state.downAfterWrite) state.down = true
      if (sql.startsWith("SELECT id::text"))
        return Effect.succeed(rows.map((key) => ({ ...key }) as unknown as R))
      return Effect.succeed([])
    })
  const database: KeyDatabaseShape = {
    shown: "memory",
    replica: "test",
    query,
    transaction: (body) => body({ query }),
    withAdvisoryLock: (_key, effect) => effect,
    changes: Effect.flatMap(PubSub.unbounded<void>(), PubSub.subscribe),
  }
  return { state, layer: Layer.succeed(KeyDatabase, database) }
}

describe("the PostgreSQL key store's snapshot", () => {
  it("drops a key this replica revoked at once, even when the database stops before the next read", async () => {
    const revoked = row(1, ed25519)
    const memory = memoryDatabase([revoked, row(2, other)])
    const blob = Buffer.from(revoked.key_blob, "base64")
    const found = await Effect.runPromise(
      Effect.gen(function* () {
        const { store } = yield* makePostgresKeyStore
        expect(Option.isSome(yield* store.find(blob))).toBe(true)
        memory.state.downAfterWrite = true
        expect(yield* store.revoke(revoked.fingerprint, "test")).toBe(1)
        return yield* store.find(blob)
      }).pipe(Effect.provide(memory.layer), Logger.withMinimumLogLevel(LogLevel.None)),
    )
    expect(Option.isNone(found)).toBe(true)
  })
})
