/**
 * SSH bytes made in memory, with no file and no process: key pairs from node:crypto and the
 * signatures an SSH client makes with them, OpenSSH certificates signed by a test CA (any field,
 * including values ssh-keygen will not write), and KRL sections. For what OpenSSH's own tools make,
 * see openssh.ts.
 */
import { generateKeyPairSync, type KeyObject, randomBytes, sign } from "node:crypto"

// ---------------------------------------------------------------------------------------------
// Wire encoding (RFC 4251 section 5)

export const u32 = (value: number): Buffer => {
  const out = Buffer.alloc(4)
  out.writeUInt32BE(value)
  return out
}
export const u64 = (value: bigint): Buffer => {
  const out = Buffer.alloc(8)
  out.writeBigUInt64BE(value)
  return out
}
/** An SSH `string`. */
export const str = (data: Uint8Array | string): Buffer => {
  const bytes = Buffer.from(data)
  return Buffer.concat([u32(bytes.length), bytes])
}
export const strings = (items: ReadonlyArray<Uint8Array | string>): Buffer => Buffer.concat(items.map(str))
/** An SSH `mpint` of a non-negative number given as unsigned big-endian bytes. */
export const mpint = (unsigned: Buffer): Buffer => {
  let start = 0
  while (start < unsigned.length - 1 && unsigned[start] === 0) start++
  const trimmed = unsigned.subarray(start)
  return str((trimmed[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.alloc(1), trimmed]) : trimmed)
}

// ---------------------------------------------------------------------------------------------
// Keys

export type KeyKind = "ed25519" | "ecdsa256" | "ecdsa384" | "ecdsa521" | "rsa"
export const keyKinds: ReadonlyArray<KeyKind> = ["ed25519", "ecdsa256", "ecdsa384", "ecdsa521", "rsa"]

export type RsaSignatureAlgorithm = "rsa-sha2-256" | "rsa-sha2-512" | "ssh-rsa"

/** A key pair held by the test, its public half as OpenSSH writes it. */
export interface TestKey {
  readonly kind: KeyKind
  /** The SSH key type, e.g. `ssh-ed25519`. */
  readonly type: string
  /** The plain public key blob, as authorized_keys holds it (base64). */
  readonly blob: Buffer
  /** `type base64 comment`, as a .pub file holds it. */
  readonly publicLine: string
  /**
   * An SSH signature (`string algorithm, string blob`) over data, as a client sends it in userauth
   * (and as a CA signs a certificate). RSA signs with rsa-sha2-512 unless told otherwise.
   */
  readonly signUserauth: (data: Buffer, rsaAlgorithm?: RsaSignatureAlgorithm) => Buffer
}

const curveOf = {
  ecdsa256: ["P-256", "nistp256", 32, "sha256"],
  ecdsa384: ["P-384", "nistp384", 48, "sha384"],
  ecdsa521: ["P-521", "nistp521", 66, "sha512"],
} as const

const rsaHash = { "rsa-sha2-256": "sha256", "rsa-sha2-512": "sha512", "ssh-rsa": "sha1" } as const

export const makeKey = (kind: KeyKind, comment: string): TestKey => {
  let privateKey: KeyObject
  let type: string
  let blob: Buffer
  if (kind === "ed25519") {
    const pair = generateKeyPairSync("ed25519")
    privateKey = pair.privateKey
    type = "ssh-ed25519"
    blob = strings([type, Buffer.from(pair.publicKey.export({ format: "jwk" }).x ?? "", "base64url")])
  } else if (kind === "rsa") {
    const pair = generateKeyPairSync("rsa", { modulusLength: 2048 })
    privateKey = pair.privateKey
    type = "ssh-rsa"
    const jwk = pair.publicKey.export({ format: "jwk" })
    blob = Buffer.concat([
      str(type),
      mpint(Buffer.from(jwk.e ?? "", "base64url")),
      mpint(Buffer.from(jwk.n ?? "", "base64url")),
    ])
  } else {
    const [jwkCurve, sshCurve] = curveOf[kind]
    const pair = generateKeyPairSync("ec", { namedCurve: jwkCurve })
    privateKey = pair.privateKey
    type = `ecdsa-sha2-${sshCurve}`
    const jwk = pair.publicKey.export({ format: "jwk" })
    const point = Buffer.concat([
      Buffer.from([4]),
      Buffer.from(jwk.x ?? "", "base64url"),
      Buffer.from(jwk.y ?? "", "base64url"),
    ])
    blob = strings([type, sshCurve, point])
  }
  const signUserauth = (data: Buffer, rsaAlgorithm: RsaSignatureAlgorithm = "rsa-sha2-512") => {
    if (kind === "ed25519") return strings([type, sign(null, data, privateKey)])
    if (kind === "rsa") return strings([rsaAlgorithm, sign(rsaHash[rsaAlgorithm], data, privateKey)])
    const [, , width, hash] = curveOf[kind]
    const raw = sign(hash, data, { key: privateKey, dsaEncoding: "ieee-p1363" })
    return strings([type, Buffer.concat([mpint(raw.subarray(0, width)), mpint(raw.subarray(width))])])
  }
  return { kind, type, blob, publicLine: `${type} ${blob.toString("base64")} ${comment}`, signUserauth }
}

// ---------------------------------------------------------------------------------------------
// OpenSSH certificates (PROTOCOL.certkeys)

/** valid_before of "forever". */
export const foreverSeconds = 0xffffffffffffffffn

/**
 * A certificate's fields. Sections given as a Buffer are written as they are (for hostile inputs);
 * everything else is encoded as ssh-keygen would.
 */
export interface CertificateFields {
  /** Signs the certificate; its blob is the signature key unless `signatureKey` says otherwise. */
  readonly ca: TestKey
  /** The certified key. */
  readonly key: TestKey
  /** Default: the certified key's type with `-cert-v01@openssh.com`. */
  readonly algorithm?: string
  /** The certified key's fields (after its type name); default: those of `key`. */
  readonly keyFields?: Buffer
  readonly serial?: bigint
  /** 1 is user, 2 is host; any other number is written as it is. */
  readonly kind?: "user" | "host" | number
  readonly keyId?: Buffer | string
  /** The principals, or the raw principals section. */
  readonly principals?: ReadonlyArray<string> | Buffer
  /** Seconds since the epoch; default 0 and forever. */
  readonly validAfter?: bigint
  readonly validBefore?: bigint
  /** Raw sections; see `certificateOptions`. */
  readonly critical?: Buffer
  readonly extensions?: Buffer
  readonly signatureKey?: Buffer
  /** How an RSA CA signs. */
  readonly caSignatureAlgorithm?: RsaSignatureAlgorithm
}

/** A critical-options or extensions section: a value is an SSH string inside the option's data. */
export const certificateOptions = (options: Readonly<Record<string, string | undefined>>): Buffer =>
  Buffer.concat(
    Object.entries(options).map(([name, value]) =>
      Buffer.concat([str(name), str(value === undefined ? Buffer.alloc(0) : str(value))]),
    ),
  )

/** The whole certificate blob, signed by `ca` over everything before the signature. */
export const makeCertificate = (fields: CertificateFields): Buffer => {
  const keyTypeLength = fields.key.blob.readUInt32BE(0)
  const kind = fields.kind === "user" ? 1 : fields.kind === "host" ? 2 : (fields.kind ?? 1)
  const principals = fields.principals ?? ["p"]
  const signed = Buffer.concat([
    str(fields.algorithm ?? `${fields.key.type}-cert-v01@openssh.com`),
    str(randomBytes(32)),
    fields.keyFields ?? fields.key.blob.subarray(4 + keyTypeLength),
    u64(fields.serial ?? 1n),
    u32(kind),
    str(fields.keyId ?? "crafted"),
    str(Buffer.isBuffer(principals) ? principals : strings(principals)),
    u64(fields.validAfter ?? 0n),
    u64(fields.validBefore ?? foreverSeconds),
    str(fields.critical ?? Buffer.alloc(0)),
    str(fields.extensions ?? Buffer.alloc(0)),
    str(""),
    str(fields.signatureKey ?? fields.ca.blob),
  ])
  return Buffer.concat([signed, str(fields.ca.signUserauth(signed, fields.caSignatureAlgorithm))])
}

// ---------------------------------------------------------------------------------------------
// KRLs (PROTOCOL.krl)

export const krlHeader = (version = 1) =>
  Buffer.concat([
    Buffer.from("SSHKRL\n\0", "latin1"),
    u32(version),
    u64(3n),
    u64(0n),
    u64(0n),
    str(""),
    str("comment"),
  ])
export const krlSection = (type: number, body: Buffer) => Buffer.concat([Buffer.from([type]), str(body)])
/** A certificate section for one CA (an empty blob: any CA). */
export const krlCertificates = (caBlob: Buffer, ...subsections: ReadonlyArray<Buffer>) =>
  krlSection(1, Buffer.concat([str(caBlob), str(""), ...subsections]))
export const krlSerials = (...serials: ReadonlyArray<bigint>) =>
  krlSection(0x20, Buffer.concat(serials.map(u64)))
export const krlKeyIds = (...ids: ReadonlyArray<string>) =>
  krlSection(0x23, Buffer.concat(ids.map((id) => str(id))))
export const krlExtension = (name: string, critical: boolean) =>
  Buffer.concat([str(name), Buffer.from([critical ? 1 : 0]), str("x")])
