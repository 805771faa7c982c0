/**
 * Where the keys live (`--key-store`): `file` (the authorized keys file, as always) or a PostgreSQL
 * URL. Pure: parsing, and the URL as it may be shown (never with a password), for logs and errors.
 */
import { Either } from "effect"

export type KeyStoreLocation =
  | { readonly _tag: "File" }
  | {
      readonly _tag: "Postgres"
      /** As given; may hold a password, so it is handed to the driver only. */
      readonly url: string
      /** Without password or secret query parameters: the only form logged. */
      readonly shown: string
      /** The URL carried a password (a warning: PGPASSWORD or a password file keep it out of argv). */
      readonly passwordInUrl: boolean
    }

const postgresSchemes = ["postgres:", "postgresql:"]
/** Query parameters libpq reads as secrets or files of secrets; shown as `***`. */
const secretParameters = new Set(["password", "sslpassword", "passfile", "sslkey"])

/**
 * The URL without its password, e.g. `postgres://mcp@db:5432/keys`. Text that is not a URL at all is
 * replaced whole: it might be a mistyped secret.
 */
export const redactUrl = (text: string): string => {
  let url: URL
  try {
    url = new URL(text)
  } catch {
    return "(an unreadable URL)"
  }
  if (url.password !== "") url.password = ""
  for (const name of [...url.searchParams.keys()]) {
    if (secretParameters.has(name.toLowerCase())) url.searchParams.set(name, "***")
  }
  // new URL keeps "user:@host" when the password is cleared on some runtimes; drop the colon.
  return url.toString().replace(/^([a-z]+:\/\/[^/@:]*):@/i, "$1@")
}

/** Every occurrence of the secrets in `text` (an error message from the driver) replaced by `***`. */
export const redactSecrets = (text: string, secrets: ReadonlyArray<string | undefined>): string => {
  let out = text
  for (const secret of secrets) {
    if (secret === undefined || secret === "") continue
    out = out.split(secret).join("***")
    const encoded = encodeURIComponent(secret)
    if (encoded !== secret) out = out.split(encoded).join("***")
  }
  return out
}

/** The password a URL carries, decoded (for redacting it from the driver's messages). */
export const urlPassword = (text: string): string | undefined => {
  try {
    const password = new URL(text).password
    return password === "" ? undefined : decodeURIComponent(password)
  } catch {
    return undefined
  }
}

/** Every secret a URL carries, decoded: its password and secret query parameters (`?password=`). */
export const urlSecrets = (text: string): ReadonlyArray<string> => {
  try {
    const url = new URL(text)
    const secrets: Array<string> = []
    const password = urlPassword(text)
    if (password !== undefined) secrets.push(password)
    for (const [name, value] of url.searchParams)
      if (secretParameters.has(name.toLowerCase()) && value !== "") secrets.push(value)
    return secrets
  } catch {
    return []
  }
}

/** `file`, or a `postgres://` / `postgresql://` URL naming a host (or a socket) and a database. */
export const parseKeyStoreLocation = (text: string): Either.Either<KeyStoreLocation, string> => {
  const trimmed = text.trim()
  if (trimmed === "file") return Either.right({ _tag: "File" })
  let url: URL
  try {
    url = new URL(trimmed)
  } catch {
    return Either.left("must be 'file' or a postgres:// URL, e.g. postgres://mcp@db.example:5432/mcp_ssh")
  }
  if (!postgresSchemes.includes(url.protocol))
    return Either.left(
      `must be 'file' or a postgres:// URL, not a ${url.protocol.replace(/:$/, "")}: URL (${redactUrl(trimmed)})`,
    )
  const hostInQuery = url.searchParams.get("host")
  if (url.hostname === "" && (hostInQuery === null || hostInQuery === ""))
    return Either.left(`names no host (${redactUrl(trimmed)})`)
  if (url.pathname === "" || url.pathname === "/")
    return Either.left(`names no database; end it with /DATABASE (${redactUrl(trimmed)})`)
  return Either.right({
    _tag: "Postgres",
    url: trimmed,
    shown: redactUrl(trimmed),
    passwordInUrl: url.password !== "" || url.searchParams.has("password"),
  })
}
