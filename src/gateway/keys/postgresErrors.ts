/**
 * What a failure of the PostgreSQL driver means for the key store, as a pure function: the database
 * cannot be reached now (serve the snapshot, answer writes 503, retry), or the request itself was
 * wrong (a bug or a schema problem, said as such). Messages pass through redaction first.
 */
import { errorText } from "../../shared/errorText.js"
import { redactSecrets } from "./keyStoreLocation.js"

/** SQLSTATE classes and codes that say "not now" rather than "not this". */
const unavailableCodes = [
  /^08/, // connection exception
  /^57P0[1-4]$/, // admin shutdown, crash shutdown, cannot connect now, database dropped
  /^53300$/, // too many connections
  /^53[0-9]00$/, // insufficient resources
  /^40001$/, // serialization failure (retry later)
  /^40P01$/, // deadlock detected
  /^25006$/, // read-only transaction (a standby answered)
  /^57014$/, // query canceled (statement timeout)
]

export interface DatabaseFailure {
  readonly unavailable: boolean
  readonly reason: string
}

export const classifyDatabaseError = (
  error: unknown,
  secrets: ReadonlyArray<string | undefined>,
): DatabaseFailure => {
  const code =
    typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
      ? error.code
      : undefined
  // A refused connection to a name with several addresses is an AggregateError with no message.
  const text = errorText(error)
  const reason = redactSecrets(text === "" ? (code ?? "connection failed") : text, secrets)
  // Errors without a SQLSTATE come from the socket (ECONNREFUSED, timeouts, "Connection terminated").
  const sqlState = code !== undefined && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
  if (sqlState === undefined) return { unavailable: true, reason }
  // 28P01 (bad password) and 3D000 (no such database) say the configuration is wrong, not "wait".
  return { unavailable: unavailableCodes.some((pattern) => pattern.test(sqlState)), reason }
}
