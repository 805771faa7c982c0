/**
 * OpenSSH known_hosts files (sshd(8) SSH_KNOWN_HOSTS FILE FORMAT), parsed and matched without IO:
 * host patterns with `*`, `?` and `!` negation, comma lists, `[host]:port` names, hashed names
 * (`|1|salt|hash`, HMAC-SHA1 of the name keyed with the salt), and the `@revoked` and
 * `@cert-authority` markers. A key is matched by its blob (which names its type), never by comment.
 */
import { createHmac, timingSafeEqual } from "node:crypto"
import { blobKeyType, decodeBase64, fingerprintOf } from "../shared/publicKey.js"

export type KnownHostsMarker = "revoked" | "cert-authority" | undefined

export type HostMatcher =
  | { readonly _tag: "Patterns"; readonly patterns: ReadonlyArray<string> }
  | { readonly _tag: "Hashed"; readonly salt: Buffer; readonly hash: Buffer }

export interface KnownHostEntry {
  /** 1-based line number in the file. */
  readonly line: number
  readonly marker: KnownHostsMarker
  readonly hosts: HostMatcher
  /** The key type the line names (`ssh-ed25519`, ...). */
  readonly keyType: string
  /** The key blob (SSH wire format; its first string is the key type again). */
  readonly blob: Buffer
}

export interface ParsedKnownHosts {
  readonly entries: ReadonlyArray<KnownHostEntry>
  /** Lines that could not be read; OpenSSH skips them too. */
  readonly problems: ReadonlyArray<{ readonly line: number; readonly reason: string }>
}

/** The name OpenSSH looks a host up by: `host` on port 22, `[host]:port` otherwise; lower case. */
export const knownHostsName = (host: string, port: number): string => {
  const bare = host
    .trim()
    .replace(/^\[(.*)\]$/, "$1")
    .toLowerCase()
  return port === 22 ? bare : `[${bare}]:${port}`
}

const parseHosts = (field: string): HostMatcher | string => {
  if (field.startsWith("|1|")) {
    const [, , salt = "", hash = "", ...rest] = field.split("|")
    const saltBytes = decodeBase64(salt)
    const hashBytes = decodeBase64(hash)
    if (rest.length > 0 || saltBytes === undefined || hashBytes === undefined || hashBytes.length !== 20) {
      return "malformed hashed host name"
    }
    return { _tag: "Hashed", salt: saltBytes, hash: hashBytes }
  }
  if (field.startsWith("|")) return "unsupported hashed host name format"
  const patterns = field.split(",").filter((pattern) => pattern !== "")
  return patterns.length === 0 ? "no host pattern" : { _tag: "Patterns", patterns }
}

export const parseKnownHosts = (content: string): ParsedKnownHosts => {
  const entries: Array<KnownHostEntry> = []
  const problems: Array<{ line: number; reason: string }> = []
  const lines = content.split(/\r?\n/)
  for (const [index, raw] of lines.entries()) {
    const parsed = parseLine(raw.trim(), index + 1)
    if (parsed === undefined) continue
    if ("reason" in parsed) problems.push(parsed)
    else entries.push(parsed)
  }
  return { entries, problems }
}

const parseLine = (
  text: string,
  line: number,
): KnownHostEntry | { readonly line: number; readonly reason: string } | undefined => {
  if (text === "" || text.startsWith("#")) return undefined
  const fields = text.split(/[ \t]+/)
  let marker: KnownHostsMarker
  if (fields[0]?.startsWith("@")) {
    const name = fields.shift()
    if (name === "@revoked") marker = "revoked"
    else if (name === "@cert-authority") marker = "cert-authority"
    else return { line, reason: `unknown marker ${name}` }
  }
  const [hostField = "", keyType = "", encoded = ""] = fields
  if (keyType === "" || encoded === "") return { line, reason: "expected 'hosts type key'" }
  const hosts = parseHosts(hostField)
  if (typeof hosts === "string") return { line, reason: hosts }
  const blob = decodeBase64(encoded)
  if (blob === undefined) return { line, reason: "key data is not valid base64" }
  if (blobKeyType(blob) === undefined) return { line, reason: "key data is malformed" }
  return { line, marker, hosts, keyType, blob }
}

/** OpenSSH's wildcard match: `*` any run of characters, `?` exactly one. */
const wildcardMatch = (text: string, pattern: string): boolean => {
  let t = 0
  let p = 0
  let star = -1
  let resume = 0
  while (t < text.length) {
    if (p < pattern.length && (pattern[p] === "?" || pattern[p] === text[t])) {
      t++
      p++
    } else if (p < pattern.length && pattern[p] === "*") {
      star = p++
      resume = t
    } else if (star !== -1) {
      p = star + 1
      t = ++resume
    } else {
      return false
    }
  }
  while (pattern[p] === "*") p++
  return p === pattern.length
}

/** HMAC-SHA1 of the name keyed with the salt, as `ssh-keygen -H` writes it. */
const hashName = (name: string, salt: Buffer): Buffer => createHmac("sha1", salt).update(name).digest()

/** Does the entry's host field name this host (as given by knownHostsName)? */
export const hostMatches = (hosts: HostMatcher, name: string): boolean => {
  if (hosts._tag === "Hashed") {
    const digest = hashName(name, hosts.salt)
    return digest.length === hosts.hash.length && timingSafeEqual(digest, hosts.hash)
  }
  // A negated pattern that matches rules the line out, whatever else matches (match_hostname()).
  let matched = false
  for (const pattern of hosts.patterns) {
    const negated = pattern.startsWith("!")
    if (wildcardMatch(name, (negated ? pattern.slice(1) : pattern).toLowerCase())) {
      if (negated) return false
      matched = true
    }
  }
  return matched
}

export type HostKeyVerdict =
  /** An entry for this host holds this key. */
  | { readonly _tag: "Known"; readonly entry: KnownHostEntry }
  /** The host has entries, none with this key: it changed, or someone is in the middle. */
  | { readonly _tag: "Changed"; readonly known: ReadonlyArray<KnownHostEntry> }
  /** The key is marked @revoked for this host. */
  | { readonly _tag: "Revoked"; readonly entry: KnownHostEntry }
  /** Nothing is known about this host. */
  | { readonly _tag: "Unknown" }

/**
 * What the file says about `blob` presented by the host `name`. Certificate authorities are not
 * supported (the gateway presents plain host keys), so @cert-authority lines are ignored.
 */
export const verifyHostKey = (
  entries: ReadonlyArray<KnownHostEntry>,
  name: string,
  blob: Buffer,
): HostKeyVerdict => {
  const forHost = entries.filter(
    (entry) => entry.marker !== "cert-authority" && hostMatches(entry.hosts, name),
  )
  const revoked = forHost.find((entry) => entry.marker === "revoked" && entry.blob.equals(blob))
  if (revoked !== undefined) return { _tag: "Revoked", entry: revoked }
  const plain = forHost.filter((entry) => entry.marker === undefined)
  const known = plain.find((entry) => entry.blob.equals(blob))
  if (known !== undefined) return { _tag: "Known", entry: known }
  return plain.length === 0 ? { _tag: "Unknown" } : { _tag: "Changed", known: plain }
}

/** Key types the file holds for this host, so the handshake can ask for one of them first. */
export const knownKeyTypes = (
  entries: ReadonlyArray<KnownHostEntry>,
  name: string,
): ReadonlyArray<string> => [
  ...new Set(
    entries
      .filter((entry) => entry.marker === undefined && hostMatches(entry.hosts, name))
      .map((entry) => blobKeyType(entry.blob) ?? entry.keyType),
  ),
]

/** The line that trusts `blob` for `name`, in plain (unhashed) form. */
export const knownHostsLine = (name: string, blob: Buffer): string =>
  `${name} ${blobKeyType(blob) ?? "unknown"} ${blob.toString("base64")}`

/** The same, with the name hashed under `salt` (20 random bytes), as `ssh-keygen -H` does. */
export const hashedKnownHostsLine = (name: string, blob: Buffer, salt: Buffer): string =>
  `|1|${salt.toString("base64")}|${hashName(name, salt).toString("base64")} ${blobKeyType(blob) ?? "unknown"} ${blob.toString("base64")}`

/** `ssh-ed25519 SHA256:...`, as a refusal shows a key. */
export const describeKey = (blob: Buffer): string =>
  `${blobKeyType(blob) ?? "unknown"} ${fingerprintOf(blob)}`

/** Where the entry is, for messages: `path:line`. */
export const entryLocation = (path: string, entry: KnownHostEntry): string => `${path}:${entry.line}`

/** Host-key algorithms to offer, those of the types already known for the host first (as OpenSSH). */
export const preferredHostKeyAlgorithms = (
  knownTypes: ReadonlyArray<string>,
  supported: ReadonlyArray<string>,
): Array<string> => {
  const algorithmsOf = (type: string): ReadonlyArray<string> =>
    type === "ssh-rsa" ? ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] : [type]
  const first = knownTypes.flatMap(algorithmsOf).filter((algorithm) => supported.includes(algorithm))
  return [...new Set([...first, ...supported])]
}

/** The host-key algorithms the client accepts (ssh2's, without DSA). */
export const hostKeyAlgorithms: ReadonlyArray<string> = [
  "ssh-ed25519",
  "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521",
  "rsa-sha2-512",
  "rsa-sha2-256",
  "ssh-rsa",
]
