/**
 * Revoked keys and certificates, as sshd's RevokedKeys reads them: an OpenSSH KRL (PROTOCOL.krl,
 * made by `ssh-keygen -k`) or, when the file does not start with the KRL magic, a plain list of
 * public keys one a line. Parsed without IO; `isRevoked` answers for a key or a certificate.
 *
 * Following OpenSSH's krl.c (ssh_krl_from_blob, ssh_krl_check_key):
 * - A certificate is revoked by serial (list, range, bitmap) or key id, in a section for its CA or in
 *   one for any CA (empty CA key); serial 0 is never matched (it means "no serial").
 * - A key is revoked by its plain blob, its SHA-1 or SHA-256 hash; for a certificate, both the
 *   certified key and the CA key are checked that way.
 * - Signature sections are skipped, not verified: sshd does the same (current krl.c steps over them;
 *   ssh-keygen no longer writes them). Integrity of the file is the file system's job.
 * - Unknown sections and critical extensions make the whole KRL invalid; a non-critical extension is
 *   ignored. The caller must then fail closed (sshd refuses every key while it cannot read the file).
 */
import { createHash } from "node:crypto"
import { Data, Either } from "effect"
import { decodeBase64 } from "../../shared/publicKey.js"
import { isCertificateAlgorithm, type OpenSshCertificate, parseCertificate } from "./certificate.js"
import { malformed, readWire, type WireReader } from "./sshWire.js"

const krlMagic = Buffer.from("SSHKRL\n\0", "latin1")
const krlFormatVersion = 1

const section = {
  certificates: 1,
  explicitKey: 2,
  fingerprintSha1: 3,
  signature: 4,
  fingerprintSha256: 5,
  extension: 255,
} as const

const certSection = {
  serialList: 0x20,
  serialRange: 0x21,
  serialBitmap: 0x22,
  keyId: 0x23,
  extension: 0x39,
} as const

/** OpenSSH's bitmap limit (BITMAP_MAX in bitmap.c: 2^24 bits); also bounds the work of one section. */
const maximumBitmapBits = 1 << 24
const largestSerial = 0xffffffffffffffffn

export interface SerialRange {
  readonly low: bigint
  readonly high: bigint
}

export interface CertificateRevocations {
  /** Sorted, non-overlapping, for binary search. */
  readonly serials: ReadonlyArray<SerialRange>
  readonly keyIds: ReadonlySet<string>
}

export interface Revocations {
  readonly format: "krl" | "key list"
  /** From the KRL header (0 for a key list). */
  readonly version: bigint
  readonly comment: string
  /** Plain key blobs, base64. */
  readonly keys: ReadonlySet<string>
  /** Hex SHA-1 / SHA-256 of plain key blobs. */
  readonly sha1: ReadonlySet<string>
  readonly sha256: ReadonlySet<string>
  /** By CA key blob (base64); the key "" holds what is revoked for certificates of any CA. */
  readonly certificates: ReadonlyMap<string, CertificateRevocations>
}

export const noRevocations: Revocations = {
  format: "key list",
  version: 0n,
  comment: "",
  keys: new Set(),
  sha1: new Set(),
  sha256: new Set(),
  certificates: new Map(),
}

export type KrlProblemReason = "not a KRL" | "truncated" | "malformed" | "unsupported"

export class KrlError extends Data.TaggedError("KrlError")<{
  readonly reason: KrlProblemReason
  readonly detail: string
}> {
  override get message(): string {
    return `revoked keys file refused: ${this.reason}: ${this.detail}`
  }
}

/** Merge ranges into sorted, non-overlapping, non-adjacent ones. */
const mergeRanges = (ranges: ReadonlyArray<SerialRange>): ReadonlyArray<SerialRange> => {
  const sorted = [...ranges].sort((a, b) => (a.low < b.low ? -1 : a.low > b.low ? 1 : 0))
  const merged: Array<SerialRange> = []
  for (const range of sorted) {
    const last = merged.at(-1)
    if (last !== undefined && range.low <= last.high + 1n) {
      // Math.max takes no bigints.
      if (range.high > last.high) merged[merged.length - 1] = { low: last.low, high: range.high }
    } else {
      merged.push(range)
    }
  }
  return merged
}

const serialRevoked = (ranges: ReadonlyArray<SerialRange>, serial: bigint): boolean => {
  let low = 0
  let high = ranges.length - 1
  while (low <= high) {
    const middle = (low + high) >> 1
    const range = ranges[middle]
    if (range === undefined) return false
    if (serial < range.low) high = middle - 1
    else if (serial > range.high) low = middle + 1
    else return true
  }
  return false
}

interface CertificateRevocationsBuilder {
  readonly serials: Array<SerialRange>
  readonly keyIds: Set<string>
}

const revokeRange = (into: CertificateRevocationsBuilder, low: bigint, high: bigint) => {
  // ssh_krl_revoke_cert_by_serial_range refuses these, and with them the whole KRL.
  if (low === 0n) malformed("serial 0 cannot be revoked")
  if (low > high) malformed(`serial range ${low}-${high} is reversed`)
  into.serials.push({ low, high })
}

/** `mpint` bitmap: bit N (from the least significant) revokes serial offset + N. */
const revokeBitmap = (into: CertificateRevocationsBuilder, offset: bigint, bitmap: Buffer) => {
  if (bitmap.length > 0 && (bitmap[0] ?? 0) & 0x80) malformed("serial bitmap is negative")
  if (bitmap.length * 8 > maximumBitmapBits) malformed("serial bitmap is too large")
  const addRun = (first: number, last: number) => {
    const high = offset + BigInt(last)
    if (high > largestSerial) malformed("serial bitmap goes past the largest serial")
    revokeRange(into, offset + BigInt(first), high)
  }
  // Runs of set bits become ranges; whole bytes that continue the current state are skipped at once.
  let runStart = -1
  const totalBits = bitmap.length * 8
  for (let bit = 0; bit < totalBits; bit++) {
    const byte = bitmap[bitmap.length - 1 - (bit >> 3)] ?? 0
    if ((bit & 7) === 0 && byte === (runStart < 0 ? 0 : 0xff)) {
      bit += 7
      continue
    }
    const set = (byte >> (bit & 7)) & 1
    if (set === 1 && runStart < 0) runStart = bit
    if (set === 0 && runStart >= 0) {
      addRun(runStart, bit - 1)
      runStart = -1
    }
  }
  if (runStart >= 0) addRun(runStart, totalBits - 1)
}

const readExtension = (reader: WireReader, what: string) => {
  const name = reader.text(`${what} name`)
  const critical = reader.bool(`${what} criticality`)
  reader.string(`${what} contents`)
  reader.end(what)
  if (critical) malformed(`unsupported critical ${what} '${name}'`, "unsupported")
}

/** Run a nested parse over a section's bytes; its truncation is the section's malformation. */
const inSection = (bytes: Buffer, what: string, parse: (reader: WireReader) => void) =>
  Either.getOrElse(readWire(bytes, parse), (problem) =>
    malformed(problem.kind === "truncated" ? `${what} is cut short` : problem.detail, problem.code),
  )

const readCertificateSection = (reader: WireReader, into: Map<string, CertificateRevocationsBuilder>) => {
  const caKey = reader.string("CA key")
  reader.string("reserved")
  if (caKey.length > 0) {
    const typeName = readWire(caKey, (key) => key.text("CA key type")).pipe(Either.getOrUndefined)
    if (typeName === undefined || typeName === "") malformed("CA key is malformed")
  }
  const caIndex = caKey.toString("base64")
  let target = into.get(caIndex)
  if (target === undefined) {
    target = { serials: [], keyIds: new Set() }
    into.set(caIndex, target)
  }
  const revocations = target
  while (!reader.atEnd()) {
    const type = reader.u8("certificate subsection type")
    const data = reader.string("certificate subsection")
    inSection(data, "certificate subsection", (sub) => {
      switch (type) {
        case certSection.serialList:
          while (!sub.atEnd()) {
            const serial = sub.u64("serial")
            revokeRange(revocations, serial, serial)
          }
          break
        case certSection.serialRange:
          revokeRange(revocations, sub.u64("serial range start"), sub.u64("serial range end"))
          break
        case certSection.serialBitmap:
          revokeBitmap(revocations, sub.u64("serial bitmap offset"), sub.string("serial bitmap"))
          break
        case certSection.keyId:
          while (!sub.atEnd()) revocations.keyIds.add(sub.text("key id"))
          break
        case certSection.extension:
          readExtension(sub, "certificate extension")
          break
        default:
          malformed(`unknown certificate subsection type ${type}`, "unsupported")
      }
      sub.end("certificate subsection")
    })
  }
}

const readBlobs = (
  reader: WireReader,
  into: Set<string>,
  length: number | undefined,
  encoding: "base64" | "hex",
) => {
  while (!reader.atEnd()) {
    const blob = reader.string("revoked key")
    if (length !== undefined && blob.length !== length)
      malformed(`a hash of ${blob.length} bytes, not ${length}`)
    into.add(blob.toString(encoding))
  }
}

/** Parse an OpenSSH KRL. */
export const parseKrl = (bytes: Buffer): Either.Either<Revocations, KrlError> => {
  if (bytes.length < krlMagic.length || !bytes.subarray(0, krlMagic.length).equals(krlMagic)) {
    return Either.left(
      new KrlError({ reason: "not a KRL", detail: "the file does not start with the KRL magic" }),
    )
  }
  return readWire(bytes.subarray(krlMagic.length), (reader): Revocations => {
    const formatVersion = reader.u32("format version")
    if (formatVersion !== krlFormatVersion)
      malformed(`KRL format version ${formatVersion} is not 1`, "unsupported")
    const version = reader.u64("KRL version")
    reader.u64("generated date")
    reader.u64("flags")
    reader.string("reserved")
    const comment = reader.text("comment")
    const keys = new Set<string>()
    const sha1 = new Set<string>()
    const sha256 = new Set<string>()
    const certificates = new Map<string, CertificateRevocationsBuilder>()
    while (!reader.atEnd()) {
      const type = reader.u8("section type")
      const data = reader.string("section")
      if (type === section.signature) {
        // Its body is two strings (signature key, signature); sshd skips both without checking.
        reader.string("signature")
        continue
      }
      inSection(data, "section", (sub) => {
        switch (type) {
          case section.certificates:
            readCertificateSection(sub, certificates)
            break
          case section.explicitKey:
            readBlobs(sub, keys, undefined, "base64")
            break
          case section.fingerprintSha1:
            readBlobs(sub, sha1, 20, "hex")
            break
          case section.fingerprintSha256:
            readBlobs(sub, sha256, 32, "hex")
            break
          case section.extension:
            readExtension(sub, "extension")
            break
          default:
            malformed(`unknown section type ${type}`, "unsupported")
        }
      })
    }
    return {
      format: "krl",
      version,
      comment,
      keys,
      sha1,
      sha256,
      certificates: new Map(
        [...certificates].map(([ca, built]) => [
          ca,
          { serials: mergeRanges(built.serials), keyIds: built.keyIds },
        ]),
      ),
    }
  }).pipe(
    Either.mapLeft(
      (problem) =>
        new KrlError({
          reason:
            problem.kind === "truncated"
              ? "truncated"
              : problem.code === "unsupported"
                ? "unsupported"
                : "malformed",
          detail: problem.detail,
        }),
    ),
  )
}

/**
 * A list of public keys (and certificates, which revoke their certified key), one a line, `#` comments;
 * what sshd's RevokedKeys takes when the file is not a KRL. A line that does not parse fails the file,
 * as sshd then refuses every key rather than guess.
 */
export const parseRevokedKeyList = (text: string): Either.Either<Revocations, KrlError> => {
  const keys = new Set<string>()
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim()
    if (line === "" || line.startsWith("#")) continue
    const fail = (detail: string) =>
      Either.left(new KrlError({ reason: "malformed", detail: `line ${index + 1}: ${detail}` }))
    const [type = "", encoded = ""] = line.split(/\s+/)
    const blob = decodeBase64(encoded)
    if (blob === undefined) return fail("expected '<type> <base64> [comment]'")
    const inner = readWire(blob, (reader) => reader.text("key type")).pipe(Either.getOrUndefined)
    if (inner !== type) return fail(`key data says '${inner ?? ""}' but the line says '${type}'`)
    if (isCertificateAlgorithm(type)) {
      const certificate = parseCertificate(blob)
      if (Either.isLeft(certificate)) return fail(certificate.left.message)
      keys.add(certificate.right.key.blob.toString("base64"))
    } else {
      // Any type OpenSSH knows may be listed; one the gateway does not accept can never match, harmlessly.
      keys.add(blob.toString("base64"))
    }
  }
  return Either.right({ ...noRevocations, keys })
}

/** sshd's rule: a KRL when the magic says so, else a key list. */
export const parseRevokedKeysFile = (bytes: Buffer): Either.Either<Revocations, KrlError> => {
  const asKrl = parseKrl(bytes)
  if (Either.isRight(asKrl) || asKrl.left.reason !== "not a KRL") return asKrl
  return parseRevokedKeyList(bytes.toString("utf8"))
}

const plainKeyRevoked = (revocations: Revocations, blob: Buffer): boolean =>
  revocations.keys.has(blob.toString("base64")) ||
  (revocations.sha256.size > 0 && revocations.sha256.has(createHash("sha256").update(blob).digest("hex"))) ||
  (revocations.sha1.size > 0 && revocations.sha1.has(createHash("sha1").update(blob).digest("hex")))

const certificateRevokedBy = (
  entry: CertificateRevocations | undefined,
  certificate: OpenSshCertificate,
): boolean =>
  entry !== undefined &&
  (entry.keyIds.has(certificate.keyId) ||
    (certificate.serial !== 0n && serialRevoked(entry.serials, certificate.serial)))

/**
 * Is this key, or this certificate, revoked? For a certificate, `key` should be its certified key's
 * blob; the certificate's own key and its CA key are checked too, as ssh_krl_check_key does.
 */
export const isRevoked = (
  revocations: Revocations,
  subject: { readonly key: Buffer; readonly certificate?: OpenSshCertificate | undefined },
): boolean => {
  if (plainKeyRevoked(revocations, subject.key)) return true
  const certificate = subject.certificate
  if (certificate === undefined) return false
  return (
    plainKeyRevoked(revocations, certificate.key.blob) ||
    plainKeyRevoked(revocations, certificate.signatureKey.blob) ||
    certificateRevokedBy(
      revocations.certificates.get(certificate.signatureKey.blob.toString("base64")),
      certificate,
    ) ||
    certificateRevokedBy(revocations.certificates.get(""), certificate)
  )
}
