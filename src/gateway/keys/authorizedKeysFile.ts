/**
 * Editing an authorized_keys file as text: add a key, remove a key, read keys with the metadata the
 * gateway keeps about them. Every line the edit is not about stays byte for byte as it was
 * (comments, options, blank lines, lines that do not parse, CRLF endings).
 *
 * Metadata (when and how a key was added) lives in a comment line of its own,
 * `# mcp-ssh {"fingerprint":...,"added_at":...,"source":...}`, so the file stays one file that
 * OpenSSH tools read, and the key's own comment stays the client's.
 */
import {
  type AuthorizedKey,
  formatPublicKey,
  type PublicKey,
  parseAuthorizedKeys,
} from "../../shared/publicKey.js"
import {
  type Identity,
  type KeyLineOptions,
  parseAuthorizedKeyLines,
  type SkippedLine,
} from "../identity/authorizedKeyOptions.js"

export interface KeyMetadata {
  /** ISO 8601. */
  readonly addedAt: string
  /** How the key came in, e.g. `register 10.0.0.7 token=ab12cd34`, `admin 127.0.0.1`, `cli`. */
  readonly source: string
}

/** A line of the file in effect: a key, or a CA whose user certificates are trusted (`cert-authority`). */
export interface StoredKey extends AuthorizedKey {
  readonly kind: "key" | "cert-authority"
  /** The options as parsed (`options` is their text as written). */
  readonly keyOptions: KeyLineOptions
  /** Who logs in with this key; undefined for a CA line, whose certificates name their holder. */
  readonly identity: Identity | undefined
  readonly addedAt: string | undefined
  readonly source: string | undefined
}

/** How a stored key is shown to an admin, by the key API and by `keys list --json` alike. */
export const keyListing = (key: StoredKey) => ({
  fingerprint: key.fingerprint,
  type: key.type,
  comment: key.comment,
  kind: key.kind,
  identity: key.identity?.name ?? null,
  groups: key.identity?.groups ?? key.keyOptions.groups,
  principals: key.keyOptions.principals ?? null,
  added_at: key.addedAt ?? null,
  source: key.source ?? null,
  options: key.options ?? null,
})

const metadataPrefix = "# mcp-ssh "

export const metadataLine = (fingerprint: string, metadata: KeyMetadata): string =>
  `${metadataPrefix}${JSON.stringify({ fingerprint, added_at: metadata.addedAt, source: metadata.source })}`

const readMetadata = (line: string): (KeyMetadata & { readonly fingerprint: string }) | undefined => {
  const text = line.trim()
  if (!text.startsWith(metadataPrefix)) return undefined
  try {
    const value: unknown = JSON.parse(text.slice(metadataPrefix.length))
    if (typeof value !== "object" || value === null) return undefined
    const { fingerprint, added_at, source } = value as Record<string, unknown>
    if (typeof fingerprint !== "string" || typeof added_at !== "string" || typeof source !== "string") {
      return undefined
    }
    return { fingerprint, addedAt: added_at, source }
  } catch {
    return undefined
  }
}

/**
 * The lines of the file in effect (keys and cert-authority lines, with their options) and their
 * metadata, when there is some. A line whose options cannot all be honoured is a problem, not a key.
 */
export const readStoredKeys = (
  content: string,
): {
  readonly keys: ReadonlyArray<StoredKey>
  readonly problems: ReadonlyArray<SkippedLine>
} => {
  const parsed = parseAuthorizedKeyLines(content)
  const metadata = new Map<string, KeyMetadata>()
  for (const line of content.split("\n")) {
    const found = readMetadata(line)
    if (found !== undefined && !metadata.has(found.fingerprint)) metadata.set(found.fingerprint, found)
  }
  return {
    keys: parsed.lines.map((line) => ({
      ...line.key,
      kind: line.kind,
      options: line.optionsText,
      keyOptions: line.options,
      identity: line.kind === "key" ? line.identity : undefined,
      line: line.line,
      addedAt: metadata.get(line.key.fingerprint)?.addedAt,
      source: metadata.get(line.key.fingerprint)?.source,
    })),
    problems: parsed.skipped,
  }
}

/**
 * Append the key with its metadata, unless a line with the same key (blob) is there already.
 * `options` is written before the key as it is: only the gateway's own options come here (a submitted
 * key never brings any).
 */
export const appendKey = (
  content: string,
  key: PublicKey,
  metadata: KeyMetadata,
  options?: string,
): { readonly content: string; readonly added: boolean } => {
  if (parseAuthorizedKeys(content).keys.some((existing) => existing.blob.equals(key.blob))) {
    return { content, added: false }
  }
  const base = content === "" || content.endsWith("\n") ? content : `${content}\n`
  return {
    content: `${base}${metadataLine(key.fingerprint, metadata)}\n${options === undefined ? "" : `${options} `}${formatPublicKey(key)}\n`,
    added: true,
  }
}

/** Remove every line holding the key with this fingerprint (whatever its options), and its metadata. */
export const removeKey = (
  content: string,
  fingerprint: string,
): { readonly content: string; readonly removed: number } => {
  // parseAuthorizedKeys numbers lines as split on /\r?\n/, which breaks where a split on "\n" does.
  const keyLines = new Set(
    parseAuthorizedKeys(content)
      .keys.filter((key) => key.fingerprint === fingerprint)
      .map((key) => key.line - 1),
  )
  if (keyLines.size === 0) return { content, removed: 0 }
  const kept = content
    .split("\n")
    .filter((line, index) => !keyLines.has(index) && readMetadata(line)?.fingerprint !== fingerprint)
  return { content: kept.join("\n"), removed: keyLines.size }
}
