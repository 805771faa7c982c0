/**
 * SSH public keys read from wire blobs, and SSH signatures checked with node:crypto: the CA's
 * signature over a certificate, and a client's signature over a userauth request made with the key
 * inside a certificate. Only the key types the gateway accepts (ed25519, ECDSA on NIST curves, RSA
 * of at least 2048 bits); RSA signatures with SHA-2 only, as OpenSSH's sshd since 8.8.
 */
import { createPublicKey, type KeyObject, verify } from "node:crypto"
import { Data, Either } from "effect"
import {
  type AllowedKeyType,
  fingerprintOf,
  isAllowedKeyType,
  minimumRsaBits,
} from "../../shared/publicKey.js"
import { malformed, readWire, sshString, type WireProblem, type WireReader } from "./sshWire.js"

/** OpenSSH's own ceiling (SSH_RSA_MAXIMUM_MODULUS_SIZE); it also bounds the work one signature costs. */
const maximumRsaBits = 16384

export interface SshPublicKey {
  readonly type: AllowedKeyType
  /** The plain key blob (`string type` + key fields), as authorized_keys and KRLs hold it. */
  readonly blob: Buffer
  readonly fingerprint: string
  readonly keyObject: KeyObject
  /** RSA modulus size, for the left padding of signatures; 0 for other types. */
  readonly rsaModulusBytes: number
}

const curves = {
  "ecdsa-sha2-nistp256": { curve: "nistp256", jwk: "P-256", bytes: 32, hash: "sha256" },
  "ecdsa-sha2-nistp384": { curve: "nistp384", jwk: "P-384", bytes: 48, hash: "sha384" },
  "ecdsa-sha2-nistp521": { curve: "nistp521", jwk: "P-521", bytes: 66, hash: "sha512" },
} as const
type EcdsaType = keyof typeof curves
const isEcdsa = (type: string): type is EcdsaType => type in curves

/** An SSH mpint that must be positive, without its leading zero bytes. */
const positiveMagnitude = (mpint: Buffer, what: string): Buffer => {
  if (mpint.length > 0 && (mpint[0] ?? 0) & 0x80) malformed(`${what} is negative`)
  let start = 0
  while (start < mpint.length && mpint[start] === 0) start++
  return mpint.subarray(start)
}

const bitLength = (magnitude: Buffer): number =>
  magnitude.length === 0 ? 0 : (magnitude.length - 1) * 8 + (32 - Math.clz32(magnitude[0] ?? 0))

const importJwk = (jwk: Record<string, string>, what: string): KeyObject => {
  try {
    return createPublicKey({ key: jwk, format: "jwk" })
  } catch (error) {
    return malformed(`${what} is not a valid key (${error instanceof Error ? error.message : "?"})`)
  }
}

/**
 * Read the fields that follow the type name for a key of `type` (certificates put a nonce between the
 * name and these fields, so the reader is positioned by the caller), and build the plain key.
 */
export const readKeyFields = (type: string, reader: WireReader, what: string): SshPublicKey => {
  if (!isAllowedKeyType(type)) {
    return malformed(
      type === "ssh-dss" ? `${what}: DSA keys are not accepted` : `${what}: unknown key type '${type}'`,
      "unknown key type",
    )
  }
  if (type === "ssh-ed25519") {
    const pk = reader.string(`${what} ed25519 key`)
    if (pk.length !== 32) malformed(`${what}: ed25519 key must be 32 bytes, not ${pk.length}`)
    const keyObject = importJwk({ kty: "OKP", crv: "Ed25519", x: pk.toString("base64url") }, what)
    return plainKey(type, [pk], keyObject, 0)
  }
  if (isEcdsa(type)) {
    const spec = curves[type]
    const curve = reader.string(`${what} curve name`)
    const point = reader.string(`${what} ECDSA point`)
    if (curve.toString("latin1") !== spec.curve) {
      malformed(`${what}: curve '${curve.toString("latin1")}' does not fit type ${type}`)
    }
    // Uncompressed points only, as OpenSSH writes them.
    if (point.length !== 1 + 2 * spec.bytes || point[0] !== 4) {
      malformed(`${what}: ECDSA point is not an uncompressed ${spec.curve} point`)
    }
    const x = point.subarray(1, 1 + spec.bytes).toString("base64url")
    const y = point.subarray(1 + spec.bytes).toString("base64url")
    const keyObject = importJwk({ kty: "EC", crv: spec.jwk, x, y }, what)
    return plainKey(type, [curve, point], keyObject, 0)
  }
  const e = reader.string(`${what} RSA exponent`)
  const n = reader.string(`${what} RSA modulus`)
  const exponent = positiveMagnitude(e, `${what} RSA exponent`)
  const modulus = positiveMagnitude(n, `${what} RSA modulus`)
  const bits = bitLength(modulus)
  if (bits < minimumRsaBits)
    malformed(`${what}: RSA key has ${bits} bits; at least ${minimumRsaBits} are required`)
  if (bits > maximumRsaBits)
    malformed(`${what}: RSA key has ${bits} bits; at most ${maximumRsaBits} are accepted`)
  const keyObject = importJwk(
    { kty: "RSA", n: modulus.toString("base64url"), e: exponent.toString("base64url") },
    what,
  )
  return plainKey(type, [e, n], keyObject, modulus.length)
}

const plainKey = (
  type: AllowedKeyType,
  fields: ReadonlyArray<Buffer>,
  keyObject: KeyObject,
  rsaModulusBytes: number,
): SshPublicKey => {
  // Re-encoded from the very field bytes read, so the blob is the one `ssh-keygen` would print.
  const blob = Buffer.concat([sshString(type), ...fields.map((field) => sshString(field))])
  return { type, blob, fingerprint: fingerprintOf(blob), keyObject, rsaModulusBytes }
}

/** A plain public key blob (no certificate), exactly, with nothing after it. */
export const parsePublicKeyBlob = (blob: Buffer, what = "key"): Either.Either<SshPublicKey, WireProblem> =>
  readWire(blob, (reader) => {
    const type = reader.text(`${what} type`)
    const key = readKeyFields(type, reader, what)
    reader.end(what)
    return key
  })

export type SignatureProblemReason =
  | "malformed signature"
  | "signature algorithm does not fit the key"
  | "SHA-1 signature refused"
  | "signature does not verify"

export class SignatureProblem extends Data.TaggedError("SignatureProblem")<{
  readonly reason: SignatureProblemReason
  readonly detail: string
}> {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

const problem = (reason: SignatureProblemReason, detail: string) =>
  Either.left(new SignatureProblem({ reason, detail }))

/** Which signature algorithms a key type may sign with, and the hash each uses. */
const signatureHash = (
  keyType: AllowedKeyType,
  algorithm: string,
): "sha256" | "sha384" | "sha512" | null | undefined => {
  if (keyType === "ssh-ed25519") return algorithm === "ssh-ed25519" ? null : undefined
  if (isEcdsa(keyType)) return algorithm === keyType ? curves[keyType].hash : undefined
  if (algorithm === "rsa-sha2-256") return "sha256"
  if (algorithm === "rsa-sha2-512") return "sha512"
  return undefined
}

/** SSH's ECDSA signature (mpint r, mpint s) as the fixed-width r||s that node:crypto takes. */
const ecdsaP1363 = (body: Buffer, width: number): Buffer =>
  readWire(body, (reader) => {
    const r = positiveMagnitude(reader.string("ECDSA r"), "ECDSA r")
    const s = positiveMagnitude(reader.string("ECDSA s"), "ECDSA s")
    reader.end("ECDSA signature")
    if (r.length > width || s.length > width) malformed("ECDSA r or s is wider than the curve")
    const out = Buffer.alloc(2 * width)
    r.copy(out, width - r.length)
    s.copy(out, 2 * width - s.length)
    return out
  }).pipe(Either.getOrElse(() => Buffer.alloc(0)))

/**
 * Check an SSH signature (`string algorithm, string signature-blob`, as it travels in userauth
 * requests and certificates) over `data`, made with `key`.
 */
export const verifySshSignature = (
  key: SshPublicKey,
  signature: Buffer,
  data: Buffer,
): Either.Either<{ readonly algorithm: string }, SignatureProblem> => {
  const decoded = readWire(signature, (reader) => {
    const algorithm = reader.text("signature algorithm")
    const body = reader.string("signature")
    reader.end("signature")
    return { algorithm, body }
  })
  if (Either.isLeft(decoded)) return problem("malformed signature", decoded.left.detail)
  const { algorithm, body } = decoded.right
  if (key.type === "ssh-rsa" && algorithm === "ssh-rsa") {
    return problem(
      "SHA-1 signature refused",
      "ssh-rsa (SHA-1) signatures are refused; use rsa-sha2-256 or rsa-sha2-512",
    )
  }
  const hash = signatureHash(key.type, algorithm)
  if (hash === undefined) {
    return problem(
      "signature algorithm does not fit the key",
      `a ${key.type} key cannot make a ${algorithm} signature`,
    )
  }
  let signatureBytes: Buffer = body
  let options: { readonly dsaEncoding?: "ieee-p1363" } = {}
  if (isEcdsa(key.type)) {
    signatureBytes = ecdsaP1363(body, curves[key.type].bytes)
    if (signatureBytes.length === 0) return problem("malformed signature", "ECDSA signature is malformed")
    options = { dsaEncoding: "ieee-p1363" }
  } else if (key.type === "ssh-rsa") {
    // OpenSSH accepts signatures shorter than the modulus and pads them on the left (ssh-rsa.c).
    if (body.length > key.rsaModulusBytes)
      return problem("malformed signature", "RSA signature is longer than the modulus")
    signatureBytes = Buffer.concat([Buffer.alloc(key.rsaModulusBytes - body.length), body])
  } else if (body.length !== 64) {
    return problem("malformed signature", "ed25519 signature must be 64 bytes")
  }
  let valid = false
  try {
    valid = verify(hash, data, { key: key.keyObject, ...options }, signatureBytes)
  } catch {
    valid = false
  }
  return valid
    ? Either.right({ algorithm })
    : problem("signature does not verify", `${algorithm} signature by ${key.fingerprint} does not verify`)
}
