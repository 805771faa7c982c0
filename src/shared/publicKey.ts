/**
 * OpenSSH public keys and authorized_keys files, parsed without IO.
 * A key is identified by its type and blob; comments and options never identify it.
 */
import { createHash } from "node:crypto"

export const allowedKeyTypes = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "ssh-rsa",
] as const
export type AllowedKeyType = (typeof allowedKeyTypes)[number]

export const minimumRsaBits = 2048

export interface PublicKey {
  readonly type: AllowedKeyType
  readonly blob: Buffer
  readonly comment: string
  /** `SHA256:` followed by unpadded base64 of the blob's SHA-256, as `ssh-keygen -l` prints it. */
  readonly fingerprint: string
}

export interface AuthorizedKey extends PublicKey {
  readonly options: string | undefined
  readonly line: number
}

export type KeyProblem = { readonly reason: string }

export const fingerprintOf = (blob: Uint8Array): string =>
  `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`

export const isAllowedKeyType = (type: string): type is AllowedKeyType =>
  (allowedKeyTypes as ReadonlyArray<string>).includes(type)

/**
 * Read the SSH wire-format strings of a key blob (RFC 4253 section 6.6); undefined when truncated,
 * or, with `exact`, when bytes are left over.
 */
export const readStrings = (blob: Buffer, count: number, exact = false): Array<Buffer> | undefined => {
  const out: Array<Buffer> = []
  let offset = 0
  for (let i = 0; i < count; i++) {
    if (offset + 4 > blob.length) return undefined
    const length = blob.readUInt32BE(offset)
    offset += 4
    if (offset + length > blob.length) return undefined
    out.push(blob.subarray(offset, offset + length))
    offset += length
  }
  return exact && offset !== blob.length ? undefined : out
}

/** The type named inside a key blob (its first SSH string), or undefined if the blob is too short. */
export const blobKeyType = (blob: Buffer): string | undefined => readStrings(blob, 1)?.[0]?.toString("latin1")

const base64Pattern = /^[A-Za-z0-9+/]+={0,2}$/

/** Strict base64, as OpenSSH writes key data: padded, no blanks; undefined when it is not. */
export const decodeBase64 = (text: string): Buffer | undefined =>
  base64Pattern.test(text) && text.length % 4 === 0 ? Buffer.from(text, "base64") : undefined

const rsaModulusBits = (modulus: Buffer): number => {
  let start = 0
  while (start < modulus.length && modulus[start] === 0) start++
  const first = modulus[start]
  if (first === undefined) return 0
  return (modulus.length - start - 1) * 8 + (32 - Math.clz32(first))
}

/** Check a blob's inner type and, for RSA, its size. Returns a reason when the key is not acceptable. */
export const checkBlob = (type: string, blob: Buffer): KeyProblem | undefined => {
  if (!isAllowedKeyType(type)) {
    return {
      reason:
        type === "ssh-dss"
          ? "DSA keys are not accepted (insecure); use ed25519"
          : `key type '${type}' is not accepted; use one of ${allowedKeyTypes.join(", ")}`,
    }
  }
  const fields = readStrings(blob, type === "ssh-rsa" ? 3 : type === "ssh-ed25519" ? 2 : 3)
  if (fields === undefined) return { reason: "key data is truncated or malformed" }
  const [innerType, first, second] = fields
  if (innerType?.toString("latin1") !== type) {
    return { reason: `key data says '${innerType?.toString("latin1") ?? ""}' but the line says '${type}'` }
  }
  if (type === "ssh-ed25519" && first?.length !== 32) return { reason: "ed25519 key must be 32 bytes" }
  if (type === "ssh-rsa" && second !== undefined) {
    const bits = rsaModulusBits(second)
    if (bits < minimumRsaBits)
      return { reason: `RSA key has ${bits} bits; at least ${minimumRsaBits} are required` }
  }
  return undefined
}

/** Parse `type base64 [comment]` (no options). */
export const parsePublicKey = (text: string): PublicKey | KeyProblem => {
  const trimmed = text.trim()
  if (trimmed.includes("PRIVATE KEY"))
    return { reason: "this is a private key; send the public key (.pub) only" }
  const match = /^(\S+)\s+(\S+)(?:\s+(.*))?$/.exec(trimmed)
  if (match === null) return { reason: "expected '<type> <base64> [comment]'" }
  const [, type = "", encoded = "", comment = ""] = match
  const blob = decodeBase64(encoded)
  if (blob === undefined) return { reason: "key data is not valid base64" }
  const problem = checkBlob(type, blob)
  if (problem !== undefined) return problem
  return { type: type as AllowedKeyType, blob, comment, fingerprint: fingerprintOf(blob) }
}

export const isKeyProblem = (value: PublicKey | KeyProblem): value is KeyProblem => "reason" in value

/**
 * Split an authorized_keys line into its options and the key text. Options are a comma-separated list
 * that may contain double-quoted strings with spaces; the key starts after the first unquoted blank.
 */
const splitOptions = (line: string): { options: string | undefined; rest: string } => {
  const firstToken = /^\S+/.exec(line)?.[0] ?? ""
  if (isAllowedKeyType(firstToken) || firstToken === "ssh-dss" || /^(sk-)?(ssh|ecdsa)-/.test(firstToken)) {
    return { options: undefined, rest: line }
  }
  let inQuotes = false
  for (let i = 0; i < line.length; i++) {
    const char = line[i]
    if (char === "\\" && inQuotes) {
      i++
    } else if (char === '"') {
      inQuotes = !inQuotes
    } else if (!inQuotes && (char === " " || char === "\t")) {
      return { options: line.slice(0, i), rest: line.slice(i).trimStart() }
    }
  }
  return { options: undefined, rest: line }
}

export interface ParsedAuthorizedKeys {
  readonly keys: ReadonlyArray<AuthorizedKey>
  readonly problems: ReadonlyArray<{ readonly line: number; readonly reason: string }>
}

export const parseAuthorizedKeys = (content: string): ParsedAuthorizedKeys => {
  const keys: Array<AuthorizedKey> = []
  const problems: Array<{ line: number; reason: string }> = []
  content.split(/\r?\n/).forEach((raw, index) => {
    const text = raw.trim()
    if (text === "" || text.startsWith("#")) return
    const { options, rest } = splitOptions(text)
    const parsed = parsePublicKey(rest)
    if (isKeyProblem(parsed)) {
      problems.push({ line: index + 1, reason: parsed.reason })
    } else {
      keys.push({ ...parsed, options, line: index + 1 })
    }
  })
  return { keys, problems }
}

/** `type base64 [comment]`; the type is a string so keys ssh2 parsed need no check first. */
export const formatPublicKey = (key: {
  readonly type: string
  readonly blob: Buffer
  readonly comment: string
}): string => `${key.type} ${key.blob.toString("base64")}${key.comment === "" ? "" : ` ${key.comment}`}`
