/**
 * The decision on one publickey attempt, plain key or OpenSSH certificate, from the lines of the
 * authorized keys file and the revoked keys as they are now. Pure: the time, the client's address and
 * the files come in as arguments. A refusal names its reason and the fingerprint; nothing throws.
 *
 * As sshd (auth2-pubkey.c): a certificate is only ever judged as a certificate, through the
 * `cert-authority` lines of its CA, never as the plain key inside it; a plain key only through key
 * lines. Every check runs on the query without signature too, so a client is not told "this would do"
 * for a login that will be refused. Lines with the same key are tried in file order; the first whose
 * options (`from=`, `expiry-time=`) let this login in is the one that counts.
 */
import { Either } from "effect"
import { fingerprintOf } from "../../shared/publicKey.js"
import {
  authorizeKeyLine,
  certificateIdentity,
  type Identity,
  keyLineIdentity,
} from "../identity/authorizedKeyOptions.js"
import {
  checkCertificate,
  isCertificateAlgorithm,
  type OpenSshCertificate,
  readCertificate,
  userauthSignatureAlgorithm,
  verifyCertificateUserauth,
} from "../identity/certificate.js"
import { isRevoked } from "../identity/krl.js"
import type { StoredKey } from "../keys/authorizedKeysFile.js"
import { allByBlob } from "../keys/KeyStore.js"
import type { RevocationState } from "../keys/RevokedKeys.js"
import { decidePublicKey } from "./publicKeyAuth.js"

export interface LoginAttempt {
  /** ssh2's `ctx.key.algo`: a plain key type, or a certificate algorithm as the client sent it. */
  readonly algo: string
  readonly hashAlgo: string | undefined
  /** ssh2's `ctx.key.data`: the key blob, or the whole certificate. */
  readonly keyData: Buffer
  /** Absent when the client only asks whether this key would do. */
  readonly signature: Buffer | undefined
  readonly blob: Buffer | undefined
}

export interface LoginContext {
  /** Milliseconds since the epoch. */
  readonly now: number
  /** The client's IP address (no port). */
  readonly clientAddress: string
}

/** What the files say now. */
export interface Credentials {
  readonly keys: ReadonlyArray<StoredKey>
  readonly revoked: RevocationState
}

/** A login that succeeded: who it is, and how to tell later whether the files still let it in. */
export interface Grant {
  /** Of the key that signed (for a certificate, the certified key). */
  readonly fingerprint: string
  readonly identity: Identity
  readonly certificate: { readonly serial: string; readonly caFingerprint: string } | undefined
  /**
   * Undefined while the files still grant this login as it was made; else why they no longer do.
   * A key gone from the file altogether is left to the key store's watcher, which announces it.
   */
  readonly recheck: (credentials: Credentials) => string | undefined
}

export type LoginDecision =
  /** `code` is a short, fixed category (for counting); `reason` the log's sentence, with the fingerprint. */
  | { readonly _tag: "Refused"; readonly code: string; readonly reason: string }
  | { readonly _tag: "Acceptable" }
  | { readonly _tag: "Verified"; readonly grant: Grant }

const refused = (code: string, reason: string): LoginDecision => ({ _tag: "Refused", code, reason })

const keyLines = (keys: ReadonlyArray<StoredKey>, blob: Buffer) =>
  allByBlob(
    keys.filter((key) => key.kind === "key"),
    blob,
  )
const authorityLines = (keys: ReadonlyArray<StoredKey>, blob: Buffer) =>
  allByBlob(
    keys.filter((key) => key.kind === "cert-authority"),
    blob,
  )

/** Two lines grant the same when their options, and so the identity they give, are the same. */
const sameGrant = (a: StoredKey, b: StoredKey): boolean =>
  (a.options ?? "") === (b.options ?? "") &&
  a.identity?.name === b.identity?.name &&
  (a.identity?.groups ?? []).join(",") === (b.identity?.groups ?? []).join(",")

/** authorizeKeyLine reads a number as seconds; `login.now` is milliseconds, so it gets a Date. */
const lineLogin = (login: LoginContext) => ({ now: new Date(login.now), clientAddress: login.clientAddress })

const unusableRevocations = (revoked: RevocationState, fingerprint: string): LoginDecision | undefined =>
  revoked._tag === "Unusable"
    ? refused(
        "revoked keys unusable",
        `the revoked keys file ${revoked.reason}, so no key is accepted (${fingerprint})`,
      )
    : undefined

export const decideLogin = (
  attempt: LoginAttempt,
  credentials: Credentials,
  login: LoginContext,
): LoginDecision =>
  isCertificateAlgorithm(attempt.algo)
    ? decideCertificate(attempt, credentials, login)
    : decidePlainKey(attempt, credentials, login)

const decidePlainKey = (
  attempt: LoginAttempt,
  credentials: Credentials,
  login: LoginContext,
): LoginDecision => {
  const fingerprint = fingerprintOf(attempt.keyData)
  const lines = keyLines(credentials.keys, attempt.keyData)
  if (lines.length === 0)
    return refused("not authorized", `key ${attempt.algo} is not authorized (${fingerprint})`)
  const { revoked } = credentials
  const unusable = unusableRevocations(revoked, fingerprint)
  if (unusable !== undefined) return unusable
  if (revoked._tag === "Loaded" && isRevoked(revoked.revocations, { key: attempt.keyData })) {
    return refused("revoked", `key ${fingerprint} is revoked (revoked keys file)`)
  }
  let firstRefusal: LoginDecision | undefined
  for (const line of lines) {
    const allowed = authorizeKeyLine(line.keyOptions, lineLogin(login))
    if (Either.isLeft(allowed)) {
      firstRefusal ??= refused(
        `key line ${allowed.left.reason}`,
        `key ${fingerprint} (authorized_keys line ${line.line}): ${allowed.left.message}`,
      )
      continue
    }
    const decision = decidePublicKey(
      { algo: attempt.algo, hashAlgo: attempt.hashAlgo, signature: attempt.signature, blob: attempt.blob },
      line,
    )
    if (decision._tag === "Refused") {
      // decidePublicKey names the fingerprint only in a bad signature's reason.
      return decision.signature === true
        ? refused("bad signature", decision.reason)
        : refused("algorithm", `${decision.reason} (${fingerprint})`)
    }
    if (decision._tag === "Acceptable") return decision
    const identity = line.identity ?? keyLineIdentity(line, line.keyOptions)
    return {
      _tag: "Verified",
      grant: {
        fingerprint,
        identity,
        certificate: undefined,
        recheck: (now) => {
          const current = keyLines(now.keys, attempt.keyData)
          if (current.length === 0) return undefined
          if (!current.some((candidate) => sameGrant(candidate, line)))
            return `the authorized_keys line of ${fingerprint} changed`
          if (now.revoked._tag === "Loaded" && isRevoked(now.revoked.revocations, { key: attempt.keyData }))
            return `key ${fingerprint} is now revoked (revoked keys file)`
          return undefined
        },
      },
    }
  }
  return firstRefusal ?? refused("not authorized", `key ${attempt.algo} is not authorized (${fingerprint})`)
}

const decideCertificate = (
  attempt: LoginAttempt,
  credentials: Credentials,
  login: LoginContext,
): LoginDecision => {
  const read = readCertificate(attempt.keyData)
  if (Either.isLeft(read)) {
    return refused(
      `certificate ${read.left.reason}`,
      `${read.left.message} (certificate ${fingerprintOf(attempt.keyData)})`,
    )
  }
  const certificate = read.right
  const fingerprint = certificate.key.fingerprint
  const ca = certificate.signatureKey.fingerprint
  const who = `certificate of ${fingerprint} signed by CA ${ca}`
  const signatureAlgorithm = userauthSignatureAlgorithm(certificate.algorithm, attempt.algo)
  if (signatureAlgorithm === undefined) {
    return refused(
      "certificate algorithm mismatch",
      `${who}: request algorithm ${attempt.algo} does not fit a ${certificate.algorithm} certificate`,
    )
  }
  // verifyCertificateUserauth refuses SHA-1 too, but only once signed: the query must not accept it first.
  if (signatureAlgorithm === "ssh-rsa") {
    return refused(
      "certificate algorithm mismatch",
      `${who}: request algorithm ${attempt.algo} signs with SHA-1, which is refused; use rsa-sha2-256 or rsa-sha2-512`,
    )
  }
  const authorities = authorityLines(credentials.keys, certificate.signatureKey.blob)
  if (authorities.length === 0) {
    return refused("certificate untrusted CA", `${who}: no cert-authority line trusts that CA`)
  }
  const { revoked } = credentials
  const unusable = unusableRevocations(revoked, fingerprint)
  if (unusable !== undefined) return unusable
  const revokedNow = (state: RevocationState) => (candidate: OpenSshCertificate) =>
    state._tag === "Loaded" &&
    isRevoked(state.revocations, { key: candidate.key.blob, certificate: candidate })
  let firstRefusal: LoginDecision | undefined
  for (const line of authorities) {
    const allowed = authorizeKeyLine(line.keyOptions, lineLogin(login))
    if (Either.isLeft(allowed)) {
      firstRefusal ??= refused(
        `certificate CA line ${allowed.left.reason}`,
        `${who} (cert-authority line ${line.line}): ${allowed.left.message}`,
      )
      continue
    }
    const checked = checkCertificate(certificate, {
      now: Math.floor(login.now / 1000),
      clientAddress: login.clientAddress,
      allowedPrincipals: line.keyOptions.principals,
      isRevoked: revokedNow(revoked),
    })
    if (Either.isLeft(checked)) {
      firstRefusal ??= refused(`certificate ${checked.left.reason}`, `${who}: ${checked.left.message}`)
      continue
    }
    if (attempt.signature === undefined) return { _tag: "Acceptable" }
    const signed = verifyCertificateUserauth(
      certificate,
      attempt.algo,
      attempt.signature,
      attempt.blob ?? Buffer.alloc(0),
    )
    if (Either.isLeft(signed)) return refused("bad signature", `${who}: ${signed.left.message}`)
    return {
      _tag: "Verified",
      grant: {
        fingerprint,
        identity: certificateIdentity(checked.right, line.keyOptions),
        certificate: { serial: certificate.serial.toString(), caFingerprint: ca },
        recheck: (now) => {
          const current = authorityLines(now.keys, certificate.signatureKey.blob)
          if (current.length === 0) return `CA ${ca} is no longer trusted`
          if (!current.some((candidate) => sameGrant(candidate, line)))
            return `the cert-authority line of CA ${ca} changed`
          if (revokedNow(now.revoked)(certificate))
            return `certificate serial ${certificate.serial} of ${fingerprint} is now revoked`
          return undefined
        },
      },
    }
  }
  return firstRefusal ?? refused("certificate untrusted CA", `${who}: no cert-authority line trusts that CA`)
}
