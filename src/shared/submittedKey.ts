/**
 * Validation of a public key someone submits (POST /register, `keys add`): stricter than reading an
 * authorized_keys file, because the text comes from outside and ends up as a line of that file.
 */
import {
  type AllowedKeyType,
  blobKeyType,
  checkBlob,
  decodeBase64,
  fingerprintOf,
  isAllowedKeyType,
  type KeyProblem,
  type PublicKey,
  readStrings,
} from "./publicKey.js"

export const maxCommentLength = 256

/** Labels some tools write for RSA keys; the blob inside still says ssh-rsa. */
const rsaSignatureLabels = ["rsa-sha2-256", "rsa-sha2-512"]

/**
 * C0/C1 controls, line and paragraph separators and bidi overrides: any of them could break the
 * authorized_keys line or make a listing lie about what it shows.
 */
const forbiddenInComment = /[\p{Cc}\p{Zl}\p{Zp}\u202A-\u202E\u2066-\u2069]/u

/** How many SSH strings a blob of this type holds (RFC 4253 6.6, RFC 5656 3.1, RFC 8709). */
const fieldCount = (type: AllowedKeyType): number => (type === "ssh-ed25519" ? 2 : 3)

/** The SSH wire strings of a blob, or undefined when it is truncated or has bytes left over. */
const exactStrings = (blob: Buffer, count: number): Array<Buffer> | undefined =>
  readStrings(blob, count, true)

/** A short, printable rendering of untrusted text for an error message. */
const shown = (text: string): string => {
  const printable = text.replace(/[^\x20-\x7e]/g, "?")
  return printable.length > 40 ? `${printable.slice(0, 40)}...` : printable
}

/** authorized_keys options (sshd(8) AUTHORIZED_KEYS FILE FORMAT) that may start a line. */
const optionWords =
  /^(no-)?(restrict|pty|port-forwarding|agent-forwarding|x11-forwarding|user-rc|touch-required)$|^(cert-authority|verify-required)$/i
const looksLikeOptions = (token: string): boolean => /[=,"]/.test(token) || optionWords.test(token)

const looksPrivate = (text: string): boolean =>
  /PRIVATE KEY/.test(text) || /^PuTTY-User-Key-File/m.test(text) || /-----BEGIN /.test(text)

/**
 * Accept exactly `<type> <base64> [comment]` on one line. The reason of a refusal never repeats a
 * private key, and repeats other input only shortened and made printable.
 */
export const validateSubmittedKey = (text: string): PublicKey | KeyProblem => {
  if (looksPrivate(text)) {
    return { reason: "this is a private key; it was not stored. Send the public key (the .pub file) only" }
  }
  // One trailing newline is what `cat key.pub` leaves; anything more is a second line.
  const line = text.replace(/\r?\n$/, "")
  if (/[\r\n]/.test(line)) return { reason: "the key must be a single line" }
  const trimmed = line.trim()
  if (trimmed === "") return { reason: "the key is empty" }
  const [, label = "", second = "", comment = ""] =
    /^(\S+)(?:[ \t]+(\S+))?(?:[ \t]+(.*))?$/s.exec(trimmed) ?? []
  if (!isAllowedKeyType(label) && !rsaSignatureLabels.includes(label)) {
    if (looksLikeOptions(label) || isAllowedKeyType(second) || /^(sk-)?(ssh|ecdsa)-/.test(second)) {
      return { reason: "options before the key type are not accepted; send '<type> <base64> [comment]'" }
    }
    return {
      reason:
        label === "ssh-dss"
          ? "DSA keys are not accepted (insecure); use ed25519"
          : `key type '${shown(label)}' is not accepted; use ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa (2048 bits or more)`,
    }
  }
  if (second === "") return { reason: "the key data is missing; expected '<type> <base64> [comment]'" }
  const blob = decodeBase64(second)
  if (blob === undefined) return { reason: "the key data is not valid base64" }
  const type: AllowedKeyType = rsaSignatureLabels.includes(label) ? "ssh-rsa" : (label as AllowedKeyType)
  // The blob names its own type first; say so plainly when it is not the line's.
  const inner = blobKeyType(blob) ?? ""
  if (inner !== type) return { reason: `key data says '${shown(inner)}' but the line says '${label}'` }
  const problem = checkBlob(type, blob)
  if (problem !== undefined) return problem
  const fields = exactStrings(blob, fieldCount(type))
  if (fields === undefined) return { reason: "the key data has the wrong length for its type" }
  if (type.startsWith("ecdsa-sha2-") && fields[1]?.toString("latin1") !== type.slice("ecdsa-sha2-".length)) {
    return { reason: "the key data names a different curve than its type" }
  }
  if ([...comment].length > maxCommentLength) {
    return { reason: `the comment is longer than ${maxCommentLength} characters` }
  }
  if (forbiddenInComment.test(comment)) return { reason: "the comment contains control characters" }
  return { type, blob, comment, fingerprint: fingerprintOf(blob) }
}
