/**
 * OpenSSH certificates: parsed and verified as ssh-keygen makes them (every CA type, every certified
 * key type), every acceptance rule and refusal reason of checkCertificate, the userauth signature of a
 * certificate login, and hostile bytes (random, truncated at every offset, bit flips) that must come
 * back as a tagged error, never a throw.
 */
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { Either } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  type CertificateCheck,
  type CertificateError,
  checkCertificate,
  forever,
  isCertificateAlgorithm,
  type OpenSshCertificate,
  parseCertificate,
  readCertificate,
  verifyCertificateUserauth,
} from "../src/gateway/identity/certificate.js"
import {
  type CertificateFile,
  certify,
  type KeyFiles,
  keygen,
  makeTempDir,
  removeDir,
  type SigningKey,
  signingKey,
} from "./support/openssh.js"
import {
  type CertificateFields,
  type KeyKind,
  keyKinds,
  makeCertificate,
  makeKey,
  str,
  strings,
} from "./support/sshCraft.js"

let dir = ""
const cas = new Map<KeyKind, KeyFiles>()
const users = new Map<KeyKind, SigningKey>()
const ca = (kind: KeyKind = "ed25519"): KeyFiles => cas.get(kind) ?? expect.fail(`no ${kind} CA`)
const user = (kind: KeyKind = "ed25519"): SigningKey => users.get(kind) ?? expect.fail(`no ${kind} user`)

beforeAll(() => {
  dir = makeTempDir()
  for (const kind of keyKinds) {
    cas.set(kind, keygen(dir, `ca-${kind}`, kind))
    users.set(kind, signingKey(dir, `user-${kind}`, kind))
  }
})
afterAll(() => removeDir(dir))

const read = (file: CertificateFile | Buffer): OpenSshCertificate => {
  const result = readCertificate(Buffer.isBuffer(file) ? file : file.blob)
  if (Either.isLeft(result)) return expect.fail(result.left.message)
  return result.right
}
const refusedRead = (blob: Buffer): CertificateError => {
  const result = readCertificate(blob)
  if (Either.isRight(result)) return expect.fail("certificate was accepted")
  return result.left
}

const fingerprintByKeygen = (path: string): string =>
  execFileSync("ssh-keygen", ["-l", "-f", path]).toString().split(" ")[1] ?? ""

const now = () => Math.floor(Date.now() / 1000)
const baseCheck: CertificateCheck = {
  now: new Date(),
  clientAddress: "10.1.2.3",
  allowedPrincipals: undefined,
  isRevoked: () => false,
}
const accepted = (certificate: OpenSshCertificate, check: Partial<CertificateCheck> = {}) => {
  const result = checkCertificate(certificate, { ...baseCheck, ...check })
  if (Either.isLeft(result)) return expect.fail(result.left.message)
  return result.right
}
const refusal = (certificate: OpenSshCertificate, check: Partial<CertificateCheck> = {}) => {
  const result = checkCertificate(certificate, { ...baseCheck, ...check })
  if (Either.isRight(result)) return expect.fail("certificate was accepted")
  return result.left.reason
}

describe("certificates signed by every CA type", () => {
  it.each(keyKinds)("a %s CA: fields as ssh-keygen wrote them, signature verified", (kind) => {
    const file = certify(dir, ca(kind), user(), "alice@ci", ["-n", "dev,ops", "-z", "42", "-V", "+1h"])
    const certificate = read(file)
    expect(certificate.algorithm).toBe("ssh-ed25519-cert-v01@openssh.com")
    expect(certificate.keyId).toBe("alice@ci")
    expect(certificate.principals).toEqual(["dev", "ops"])
    expect(certificate.serial).toBe(42n)
    expect(certificate.kind).toBe("user")
    expect(certificate.key.blob.equals(user().blob)).toBe(true)
    expect(certificate.signatureKey.blob.equals(ca(kind).blob)).toBe(true)
    expect(certificate.signatureKey.fingerprint).toBe(fingerprintByKeygen(ca(kind).publicPath))
    expect(certificate.extensions.map((option) => option.name)).toContain("permit-pty")
    expect(certificate.criticalOptions).toEqual([])
    expect(Number(certificate.validBefore) - now()).toBeGreaterThan(3500)
    expect(accepted(certificate)).toEqual({
      keyId: "alice@ci",
      principals: ["dev", "ops"],
      serial: 42n,
      caFingerprint: fingerprintByKeygen(ca(kind).publicPath),
      keyFingerprint: fingerprintByKeygen(user().publicPath),
    })
  })

  it.each(keyKinds)("certifies a %s key", (kind) => {
    const certificate = read(certify(dir, ca("ecdsa256"), user(kind), `key-${kind}`, ["-n", "p"]))
    expect(certificate.key.blob.equals(user(kind).blob)).toBe(true)
    expect(certificate.key.type).toBe(user(kind).publicLine.split(" ")[0])
    expect(certificate.algorithm).toBe(`${certificate.key.type}-cert-v01@openssh.com`)
  })

  it("an RSA CA may sign with rsa-sha2-256 or rsa-sha2-512; its SHA-1 ssh-rsa signatures are refused", () => {
    for (const algorithm of ["rsa-sha2-256", "rsa-sha2-512"]) {
      expect(read(certify(dir, ca("rsa"), user(), "sha2", ["-n", "p", "-t", algorithm])).keyId).toBe("sha2")
    }
    const sha1 = certify(dir, ca("rsa"), user(), "sha1", ["-n", "p", "-t", "ssh-rsa"])
    expect(Either.isRight(parseCertificate(sha1.blob))).toBe(true)
    const error = refusedRead(sha1.blob)
    expect(error.reason).toBe("signature does not verify")
    expect(error.detail).toMatch(/SHA-1/)
  })

  it("a certificate is refused when its CA key is swapped for another one (the signature no longer fits)", () => {
    const certificate = read(certify(dir, ca("ed25519"), user(), "swap", ["-n", "p"]))
    const other = keygen(dir, "ca-other", "ed25519")
    const swapped = Buffer.from(
      certificate.blob
        .toString("latin1")
        .replace(ca().blob.toString("latin1"), other.blob.toString("latin1")),
      "latin1",
    )
    expect(refusedRead(swapped).reason).toBe("signature does not verify")
  })

  it("a changed key id breaks the signature", () => {
    const file = certify(dir, ca(), user(), "mallory", ["-n", "p"])
    const changed = Buffer.from(file.blob.toString("latin1").replace("mallory", "alice!!"), "latin1")
    expect(refusedRead(changed).reason).toBe("signature does not verify")
  })
})

describe("checkCertificate: who may log in", () => {
  it("a host certificate is refused", () => {
    const certificate = read(certify(dir, ca(), user(), "host", ["-h", "-n", "example.com"]))
    expect(certificate.kind).toBe("host")
    expect(refusal(certificate)).toBe("not a user certificate")
  })

  it("validity: now inside the window; expired; not yet valid; the exact bounds as OpenSSH", () => {
    const current = read(certify(dir, ca(), user(), "now", ["-n", "p", "-V", "+1h"]))
    expect(accepted(current).keyId).toBe("now")
    const past = read(certify(dir, ca(), user(), "past", ["-n", "p", "-V", "-2h:-1h"]))
    expect(refusal(past)).toBe("expired")
    const future = read(certify(dir, ca(), user(), "future", ["-n", "p", "-V", "+1h:+2h"]))
    expect(refusal(future)).toBe("not yet valid")
    // valid_after <= now < valid_before
    expect(accepted(future, { now: Number(future.validAfter) }).keyId).toBe("future")
    expect(refusal(future, { now: Number(future.validAfter) - 1 })).toBe("not yet valid")
    expect(refusal(past, { now: Number(past.validBefore) })).toBe("expired")
    expect(accepted(past, { now: Number(past.validBefore) - 1 }).keyId).toBe("past")
  })

  it("no -V means valid forever (valid_before 0xffffffffffffffff)", () => {
    const certificate = read(certify(dir, ca(), user(), "forever", ["-n", "p"]))
    expect(certificate.validAfter).toBe(0n)
    expect(certificate.validBefore).toBe(forever)
    expect(accepted(certificate, { now: 4_000_000_000_000 }).keyId).toBe("forever")
  })

  it("serials: the full 64-bit range", () => {
    const certificate = read(certify(dir, ca(), user(), "big", ["-n", "p", "-z", "18446744073709551615"]))
    expect(certificate.serial).toBe(0xffffffffffffffffn)
  })

  it("principals: all of them without principals=; only the allowed ones with it; none is refused", () => {
    const certificate = read(certify(dir, ca(), user(), "alice", ["-n", "dev,ops,admin"]))
    expect(accepted(certificate).principals).toEqual(["dev", "ops", "admin"])
    expect(accepted(certificate, { allowedPrincipals: ["ops", "ci"] }).principals).toEqual(["ops"])
    expect(refusal(certificate, { allowedPrincipals: ["ci"] })).toBe("no principal allowed")
    expect(refusal(certificate, { allowedPrincipals: [] })).toBe("no principal allowed")
    const wildcard = read(certify(dir, ca(), user(), "wildcard"))
    expect(wildcard.principals).toEqual([])
    expect(refusal(wildcard)).toBe("no principals")
    expect(refusal(wildcard, { allowedPrincipals: ["dev"] })).toBe("no principals")
  })

  it("revoked: the checker is asked with the certificate", () => {
    const certificate = read(certify(dir, ca(), user(), "gone", ["-n", "p", "-z", "7"]))
    const asked: Array<bigint> = []
    expect(
      refusal(certificate, {
        isRevoked: (subject) => {
          asked.push(subject.serial)
          return true
        },
      }),
    ).toBe("revoked")
    expect(asked).toEqual([7n])
  })

  it("source-address is honoured, for IPv4, IPv6 and IPv4-mapped IPv6 clients", () => {
    const certificate = read(
      certify(dir, ca(), user(), "sourced", [
        "-n",
        "p",
        "-O",
        "source-address=10.0.0.0/8,2001:db8::/32,192.0.2.7",
      ]),
    )
    expect(certificate.criticalOptions.map((option) => option.name)).toEqual(["source-address"])
    for (const address of ["10.1.2.3", "::ffff:10.200.0.1", "2001:db8::1", "192.0.2.7"]) {
      expect(accepted(certificate, { clientAddress: address }).keyId).toBe("sourced")
    }
    for (const address of ["192.168.1.1", "192.0.2.8", "2001:db9::1", "::ffff:11.0.0.1", "unknown"]) {
      expect(refusal(certificate, { clientAddress: address })).toBe("source address not allowed")
    }
  })

  it("force-command, verify-required and unknown critical options refuse; unknown extensions do not", () => {
    const forced = read(certify(dir, ca(), user(), "forced", ["-n", "p", "-O", "force-command=x"]))
    expect(refusal(forced)).toBe("unsupported critical option")
    const verify = read(certify(dir, ca(), user(), "verify", ["-n", "p", "-O", "verify-required"]))
    expect(refusal(verify)).toBe("unsupported critical option")
    const unknown = read(
      certify(dir, ca(), user(), "unknown", ["-n", "p", "-O", "critical:limit@example.com=1"]),
    )
    expect(refusal(unknown)).toBe("unsupported critical option")
    const extension = read(
      certify(dir, ca(), user(), "extended", [
        "-n",
        "p",
        "-O",
        "clear",
        "-O",
        "extension:anything@example.com=x",
      ]),
    )
    expect(extension.extensions.map((option) => option.name)).toEqual(["anything@example.com"])
    expect(accepted(extension).keyId).toBe("extended")
  })

  it("the refusal says which certificate and why", () => {
    const certificate = read(
      certify(dir, ca(), user(), "old", ["-n", "p", "-z", "9", "-V", "20200101:20200102"]),
    )
    const result = checkCertificate(certificate, baseCheck)
    expect(Either.isLeft(result) && result.left.message).toMatch(
      /expired: certificate 'old' serial 9 expired at 2020-01-0/,
    )
  })
})

describe("the userauth signature of a certificate login", () => {
  const data = randomBytes(100)

  it.each(keyKinds)("a %s certified key signs; the certificate's algorithm names the request", (kind) => {
    const certificate = read(certify(dir, ca(), user(kind), `login-${kind}`, ["-n", "p"]))
    const requests =
      kind === "rsa"
        ? [
            ["rsa-sha2-256-cert-v01@openssh.com", "rsa-sha2-256"],
            ["rsa-sha2-512-cert-v01@openssh.com", "rsa-sha2-512"],
          ]
        : [[certificate.algorithm, undefined]]
    for (const [requestAlgorithm = "", signatureAlgorithm] of requests) {
      const rsaAlgorithm = signatureAlgorithm === "rsa-sha2-256" ? "rsa-sha2-256" : "rsa-sha2-512"
      const signature = user(kind).signUserauth(data, rsaAlgorithm)
      expect(Either.isRight(verifyCertificateUserauth(certificate, requestAlgorithm, signature, data))).toBe(
        true,
      )
      const tampered = Buffer.from(data)
      tampered[0] = (tampered[0] ?? 0) ^ 1
      expect(
        Either.isLeft(verifyCertificateUserauth(certificate, requestAlgorithm, signature, tampered)),
      ).toBe(true)
    }
  })

  it("refuses SHA-1 RSA, a mismatched algorithm, another key's signature, and garbage", () => {
    const rsa = read(certify(dir, ca(), user("rsa"), "rsa-login", ["-n", "p"]))
    const sha1 = verifyCertificateUserauth(
      rsa,
      "ssh-rsa-cert-v01@openssh.com",
      user("rsa").signUserauth(data, "ssh-rsa"),
      data,
    )
    expect(Either.isLeft(sha1) && sha1.left.detail).toMatch(/SHA-1/)
    const mismatch = verifyCertificateUserauth(
      rsa,
      "rsa-sha2-256-cert-v01@openssh.com",
      user("rsa").signUserauth(data, "rsa-sha2-512"),
      data,
    )
    expect(Either.isLeft(mismatch) && mismatch.left.detail).toMatch(/does not match/)
    const ed = read(certify(dir, ca(), user(), "ed-login", ["-n", "p"]))
    expect(
      Either.isLeft(
        verifyCertificateUserauth(ed, "ssh-rsa-cert-v01@openssh.com", user().signUserauth(data), data),
      ),
    ).toBe(true)
    const stranger = signingKey(dir, "stranger", "ed25519")
    expect(
      Either.isLeft(verifyCertificateUserauth(ed, ed.algorithm, stranger.signUserauth(data), data)),
    ).toBe(true)
    // The CA's signature is not the user's: a CA cannot log in as its certificates.
    expect(Either.isLeft(verifyCertificateUserauth(ed, ed.algorithm, ed.signature, data))).toBe(true)
    for (const junk of [Buffer.alloc(0), randomBytes(3), randomBytes(80)]) {
      expect(Either.isLeft(verifyCertificateUserauth(ed, ed.algorithm, junk, data))).toBe(true)
    }
  })

  it("isCertificateAlgorithm tells certificate algorithms from plain ones", () => {
    expect(isCertificateAlgorithm("rsa-sha2-512-cert-v01@openssh.com")).toBe(true)
    expect(isCertificateAlgorithm("ssh-ed25519-cert-v01@openssh.com")).toBe(true)
    expect(isCertificateAlgorithm("ssh-ed25519")).toBe(false)
    expect(isCertificateAlgorithm("rsa-sha2-256")).toBe(false)
  })
})

// ---------------------------------------------------------------------------------------------
// Crafted certificates: fields ssh-keygen will not write, signed properly by a test CA.

const craftCa = makeKey("ed25519", "craft-ca")
/** A certificate of user() by a CA of its own, serial 5, key id "crafted", principal "p", valid forever. */
const craft = (fields: Partial<CertificateFields> = {}): Buffer =>
  makeCertificate({ ca: craftCa, key: user(), serial: 5n, ...fields })

describe("crafted certificates", () => {
  it("a well-formed crafted certificate is accepted (the crafting is sound)", () => {
    expect(accepted(read(craft())).keyId).toBe("crafted")
  })

  it.each([
    ["ssh-dss-cert-v01@openssh.com", "unknown key type"],
    ["sk-ssh-ed25519-cert-v01@openssh.com", "unknown key type"],
    ["ssh-ed25519", "unknown key type"],
    ["ssh-ed25519-cert-v00@openssh.com", "unknown key type"],
  ])("type %s: %s", (algorithm, reason) => {
    expect(refusedRead(craft({ algorithm })).reason).toBe(reason)
  })

  it("refuses an unknown certificate kind, NUL or bad UTF-8 in the key id, too many principals", () => {
    expect(refusedRead(craft({ kind: 3 })).detail).toMatch(/kind 3/)
    expect(refusedRead(craft({ keyId: Buffer.from("a\0b") })).detail).toMatch(/NUL/)
    expect(refusedRead(craft({ keyId: Buffer.from([0xc3, 0x28]) })).detail).toMatch(/UTF-8/)
    const many = strings(Array.from({ length: 257 }, (_, index) => `p${index}`))
    expect(refusedRead(craft({ principals: many })).detail).toMatch(/more than 256/)
    expect(
      read(craft({ principals: strings(Array.from({ length: 256 }, (_, index) => `p${index}`)) })).principals,
    ).toHaveLength(256)
  })

  it("refuses malformed principal and option sections", () => {
    expect(refusedRead(craft({ principals: Buffer.from([0, 0, 0, 9, 1]) })).reason).toBe("malformed")
    expect(refusedRead(craft({ critical: strings(["source-address"]) })).reason).toBe("malformed")
    const twice = Buffer.concat([
      strings(["source-address", str("10.0.0.0/8")]),
      strings(["source-address", str("0.0.0.0/0")]),
    ])
    expect(refusedRead(craft({ critical: twice })).detail).toMatch(/twice/)
  })

  it("a malformed source-address refuses the login", () => {
    const bad = (value: Buffer) => read(craft({ critical: strings(["source-address", value]) }))
    expect(refusal(bad(str("10.0.0.1/8")))).toBe("malformed critical option")
    expect(refusal(bad(str("10.0.0.0/8,")))).toBe("malformed critical option")
    expect(refusal(bad(str("*")))).toBe("malformed critical option")
    expect(refusal(bad(Buffer.from("10.0.0.0/8")))).toBe("malformed critical option")
  })

  it("refuses chained certificates and unacceptable CA keys", () => {
    const chained = craft({ signatureKey: craft() })
    const error = refusedRead(chained)
    expect(error.reason).toBe("unsupported signature key")
    expect(error.detail).toMatch(/chained/)
    expect(refusedRead(craft({ signatureKey: strings(["ssh-dss", "x", "y", "z", "w"]) })).reason).toBe(
      "unsupported signature key",
    )
    expect(refusedRead(craft({ signatureKey: strings(["ssh-ed25519", Buffer.alloc(31)]) })).reason).toBe(
      "unsupported signature key",
    )
  })

  it("refuses a certified key that is not a valid key", () => {
    expect(refusedRead(craft({ keyFields: str(Buffer.alloc(31)) })).reason).toBe("malformed")
    const small = strings([
      Buffer.from([1, 0, 1]),
      Buffer.concat([Buffer.from([0]), Buffer.alloc(128, 0xc5)]),
    ])
    expect(
      refusedRead(craft({ algorithm: "ssh-rsa-cert-v01@openssh.com", keyFields: small })).detail,
    ).toMatch(/at least 2048/)
    const offCurve = strings(["nistp256", Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 1)])])
    expect(
      refusedRead(craft({ algorithm: "ecdsa-sha2-nistp256-cert-v01@openssh.com", keyFields: offCurve }))
        .reason,
    ).toBe("malformed")
    const wrongCurve = strings(["nistp384", Buffer.concat([Buffer.from([4]), Buffer.alloc(64, 1)])])
    expect(
      refusedRead(craft({ algorithm: "ecdsa-sha2-nistp256-cert-v01@openssh.com", keyFields: wrongCurve }))
        .detail,
    ).toMatch(/curve/)
  })

  it("refuses trailing bytes after the signature", () => {
    expect(refusedRead(Buffer.concat([craft(), Buffer.from([0])])).reason).toBe("malformed")
  })
})

describe("hostile bytes never throw", () => {
  const realCertificates = () =>
    keyKinds.map(
      (kind) =>
        certify(dir, ca(kind), user(kind), `fuzz-${kind}`, [
          "-n",
          "a,b",
          "-z",
          "3",
          "-O",
          "source-address=10.0.0.0/8",
        ]).blob,
    )

  it("random buffers, with and without a certificate type in front", () => {
    for (let round = 0; round < 2000; round++) {
      const random = randomBytes(Math.floor(Math.random() * 600))
      const prefixed = Buffer.concat([str("ssh-ed25519-cert-v01@openssh.com"), random])
      for (const blob of [random, prefixed]) {
        expect(Either.isLeft(readCertificate(blob))).toBe(true)
      }
    }
  })

  it("every truncation of a real certificate is 'truncated'", () => {
    for (const blob of realCertificates()) {
      for (let length = 0; length < blob.length; length++) {
        const result = readCertificate(blob.subarray(0, length))
        expect(Either.isLeft(result) && result.left.reason).toBe("truncated")
      }
    }
  })

  it("every byte changed (one random bit) is refused; every bit of an ed25519 certificate too", () => {
    const [ed25519, ...others] = realCertificates()
    if (ed25519 === undefined) return expect.fail("no certificate")
    for (let index = 0; index < ed25519.length; index++) {
      for (let bit = 0; bit < 8; bit++) {
        const flipped = Buffer.from(ed25519)
        flipped[index] = (flipped[index] ?? 0) ^ (1 << bit)
        expect(Either.isLeft(readCertificate(flipped))).toBe(true)
      }
    }
    for (const blob of others) {
      for (let index = 0; index < blob.length; index++) {
        const flipped = Buffer.from(blob)
        flipped[index] = (flipped[index] ?? 0) ^ (1 << Math.floor(Math.random() * 8))
        expect(Either.isLeft(readCertificate(flipped))).toBe(true)
      }
    }
  })

  it("length fields set to huge values are 'truncated', not an allocation", () => {
    const blob = craft()
    for (let offset = 0; offset + 4 <= blob.length; offset += 1) {
      const changed = Buffer.from(blob)
      changed.writeUInt32BE(0xffffffff, offset)
      // valid_before is already all ones (forever): there the write changes nothing.
      if (changed.equals(blob)) continue
      expect(Either.isLeft(readCertificate(changed))).toBe(true)
    }
  })
})
