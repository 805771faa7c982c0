/**
 * decideLogin and Grant.recheck as the pure functions they are: keys from node:crypto, signatures made
 * over a userauth request as an SSH client makes them and handed over as ssh2 hands them, certificates
 * signed in memory by a test CA, and the authorized keys and revoked keys as text read by the parsers
 * the key store uses. No file, no process: identity-gateway.test.ts covers the same ground end to end.
 *
 * Every refusal is checked on the query without signature as well as on the signed request (except a
 * bad signature, which only a signed request can have): a client must not be told "this key would do"
 * for a login that will be refused.
 */
import { randomBytes } from "node:crypto"
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { parseRevokedKeysFile } from "../src/gateway/identity/krl.js"
import { readStoredKeys } from "../src/gateway/keys/authorizedKeysFile.js"
import { nothingRevoked, type RevocationState } from "../src/gateway/keys/RevokedKeys.js"
import {
  type Credentials,
  decideLogin,
  type Grant,
  type LoginAttempt,
  type LoginContext,
  type LoginDecision,
} from "../src/gateway/ssh/loginDecision.js"
import { fingerprintOf } from "../src/shared/publicKey.js"
import {
  type CertificateFields,
  certificateOptions,
  krlCertificates,
  krlHeader,
  krlSection,
  krlSerials,
  makeCertificate,
  makeKey,
  type RsaSignatureAlgorithm,
  str,
  strings,
  type TestKey,
} from "./support/sshCraft.js"

// ---------------------------------------------------------------------------------------------
// Keys, clock, address

const alice = makeKey("ed25519", "alice@laptop")
const bob = makeKey("ecdsa256", "bob's key")
const carol = makeKey("rsa", "carol")
const stranger = makeKey("ed25519", "stranger")
const ca = makeKey("ed25519", "ca")
const otherCa = makeKey("ecdsa256", "other-ca")

const fingerprint = (key: TestKey) => fingerprintOf(key.blob)

/** 2026-01-15T12:00:00Z: certificate validity and expiry-time are set around it. */
const now = Date.UTC(2026, 0, 15, 12, 0, 0)
const nowSeconds = BigInt(now / 1000)
const login: LoginContext = { now, clientAddress: "10.1.2.3" }

// ---------------------------------------------------------------------------------------------
// The files: authorized keys and revoked keys, as the key store and RevokedKeys read them

/** An authorized_keys line for the key, with its comment, after the options if any. */
const keyLine = (key: TestKey, options = "") =>
  options === "" ? key.publicLine : `${options} ${key.publicLine}`
const caLine = (key: TestKey, options = "") =>
  keyLine(key, options === "" ? "cert-authority" : `cert-authority,${options}`)

/** A line the parser skipped would pass many tests as "not authorized" for the wrong reason: fail. */
const credentials = (
  lines: ReadonlyArray<string>,
  revoked: RevocationState = nothingRevoked,
): Credentials => {
  const { keys, problems } = readStoredKeys(lines.join("\n"))
  expect(problems).toEqual([])
  return { keys, revoked }
}

/** What RevokedKeys holds once it has read a file with these contents (a KRL or a key list). */
const revokedFile = (contents: Buffer | string): RevocationState => {
  const parsed = parseRevokedKeysFile(Buffer.from(contents))
  if (Either.isLeft(parsed)) return expect.fail(parsed.left.message)
  return { _tag: "Loaded", version: "test", revocations: parsed.right }
}
const revokedKeyList = (...keys: ReadonlyArray<TestKey>) =>
  revokedFile(keys.map((key) => key.publicLine).join("\n"))
const unusableRevocations: RevocationState = {
  _tag: "Unusable",
  version: "missing",
  reason: "does not exist",
}

// ---------------------------------------------------------------------------------------------
// Attempts, as ssh2's `authentication` event hands them over

/** What the client offers: an algorithm name, a key blob or a whole certificate, and the key that signs. */
interface Offer {
  readonly algorithm: string
  readonly keyData: Buffer
  readonly signer: TestKey
}

/** A plain key, under the algorithm OpenSSH's client asks for (rsa-sha2-512 for RSA) unless told. */
const plain = (key: TestKey, algorithm = key.kind === "rsa" ? "rsa-sha2-512" : key.type): Offer => ({
  algorithm,
  keyData: key.blob,
  signer: key,
})

/** Any session identifier will do: the signature covers it, and decideLogin only checks the signature. */
const sessionId = randomBytes(32)

/** What a client signs (RFC 4252 section 7), and what ssh2 hands over as `ctx.blob`. */
const userauthData = (algorithm: string, keyData: Buffer) =>
  Buffer.concat([
    str(sessionId),
    Buffer.from([50]), // SSH_MSG_USERAUTH_REQUEST
    strings(["mcp", "ssh-connection", "publickey"]),
    Buffer.from([1]), // a signature follows
    strings([algorithm, keyData]),
  ])

/** ssh2 names rsa-sha2-* requests `ssh-rsa` with the hash apart (handlers.misc.js USERAUTH_REQUEST). */
const ssh2Algorithm = (request: string) =>
  request === "rsa-sha2-256"
    ? { algo: "ssh-rsa", hashAlgo: "sha256" }
    : request === "rsa-sha2-512"
      ? { algo: "ssh-rsa", hashAlgo: "sha512" }
      : { algo: request, hashAlgo: undefined }

/** The RSA signature algorithm a client uses for a request algorithm (plain or certificate). */
const rsaSignatureOf = (request: string): RsaSignatureAlgorithm =>
  request.startsWith("rsa-sha2-256")
    ? "rsa-sha2-256"
    : request.startsWith("ssh-rsa")
      ? "ssh-rsa"
      : "rsa-sha2-512"

const derLength = (length: number) => Buffer.from(length < 0x80 ? [length] : [0x81, length])
const der = (tag: number, content: Buffer) =>
  Buffer.concat([Buffer.from([tag]), derLength(content.length), content])

/**
 * The signature as ssh2 1.17 hands it over (handlers.misc.js USERAUTH_REQUEST): the `string algorithm`
 * header is dropped when it names the request's algorithm (for plain keys; never for a certificate,
 * whose request names the certificate), then an ECDSA body (mpint r, mpint s) becomes DER
 * (sigSSHToASN1). SSH mpints are minimal two's complement already, as DER integers are.
 */
const asSsh2HandsIt = (request: string, keyAlgo: string, signature: Buffer): Buffer => {
  const nameLength = signature.readUInt32BE(0)
  if (signature.subarray(4, 4 + nameLength).toString() !== request) return signature
  const body = signature.subarray(4 + nameLength + 4)
  if (!keyAlgo.startsWith("ecdsa-sha2-")) return body
  const rLength = body.readUInt32BE(0)
  const r = body.subarray(4, 4 + rLength)
  const s = body.subarray(4 + rLength + 4)
  return der(0x30, Buffer.concat([der(0x02, r), der(0x02, s)]))
}

/** The query without signature: "would this key do?" */
const query = (offer: Offer): LoginAttempt => ({
  ...ssh2Algorithm(offer.algorithm),
  keyData: offer.keyData,
  signature: undefined,
  blob: undefined,
})

/** The signed request, by the offer's own key unless a test forges it. */
const signed = (offer: Offer, signer = offer.signer, data = userauthData(offer.algorithm, offer.keyData)) => {
  const { algo, hashAlgo } = ssh2Algorithm(offer.algorithm)
  const signature = signer.signUserauth(data, rsaSignatureOf(offer.algorithm))
  return {
    algo,
    hashAlgo,
    keyData: offer.keyData,
    signature: asSsh2HandsIt(offer.algorithm, algo, signature),
    blob: userauthData(offer.algorithm, offer.keyData),
  } satisfies LoginAttempt
}

// ---------------------------------------------------------------------------------------------
// Certificates

/** The certificate request algorithm OpenSSH's client sends (RSA: SHA-2, see certificate.ts). */
const certificateRequest = (key: TestKey) =>
  key.kind === "rsa" ? "rsa-sha2-512-cert-v01@openssh.com" : `${key.type}-cert-v01@openssh.com`

/**
 * A user certificate of `key` (alice unless told) by `ca`: key id alice@ci, serial 7, principals dev
 * and ops, valid from an hour ago to an hour from now.
 */
const certificate = (fields: Partial<CertificateFields> = {}, algorithm?: string): Offer => {
  const key = fields.key ?? alice
  const blob = makeCertificate({
    ca,
    key,
    serial: 7n,
    keyId: "alice@ci",
    principals: ["dev", "ops"],
    validAfter: nowSeconds - 3600n,
    validBefore: nowSeconds + 3600n,
    ...fields,
  })
  return { algorithm: algorithm ?? certificateRequest(key), keyData: blob, signer: key }
}

// ---------------------------------------------------------------------------------------------
// Decisions

/** Every code decideLogin gives (loginDecision.ts): fixed categories, counted by metrics, never free text. */
const refusalCodes = new Set([
  "not authorized",
  "revoked",
  "revoked keys unusable",
  "bad signature",
  "algorithm",
  ...["expired", "address not allowed", "address denied"].flatMap((reason) => [
    `key line ${reason}`,
    `certificate CA line ${reason}`,
  ]),
  ...[
    "truncated",
    "malformed",
    "unknown key type",
    "unsupported signature key",
    "signature does not verify",
    "algorithm mismatch",
    "untrusted CA",
    "not a user certificate",
    "not yet valid",
    "expired",
    "revoked",
    "no principals",
    "no principal allowed",
    "source address not allowed",
    "unsupported critical option",
    "malformed critical option",
  ].map((reason) => `certificate ${reason}`),
])

const describeDecision = (decision: LoginDecision) =>
  decision._tag === "Refused" ? `Refused (${decision.code}): ${decision.reason}` : decision._tag

const grantOf = (decision: LoginDecision): Grant =>
  decision._tag === "Verified"
    ? decision.grant
    : expect.fail(`expected Verified, got ${describeDecision(decision)}`)

/** The offer is acceptable at the query and verified when signed; the grant. */
const accepted = (offer: Offer, files: Credentials, context = login): Grant => {
  expect(describeDecision(decideLogin(query(offer), files, context))).toBe("Acceptable")
  return grantOf(decideLogin(signed(offer), files, context))
}

/** A refusal with this code, whose reason names the fingerprint; the reason. */
const refusalOf = (decision: LoginDecision, code: string, fingerprintNamed: string): string => {
  if (decision._tag !== "Refused") return expect.fail(`expected Refused (${code}), got ${decision._tag}`)
  expect(refusalCodes).toContain(decision.code)
  expect(decision.code).toBe(code)
  expect(decision.reason).toContain(fingerprintNamed)
  return decision.reason
}

/** Refused alike at the query and on the signed request; the signed request's reason. */
const refused = (
  offer: Offer,
  files: Credentials,
  code: string,
  context = login,
  named = fingerprint(offer.signer),
): string => {
  refusalOf(decideLogin(query(offer), files, context), code, named)
  return refusalOf(decideLogin(signed(offer), files, context), code, named)
}

// ---------------------------------------------------------------------------------------------

describe("plain keys", () => {
  it.each([
    ["ed25519", alice, undefined],
    ["ECDSA P-256", bob, undefined],
    ["RSA with rsa-sha2-512", carol, undefined],
    ["RSA with rsa-sha2-256", carol, "rsa-sha2-256"],
  ])("%s: acceptable at the query, verified when signed", (_name, key, algorithm) => {
    const grant = accepted(plain(key, algorithm), credentials([keyLine(key)]))
    expect(grant.fingerprint).toBe(fingerprint(key))
    expect(grant.certificate).toBeUndefined()
  })

  it("the identity is mcp-identity, the groups mcp-groups", () => {
    const files = credentials([keyLine(alice, 'mcp-identity="alice",mcp-groups="dev,ops"')])
    expect(accepted(plain(alice), files).identity).toEqual({ name: "alice", groups: ["dev", "ops"] })
  })

  it("without mcp-identity, the identity is the comment, made fit to be a name", () => {
    expect(accepted(plain(bob), credentials([keyLine(bob)])).identity).toEqual({
      name: "bob_s_key",
      groups: [],
    })
  })

  it("without mcp-identity or comment, the identity is the fingerprint", () => {
    const bare = `${alice.type} ${alice.blob.toString("base64")}`
    expect(accepted(plain(alice), credentials([bare])).identity.name).toBe(fingerprint(alice))
  })

  it("an unknown key is not authorized; nor is a key on a cert-authority line only", () => {
    expect(refused(plain(stranger), credentials([keyLine(alice)]), "not authorized")).toMatch(
      /not authorized/,
    )
    refused(plain(ca), credentials([caLine(ca)]), "not authorized")
  })

  it("a signature by another key, or over other data, is a bad signature", () => {
    const files = credentials([keyLine(alice), keyLine(carol)])
    for (const [offer, forger] of [
      [plain(alice), stranger],
      [plain(carol), makeKey("rsa", "other rsa")],
    ] as const) {
      refusalOf(decideLogin(signed(offer, forger), files, login), "bad signature", fingerprint(offer.signer))
      refusalOf(
        decideLogin(signed(offer, offer.signer, userauthData(offer.algorithm, stranger.blob)), files, login),
        "bad signature",
        fingerprint(offer.signer),
      )
    }
  })

  it("an algorithm that does not fit the key is refused", () => {
    const files = credentials([keyLine(bob), keyLine(alice)])
    expect(refused(plain(bob, "ssh-ed25519"), files, "algorithm")).toMatch(/does not fit/)
    refused(plain(alice, "rsa-sha2-512"), files, "algorithm")
  })

  it("RSA with SHA-1 (ssh-rsa) is refused", () => {
    expect(refused(plain(carol, "ssh-rsa"), credentials([keyLine(carol)]), "algorithm")).toMatch(/SHA-1/)
  })
})

describe("options of the key line", () => {
  it("from=: a listed address is let in", () => {
    accepted(plain(alice), credentials([keyLine(alice, 'from="192.168.0.0/16,10.0.0.0/8"')]))
  })

  it("from=: an address not listed is refused", () => {
    const files = credentials([keyLine(alice, 'from="192.168.0.0/16"')])
    expect(refused(plain(alice), files, "key line address not allowed")).toMatch(/10\.1\.2\.3/)
  })

  it("from=: a negated address is refused though a later pattern lists it", () => {
    const files = credentials([keyLine(alice, 'from="!10.1.2.3,10.0.0.0/8"')])
    refused(plain(alice), files, "key line address denied")
    accepted(plain(alice), files, { ...login, clientAddress: "10.1.2.4" })
  })

  it("expiry-time: valid through that second, refused after it", () => {
    accepted(plain(alice), credentials([keyLine(alice, 'expiry-time="20260115120000Z"')]))
    const files = credentials([keyLine(alice, 'expiry-time="20260115115959Z"')])
    expect(refused(plain(alice), files, "key line expired")).toMatch(/2026-01-15T11:59:59/)
  })

  it("several lines with the same key: tried in file order, the first whose options allow wins", () => {
    const identityOf = (lines: ReadonlyArray<string>) =>
      accepted(plain(alice), credentials(lines)).identity.name
    const notHere = keyLine(alice, 'from="192.168.0.0/16",mcp-identity="first"')
    const expired = keyLine(alice, 'expiry-time="20200101Z",mcp-identity="expired"')
    const second = keyLine(alice, 'mcp-identity="second"')
    const third = keyLine(alice, 'mcp-identity="third"')
    expect(identityOf([notHere, expired, second, third])).toBe("second")
    expect(identityOf([second, third])).toBe("second")
    expect(identityOf([keyLine(bob), third, second])).toBe("third")
  })

  it("several lines with the same key, none allowing: the first line's refusal is the answer", () => {
    const files = credentials([
      keyLine(alice, 'from="192.168.0.0/16"'),
      keyLine(alice, 'expiry-time="20200101Z"'),
    ])
    expect(refused(plain(alice), files, "key line address not allowed")).toMatch(/line 1/)
  })
})

describe("revoked keys", () => {
  const krlOfKey = (key: TestKey) => Buffer.concat([krlHeader(), krlSection(2, str(key.blob))])

  it.each([
    ["a key list", () => revokedKeyList(alice)],
    ["a KRL", () => revokedFile(krlOfKey(alice))],
  ])("a key revoked by %s is refused; other keys are not", (_source, revocations) => {
    const files = credentials([keyLine(alice), keyLine(bob)], revocations())
    expect(refused(plain(alice), files, "revoked")).toMatch(/revoked/)
    accepted(plain(bob), files)
  })

  it("while the revoked keys file is unusable, every key and every certificate is refused", () => {
    const files = credentials([keyLine(alice), keyLine(bob), caLine(ca)], unusableRevocations)
    expect(refused(plain(alice), files, "revoked keys unusable")).toMatch(/does not exist/)
    refused(plain(bob), files, "revoked keys unusable")
    refused(certificate({ key: carol }), files, "revoked keys unusable")
  })
})

describe("certificates", () => {
  const trusted = () => credentials([caLine(ca)])

  it.each([
    ["ed25519", alice, undefined],
    ["ECDSA P-256", bob, undefined],
    ["RSA, rsa-sha2-512", carol, undefined],
    ["RSA, rsa-sha2-256", carol, "rsa-sha2-256-cert-v01@openssh.com"],
  ])("a certificate of a %s key through a cert-authority line", (_name, key, algorithm) => {
    const grant = accepted(certificate({ key }, algorithm), trusted())
    expect(grant.fingerprint).toBe(fingerprint(key))
    expect(grant.identity).toEqual({ name: "alice@ci", groups: ["dev", "ops"] })
    expect(grant.certificate).toEqual({ serial: "7", caFingerprint: fingerprint(ca) })
  })

  it("identity: the key id; groups: the principals the line allows, then the line's mcp-groups", () => {
    const files = credentials([caLine(ca, 'principals="ops,ci",mcp-groups="mcp,ops"')])
    const grant = accepted(certificate({ keyId: "deploy-bot", principals: ["dev", "ops", "ci"] }), files)
    expect(grant.identity).toEqual({ name: "deploy-bot", groups: ["ops", "ci", "mcp"] })
  })

  it("a CA no cert-authority line trusts is refused, even listed as a plain key", () => {
    const files = credentials([caLine(ca), keyLine(otherCa)])
    const reason = refused(certificate({ ca: otherCa }), files, "certificate untrusted CA")
    expect(reason).toContain(fingerprint(otherCa))
  })

  it("a host certificate is refused", () => {
    refused(certificate({ kind: "host" }), trusted(), "certificate not a user certificate")
  })

  it("an expired certificate is refused (valid before is exclusive)", () => {
    refused(certificate({ validBefore: nowSeconds }), trusted(), "certificate expired")
  })

  it("a certificate not yet valid is refused", () => {
    refused(certificate({ validAfter: nowSeconds + 1n }), trusted(), "certificate not yet valid")
  })

  it("a principal principals= does not allow is refused", () => {
    const files = credentials([caLine(ca, 'principals="ci,admin"')])
    refused(certificate(), files, "certificate no principal allowed")
  })

  it("source-address: a listed client is let in, another refused", () => {
    const sourced = (addresses: string) =>
      certificate({ critical: certificateOptions({ "source-address": addresses }) })
    accepted(sourced("10.0.0.0/8"), trusted())
    refused(sourced("192.168.0.0/16"), trusted(), "certificate source address not allowed")
  })

  it("force-command is refused", () => {
    const forced = certificate({ critical: certificateOptions({ "force-command": "/bin/true" }) })
    refused(forced, trusted(), "certificate unsupported critical option")
  })

  it("a revoked serial is refused; another serial of the same CA is not", () => {
    const revocations = revokedFile(Buffer.concat([krlHeader(), krlCertificates(ca.blob, krlSerials(7n))]))
    const files = credentials([caLine(ca)], revocations)
    refused(certificate({ serial: 7n }), files, "certificate revoked")
    accepted(certificate({ serial: 8n }), files)
  })

  it("a certificate whose key is revoked is refused", () => {
    refused(certificate(), credentials([caLine(ca)], revokedKeyList(alice)), "certificate revoked")
  })

  it("a signature by another key than the certified one, the CA's included, is a bad signature", () => {
    const offer = certificate()
    for (const forger of [stranger, ca]) {
      refusalOf(decideLogin(signed(offer, forger), trusted(), login), "bad signature", fingerprint(alice))
    }
  })

  it("a request algorithm that does not fit the certificate is refused", () => {
    const offer = certificate({}, "ecdsa-sha2-nistp256-cert-v01@openssh.com")
    refused(offer, trusted(), "certificate algorithm mismatch")
  })

  it("an RSA certificate offered for SHA-1 signatures (ssh-rsa-cert-v01@openssh.com) is refused", () => {
    const sha1 = certificate({ key: carol }, "ssh-rsa-cert-v01@openssh.com")
    expect(refused(sha1, trusted(), "certificate algorithm mismatch", login, fingerprint(carol))).toMatch(
      /SHA-1/,
    )
  })

  it("a certificate whose CA signature does not verify, or that is cut short, is refused", () => {
    const { keyData } = certificate({ keyId: "mallory" })
    const changed = Buffer.from(keyData.toString("latin1").replace("mallory", "alice!!"), "latin1")
    const cut = keyData.subarray(0, keyData.length - 10)
    for (const [blob, code] of [
      [changed, "certificate signature does not verify"],
      [cut, "certificate truncated"],
    ] as const) {
      refused({ ...certificate(), keyData: blob }, trusted(), code, login, fingerprintOf(blob))
    }
  })

  it("cert-authority line options: from= and expiry-time apply to the CA's certificates", () => {
    refused(
      certificate(),
      credentials([caLine(ca, 'from="192.168.0.0/16"')]),
      "certificate CA line address not allowed",
    )
    accepted(certificate(), credentials([caLine(ca, 'expiry-time="20260115120000Z"')]))
    refused(
      certificate(),
      credentials([caLine(ca, 'expiry-time="20260115115959Z"')]),
      "certificate CA line expired",
    )
  })

  it("several lines for the CA: tried in order, the first that lets the certificate in wins", () => {
    const files = credentials([
      caLine(ca, 'principals="ci",mcp-groups="first"'),
      caLine(ca, 'mcp-groups="second"'),
      caLine(ca, 'mcp-groups="third"'),
    ])
    expect(accepted(certificate(), files).identity.groups).toEqual(["dev", "ops", "second"])
    const none = credentials([caLine(ca, 'principals="ci"'), caLine(ca, 'from="192.168.0.0/16"')])
    refused(certificate(), none, "certificate no principal allowed")
  })

  it("a refused certificate's key is not let in as a plain key, unless listed as one", () => {
    const untrusted = certificate({ ca: otherCa })
    const expired = certificate({ validBefore: nowSeconds })
    const unlisted = credentials([caLine(ca)])
    refused(untrusted, unlisted, "certificate untrusted CA")
    refused(expired, unlisted, "certificate expired")
    refused(plain(alice), unlisted, "not authorized")
    // Listed, the key logs in as itself; its certificates are still judged only as certificates.
    const listed = credentials([caLine(ca), keyLine(alice)])
    expect(accepted(plain(alice), listed).certificate).toBeUndefined()
    refused(untrusted, listed, "certificate untrusted CA")
    refused(expired, listed, "certificate expired")
  })
})

describe("Grant.recheck: do the files still grant a live login?", () => {
  const plainGrant = (lines: ReadonlyArray<string>) => accepted(plain(alice), credentials(lines))
  const certificateGrant = (lines: ReadonlyArray<string>) => accepted(certificate(), credentials(lines))

  it("the same files, read again, still grant it", () => {
    const lines = [keyLine(alice, 'mcp-groups="dev"'), caLine(ca, 'mcp-groups="ops"')]
    expect(plainGrant(lines).recheck(credentials(lines))).toBeUndefined()
    expect(certificateGrant(lines).recheck(credentials(lines))).toBeUndefined()
    // Other lines may come and go.
    expect(plainGrant(lines).recheck(credentials([keyLine(bob), ...lines]))).toBeUndefined()
  })

  it("a key line whose options changed no longer grants it", () => {
    const grant = plainGrant([keyLine(alice, 'mcp-groups="dev"')])
    for (const changed of ['mcp-groups="dev,admin"', 'from="10.0.0.0/8",mcp-groups="dev"', ""]) {
      expect(grant.recheck(credentials([keyLine(alice, changed)]))).toBe(
        `the authorized_keys line of ${fingerprint(alice)} changed`,
      )
    }
  })

  it("a key that became revoked: the reason says so", () => {
    const grant = plainGrant([keyLine(alice)])
    expect(grant.recheck(credentials([keyLine(alice)], revokedKeyList(alice)))).toBe(
      `key ${fingerprint(alice)} is now revoked (revoked keys file)`,
    )
  })

  it("a key removed from the file altogether is left to the key store's watcher", () => {
    expect(plainGrant([keyLine(alice)]).recheck(credentials([keyLine(bob)]))).toBeUndefined()
  })

  it("a revoked keys file that became unusable ends no live login (it says nothing about which)", () => {
    expect(
      plainGrant([keyLine(alice)]).recheck(credentials([keyLine(alice)], unusableRevocations)),
    ).toBeUndefined()
  })

  it("a certificate: its CA line removed, or changed", () => {
    const grant = certificateGrant([caLine(ca, 'mcp-groups="ops"')])
    expect(grant.recheck(credentials([keyLine(alice)]))).toBe(`CA ${fingerprint(ca)} is no longer trusted`)
    expect(grant.recheck(credentials([caLine(ca, 'mcp-groups="ops,admin"')]))).toBe(
      `the cert-authority line of CA ${fingerprint(ca)} changed`,
    )
  })

  it("a certificate whose serial, or key, became revoked", () => {
    const grant = certificateGrant([caLine(ca)])
    const serial = revokedFile(Buffer.concat([krlHeader(), krlCertificates(ca.blob, krlSerials(7n))]))
    const revokedMessage = `certificate serial 7 of ${fingerprint(alice)} is now revoked`
    expect(grant.recheck(credentials([caLine(ca)], serial))).toBe(revokedMessage)
    expect(grant.recheck(credentials([caLine(ca)], revokedKeyList(alice)))).toBe(revokedMessage)
  })
})
