/**
 * OpenSSH certificates (`*-cert-v01@openssh.com`, PROTOCOL.certkeys / draft-miller-ssh-cert): parse
 * the blob, verify the CA's signature, and decide whether a user certificate may log in now, from
 * this address, for these principals. Pure: time, address and revocation come in as arguments.
 *
 * How ssh2 (1.17, lib/protocol/handlers.misc.js USERAUTH_REQUEST + lib/server.js PKAuthContext)
 * hands a certificate to the `authentication` event — nothing is refused or rewritten on the way:
 * - `ctx.key.algo` is the algorithm name exactly as the client sent it:
 *   `ssh-ed25519-cert-v01@openssh.com`, `ecdsa-sha2-nistp256-cert-v01@openssh.com`, ...,
 *   `rsa-sha2-256-cert-v01@openssh.com` / `rsa-sha2-512-cert-v01@openssh.com` (or the SHA-1
 *   `ssh-rsa-cert-v01@openssh.com`). ssh2 maps only the plain `rsa-sha2-*` names to `ssh-rsa`, so
 *   `ctx.hashAlgo` is always undefined for certificates.
 * - `ctx.key.data` is the whole certificate blob, unparsed.
 * - `ctx.signature` is the whole SSH signature (`string algorithm, string blob`), untouched: ssh2
 *   strips that header only when its name equals the key algorithm, which for a certificate it never
 *   does (the signature says `ssh-ed25519`, `rsa-sha2-512`...), and its SSH-to-DER conversion knows no
 *   cert names. That is what `verifyCertificateUserauth` takes.
 * - `ctx.blob` is the signed data (session id, then the request up to the key blob), as for plain keys.
 * - The check without signature (`publickey -- check`) gets `ctx.accept()` -> USERAUTH_PK_OK echoing the
 *   cert algorithm and blob, which OpenSSH's client expects.
 * The signature must be checked against the certified key inside the certificate (not the CA key).
 * Checked with OpenSSH 9.2 `ssh -o CertificateFile=...` against an ssh2 server (ed25519, ECDSA, RSA
 * certificates: query, then signed request, both as above). RSA certificates arrive as
 * `rsa-sha2-256-cert-v01@openssh.com`: ssh2's EXT_INFO server-sig-algs (Protocol.js sendExtInfo)
 * lacks a comma after `ecdsa-sha2-nistp521`, so `rsa-sha2-512` is never advertised.
 */
import { Data, Either } from "effect"
import type { AllowedKeyType } from "../../shared/publicKey.js"
import { matchCidrList, parseCidrList } from "./addressPatterns.js"
import { parsePublicKeyBlob, readKeyFields, type SshPublicKey, verifySshSignature } from "./sshSignature.js"
import { malformed, readWire, type WireReader } from "./sshWire.js"

const certSuffix = "-cert-v01@openssh.com"

/** Certificate algorithm names as they appear in blobs, and the plain key type each certifies. */
const certifiedKeyTypes: Readonly<Record<string, AllowedKeyType>> = {
  "ssh-ed25519-cert-v01@openssh.com": "ssh-ed25519",
  "ecdsa-sha2-nistp256-cert-v01@openssh.com": "ecdsa-sha2-nistp256",
  "ecdsa-sha2-nistp384-cert-v01@openssh.com": "ecdsa-sha2-nistp384",
  "ecdsa-sha2-nistp521-cert-v01@openssh.com": "ecdsa-sha2-nistp521",
  "ssh-rsa-cert-v01@openssh.com": "ssh-rsa",
}

/** Does an algorithm name (as ssh2's `ctx.key.algo` gives it) announce a certificate? */
export const isCertificateAlgorithm = (algorithm: string): boolean => algorithm.endsWith(certSuffix)

/** OpenSSH caps principals at 256 (SSHKEY_CERT_MAX_PRINCIPALS). */
const maximumPrincipals = 256

/** valid_before of "forever" (`ssh-keygen -V always` or no -V). */
export const forever = 0xffffffffffffffffn

export interface CertificateOption {
  readonly name: string
  /** The option's data: for options with a value, itself an SSH string holding it. */
  readonly data: Buffer
}

export interface OpenSshCertificate {
  /** e.g. `ssh-ed25519-cert-v01@openssh.com`. */
  readonly algorithm: string
  readonly nonce: Buffer
  /** The certified key, as a plain key (its blob is what KRLs and authorized_keys hold). */
  readonly key: SshPublicKey
  readonly serial: bigint
  readonly kind: "user" | "host"
  readonly keyId: string
  /** Empty means "any principal" in the format; checkCertificate refuses it (see there). */
  readonly principals: ReadonlyArray<string>
  /** Seconds since the epoch; valid when validAfter <= now < validBefore. */
  readonly validAfter: bigint
  readonly validBefore: bigint
  readonly criticalOptions: ReadonlyArray<CertificateOption>
  readonly extensions: ReadonlyArray<CertificateOption>
  /** The CA's public key (blob, fingerprint). */
  readonly signatureKey: SshPublicKey
  /** The CA's signature, `string algorithm, string blob`. */
  readonly signature: Buffer
  /** Everything the signature covers: the blob up to and including the signature key. */
  readonly signedPart: Buffer
  /** The whole certificate blob. */
  readonly blob: Buffer
}

export type CertificateProblemReason =
  | "truncated"
  | "malformed"
  | "unknown key type"
  | "unsupported signature key"
  | "signature does not verify"

export class CertificateError extends Data.TaggedError("CertificateError")<{
  readonly reason: CertificateProblemReason
  readonly detail: string
}> {
  override get message(): string {
    return `certificate refused: ${this.reason}: ${this.detail}`
  }
}

const readOptions = (section: Buffer, what: string): ReadonlyArray<CertificateOption> =>
  readWire(section, (reader) => {
    const options: Array<CertificateOption> = []
    const seen = new Set<string>()
    while (!reader.atEnd()) {
      const name = reader.text(`${what} name`)
      const data = reader.string(`${what} '${name}' data`)
      // Each name may appear once (PROTOCOL.certkeys); sshd refuses a second source-address too.
      if (seen.has(name)) malformed(`${what} '${name}' appears twice`)
      seen.add(name)
      options.push({ name, data })
    }
    return options
  }).pipe(
    Either.getOrElse((problem) =>
      malformed(problem.kind === "truncated" ? `${what} section is cut short` : problem.detail),
    ),
  )

const readPrincipals = (section: Buffer): ReadonlyArray<string> =>
  readWire(section, (reader) => {
    const principals: Array<string> = []
    while (!reader.atEnd()) {
      if (principals.length >= maximumPrincipals) malformed(`more than ${maximumPrincipals} principals`)
      principals.push(reader.text("principal"))
    }
    return principals
  }).pipe(
    Either.getOrElse((problem) =>
      malformed(problem.kind === "truncated" ? "principals section is cut short" : problem.detail),
    ),
  )

const readSignatureKey = (blob: Buffer): SshPublicKey =>
  Either.match(parsePublicKeyBlob(blob, "signature key"), {
    onLeft: (problem) =>
      malformed(
        problem.code === "unknown key type" && blobTypeName(blob).endsWith(certSuffix)
          ? "signature key is itself a certificate (chained certificates are not supported)"
          : problem.detail,
        "unsupported signature key",
      ),
    onRight: (key) => key,
  })

const blobTypeName = (blob: Buffer): string =>
  readWire(blob, (reader) => reader.text("type")).pipe(Either.getOrElse(() => ""))

const parseBody = (blob: Buffer, reader: WireReader): OpenSshCertificate => {
  const algorithm = reader.text("certificate type")
  const keyType = certifiedKeyTypes[algorithm]
  if (keyType === undefined) {
    return malformed(
      isCertificateAlgorithm(algorithm)
        ? `certificate type '${algorithm}' is not accepted`
        : `'${algorithm}' is not a certificate type`,
      "unknown key type",
    )
  }
  const nonce = reader.string("nonce")
  const key = readKeyFields(keyType, reader, "certified key")
  const serial = reader.u64("serial")
  const type = reader.u32("certificate kind")
  const keyId = reader.text("key id")
  const principalsSection = reader.string("principals")
  const validAfter = reader.u64("valid after")
  const validBefore = reader.u64("valid before")
  const criticalSection = reader.string("critical options")
  const extensionsSection = reader.string("extensions")
  reader.string("reserved")
  const signatureKeyBlob = reader.string("signature key")
  const signedPart = blob.subarray(0, reader.position)
  const signature = reader.string("signature")
  reader.end("certificate")
  if (type !== 1 && type !== 2) malformed(`unknown certificate kind ${type} (1 is user, 2 is host)`)
  return {
    algorithm,
    nonce,
    key,
    serial,
    kind: type === 1 ? "user" : "host",
    keyId,
    principals: readPrincipals(principalsSection),
    validAfter,
    validBefore,
    criticalOptions: readOptions(criticalSection, "critical option"),
    extensions: readOptions(extensionsSection, "extension"),
    signatureKey: readSignatureKey(signatureKeyBlob),
    signature,
    signedPart,
    blob,
  }
}

const problemReasons: ReadonlyArray<CertificateProblemReason> = [
  "unknown key type",
  "unsupported signature key",
]

/** Parse a certificate blob. Structure only: the CA signature is checked by `verifyCertificateSignature`. */
export const parseCertificate = (blob: Buffer): Either.Either<OpenSshCertificate, CertificateError> =>
  readWire(blob, (reader) => parseBody(blob, reader)).pipe(
    Either.mapLeft((problem) => {
      const reason: CertificateProblemReason =
        problem.kind === "truncated"
          ? "truncated"
          : (problemReasons.find((known) => known === problem.code) ?? "malformed")
      return new CertificateError({ reason, detail: problem.detail })
    }),
  )

/** The CA's signature over the certificate must verify with the CA key the certificate names. */
export const verifyCertificateSignature = (
  certificate: OpenSshCertificate,
): Either.Either<OpenSshCertificate, CertificateError> =>
  verifySshSignature(certificate.signatureKey, certificate.signature, certificate.signedPart).pipe(
    Either.map(() => certificate),
    Either.mapLeft(
      (problem) =>
        new CertificateError({
          reason: "signature does not verify",
          detail: `CA ${certificate.signatureKey.fingerprint}: ${problem.message}`,
        }),
    ),
  )

/** Parse, then verify the CA signature: the only way to a certificate worth looking at. */
export const readCertificate = (blob: Buffer): Either.Either<OpenSshCertificate, CertificateError> =>
  Either.flatMap(parseCertificate(blob), verifyCertificateSignature)

/**
 * The userauth signature of a login with a certificate: made by the certified key, with the plain
 * signature algorithm that fits the certificate's algorithm (`rsa-sha2-512-cert-v01@openssh.com`
 * -> `rsa-sha2-512`). `requestAlgorithm` is ssh2's `ctx.key.algo`, `signature` its `ctx.signature`
 * (whole, with its algorithm header), `signedData` its `ctx.blob`.
 */
export const verifyCertificateUserauth = (
  certificate: OpenSshCertificate,
  requestAlgorithm: string,
  signature: Buffer,
  signedData: Buffer,
): Either.Either<void, CertificateError> => {
  const refuse = (detail: string) =>
    Either.left(new CertificateError({ reason: "signature does not verify", detail }))
  const expected = userauthSignatureAlgorithm(certificate.algorithm, requestAlgorithm)
  if (expected === undefined) {
    return refuse(`request algorithm ${requestAlgorithm} does not fit a ${certificate.algorithm} certificate`)
  }
  if (expected === "ssh-rsa") {
    return refuse(`${requestAlgorithm} signs with SHA-1, which is refused; use rsa-sha2-256 or rsa-sha2-512`)
  }
  return verifySshSignature(certificate.key, signature, signedData).pipe(
    Either.flatMap(({ algorithm }) =>
      algorithm === expected
        ? Either.right(undefined)
        : refuse(`signature algorithm ${algorithm} does not match the request's ${requestAlgorithm}`),
    ),
    Either.mapLeft((problem) =>
      problem instanceof CertificateError
        ? problem
        : new CertificateError({ reason: "signature does not verify", detail: problem.message }),
    ),
  )
}

/**
 * The plain signature algorithm a userauth request with this certificate algorithm must carry;
 * undefined when the request's algorithm does not fit the certificate at all.
 */
export const userauthSignatureAlgorithm = (
  certAlgorithm: string,
  requestAlgorithm: string,
): string | undefined => {
  if (certAlgorithm === "ssh-rsa-cert-v01@openssh.com") {
    if (requestAlgorithm === "rsa-sha2-256-cert-v01@openssh.com") return "rsa-sha2-256"
    if (requestAlgorithm === "rsa-sha2-512-cert-v01@openssh.com") return "rsa-sha2-512"
    return requestAlgorithm === certAlgorithm ? "ssh-rsa" : undefined
  }
  return requestAlgorithm === certAlgorithm ? certAlgorithm.slice(0, -certSuffix.length) : undefined
}

// ---------------------------------------------------------------------------------------------
// May this certificate log in?

export interface CertificateCheck {
  /** Seconds since the epoch, or a Date. */
  readonly now: Date | number
  /** The client's address as the socket (or PROXY header) gives it; IPv4-mapped IPv6 is fine. */
  readonly clientAddress: string
  /**
   * The principals the trusting CA line vouches for (its `principals="..."`), or undefined when the
   * line has none, in which case any principal the certificate names is allowed.
   */
  readonly allowedPrincipals: ReadonlyArray<string> | undefined
  /** Is the certificate (its serial, key id, key or CA) revoked? Usually `isRevoked` of a KRL. */
  readonly isRevoked: (certificate: OpenSshCertificate) => boolean
}

export interface AcceptedCertificate {
  readonly keyId: string
  /** The certificate's principals that the CA line allows (all of them without `principals=`). */
  readonly principals: ReadonlyArray<string>
  readonly serial: bigint
  readonly caFingerprint: string
  /** The certified key's fingerprint (the `client=` of the audit line). */
  readonly keyFingerprint: string
}

export type CertificateRefusalReason =
  | "not a user certificate"
  | "not yet valid"
  | "expired"
  | "revoked"
  | "no principals"
  | "no principal allowed"
  | "source address not allowed"
  | "unsupported critical option"
  | "malformed critical option"

export class CertificateRefused extends Data.TaggedError("CertificateRefused")<{
  readonly reason: CertificateRefusalReason
  readonly detail: string
}> {
  override get message(): string {
    return `certificate refused: ${this.reason}: ${this.detail}`
  }
}

const secondsOf = (now: Date | number): bigint =>
  BigInt(Math.floor(typeof now === "number" ? now : now.getTime() / 1000))

/** The single string inside an option's data; undefined when the data is anything else. */
const optionString = (data: Buffer): string | undefined =>
  readWire(data, (reader) => {
    const value = reader.text("option value")
    reader.end("option value")
    return value
  }).pipe(Either.getOrUndefined)

/**
 * Decide, as sshd would for a `cert-authority` line, whether a certificate whose CA signature verified
 * (readCertificate) may log in. The CA line's own options (`from=`, `expiry-time=`) are checked apart,
 * with the line (authorizeKeyLine). Differences from sshd, each narrowing, none broadening:
 * - A certificate must name at least one principal, and one of them must be allowed. sshd requires
 *   the unix user's name among the principals (or a `principals=` match); there is no unix user here,
 *   so "a principal is allowed" takes its place. OpenSSH refuses empty principal lists too
 *   ("Certificate lacks principal list").
 * - Critical options: `source-address` is honoured; `force-command` has no meaning for a gateway of
 *   MCP servers and refuses; `verify-required` asks for FIDO user verification, which the accepted key
 *   types cannot give, and refuses (as sshd does for non-FIDO keys); anything else refuses, as sshd.
 * - Extensions are ignored (they grant pty, forwarding... which the gateway never offers).
 */
export const checkCertificate = (
  certificate: OpenSshCertificate,
  check: CertificateCheck,
): Either.Either<AcceptedCertificate, CertificateRefused> => {
  const refuse = (reason: CertificateRefusalReason, detail: string) =>
    Either.left(new CertificateRefused({ reason, detail }))
  const subject = `certificate '${certificate.keyId}' serial ${certificate.serial}`
  if (certificate.kind !== "user") return refuse("not a user certificate", `${subject} is a host certificate`)

  let sourceAddresses: string | undefined
  for (const option of certificate.criticalOptions) {
    if (option.name === "source-address") {
      const value = optionString(option.data)
      if (value === undefined)
        return refuse("malformed critical option", "source-address does not hold one string")
      sourceAddresses = value
    } else {
      return refuse("unsupported critical option", `${subject} has critical option '${option.name}'`)
    }
  }

  const now = secondsOf(check.now)
  if (now < certificate.validAfter) {
    return refuse("not yet valid", `${subject} is valid from ${describeTime(certificate.validAfter)}`)
  }
  if (now >= certificate.validBefore) {
    return refuse("expired", `${subject} expired at ${describeTime(certificate.validBefore)}`)
  }

  if (check.isRevoked(certificate)) return refuse("revoked", `${subject} is revoked`)

  if (certificate.principals.length === 0) {
    return refuse("no principals", `${subject} names no principals (a wildcard certificate is not accepted)`)
  }
  const allowed = check.allowedPrincipals
  const principals =
    allowed === undefined
      ? certificate.principals
      : certificate.principals.filter((name) => allowed.includes(name))
  if (principals.length === 0) {
    return refuse(
      "no principal allowed",
      `${subject} names ${certificate.principals.join(",")}; the CA line allows ${allowed?.join(",") ?? ""}`,
    )
  }

  if (sourceAddresses !== undefined) {
    const list = parseCidrList(sourceAddresses)
    if (Either.isLeft(list))
      return refuse("malformed critical option", `source-address: ${list.left.message}`)
    if (!matchCidrList(list.right, check.clientAddress)) {
      return refuse(
        "source address not allowed",
        `${check.clientAddress} is not in source-address ${sourceAddresses}`,
      )
    }
  }

  return Either.right({
    keyId: certificate.keyId,
    principals: [...new Set(principals)],
    serial: certificate.serial,
    caFingerprint: certificate.signatureKey.fingerprint,
    keyFingerprint: certificate.key.fingerprint,
  })
}

/** Dates past JavaScript's range (year 275760) print as plain seconds. */
const latestDateSeconds = 8_640_000_000_000n

const describeTime = (seconds: bigint): string =>
  seconds >= forever
    ? "forever"
    : seconds > latestDateSeconds
      ? `${seconds}s after the epoch`
      : new Date(Number(seconds) * 1000).toISOString()
