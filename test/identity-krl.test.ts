/**
 * Revocation: KRLs written by `ssh-keygen -k` (serial lists, ranges, bitmaps, key ids, keys, SHA-1 and
 * SHA-256 hashes, `-u` updates), checked against OpenSSH's own answer (`ssh-keygen -Q`) for the same
 * keys and certificates; crafted KRLs for what ssh-keygen does not write (any-CA sections, extensions,
 * signature sections); plain key lists; and hostile bytes.
 */
import { createHash, randomBytes } from "node:crypto"
import { Either } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type OpenSshCertificate, parseCertificate } from "../src/gateway/identity/certificate.js"
import {
  isRevoked,
  noRevocations,
  parseKrl,
  parseRevokedKeyList,
  parseRevokedKeysFile,
  type Revocations,
} from "../src/gateway/identity/krl.js"
import {
  type CertificateFile,
  certify,
  type KeyFiles,
  keygen,
  makeKrl,
  makeTempDir,
  opensshRevokes,
  removeDir,
  writeText,
} from "./support/openssh.js"
import {
  krlCertificates,
  krlExtension,
  krlHeader,
  krlKeyIds,
  krlSection,
  str,
  u64,
} from "./support/sshCraft.js"

let dir = ""
let ca: KeyFiles
let otherCa: KeyFiles
const keys: Record<string, KeyFiles> = {}
const key = (name: string): KeyFiles => keys[name] ?? expect.fail(`no key ${name}`)

beforeAll(() => {
  dir = makeTempDir()
  ca = keygen(dir, "ca", "ed25519")
  otherCa = keygen(dir, "other-ca", "ecdsa256")
  for (const name of ["user", "byKey", "bySha1", "bySha256", "byHash", "plainFile", "clean"]) {
    keys[name] = keygen(dir, name, "ed25519")
  }
})
afterAll(() => removeDir(dir))

const certificateOf = (file: CertificateFile): OpenSshCertificate => {
  const parsed = parseCertificate(file.blob)
  return Either.isRight(parsed) ? parsed.right : expect.fail(parsed.left.message)
}
const krl = (bytes: Buffer): Revocations => {
  const parsed = parseKrl(bytes)
  return Either.isRight(parsed) ? parsed.right : expect.fail(parsed.left.message)
}
const revokesCertificate = (revocations: Revocations, file: CertificateFile) => {
  const certificate = certificateOf(file)
  return isRevoked(revocations, { key: certificate.key.blob, certificate })
}

describe("KRLs made by ssh-keygen -k, compared with ssh-keygen -Q", () => {
  const serials = [1, 2, 7, 8, 9, 999, 1000, 1001, 1002, 1100, 1101, 5000, 5003, 5004]
  let certificates: Array<{ readonly serial: number; readonly file: CertificateFile }> = []
  let krlPath = ""
  let revocations: Revocations = noRevocations

  beforeAll(() => {
    const spec = [
      "serial: 1",
      "serial: 7-8",
      // Dense serials: ssh-keygen writes them as a bitmap.
      ...Array.from({ length: 51 }, (_, index) => `serial: ${1000 + 2 * index}`),
      "serial: 5000-5003",
      "id: revoked-id",
      `key: ${key("byKey").publicLine}`,
      `sha1: ${key("bySha1").publicLine}`,
      `sha256: ${key("bySha256").publicLine}`,
    ].join("\n")
    const made = makeKrl(
      dir,
      "main.krl",
      ["-s", ca.publicPath, "-z", "17"],
      [writeText(dir, "spec", `${spec}\n`)],
    )
    krlPath = made.path
    revocations = krl(made.bytes)
    certificates = serials.map((serial) => ({
      serial,
      file: certify(dir, ca, key("user"), `user-${serial}`, ["-n", "p", "-z", String(serial)]),
    }))
  })

  it("reads the header and the sections ssh-keygen chose (list, range, bitmap, key id)", () => {
    expect(revocations.format).toBe("krl")
    expect(revocations.version).toBe(17n)
    const section = revocations.certificates.get(ca.blob.toString("base64"))
    expect(section?.keyIds).toEqual(new Set(["revoked-id"]))
    expect(section?.serials.some((range) => range.low === 1000n && range.high === 1000n)).toBe(true)
    expect(section?.serials.some((range) => range.low === 5000n && range.high === 5003n)).toBe(true)
    expect(section?.serials.some((range) => range.low === 7n && range.high === 8n)).toBe(true)
  })

  it("every certificate serial gets OpenSSH's answer", () => {
    for (const { serial, file } of certificates) {
      const expected = opensshRevokes(krlPath, file.path)
      expect({ serial, revoked: revokesCertificate(revocations, file) }).toEqual({
        serial,
        revoked: expected,
      })
    }
    const revoked = certificates
      .filter(({ file }) => revokesCertificate(revocations, file))
      .map(({ serial }) => serial)
    expect(revoked).toEqual([1, 7, 8, 1000, 1002, 1100, 5000, 5003])
  })

  it("key id: revoked for this CA only; serial 0 is never revoked by serial", () => {
    const byId = certify(dir, ca, key("clean"), "revoked-id", ["-n", "p"])
    expect(revokesCertificate(revocations, byId)).toBe(true)
    expect(opensshRevokes(krlPath, byId.path)).toBe(true)
    const otherCaSameId = certify(dir, otherCa, key("clean"), "revoked-id", ["-n", "p", "-z", "1"])
    expect(revokesCertificate(revocations, otherCaSameId)).toBe(false)
    expect(opensshRevokes(krlPath, otherCaSameId.path)).toBe(false)
    const serialZero = certify(dir, ca, key("clean"), "fine", ["-n", "p"])
    expect(revokesCertificate(revocations, serialZero)).toBe(false)
  })

  it("plain keys: by blob, SHA-1, SHA-256; and a certificate of a revoked key is revoked", () => {
    for (const name of ["byKey", "bySha1", "bySha256", "clean", "user"]) {
      expect({ name, revoked: isRevoked(revocations, { key: key(name).blob }) }).toEqual({
        name,
        revoked: opensshRevokes(krlPath, key(name).publicPath),
      })
    }
    expect(isRevoked(revocations, { key: key("clean").blob })).toBe(false)
    for (const name of ["byKey", "bySha1", "bySha256"]) {
      const file = certify(dir, ca, key(name), "innocent", ["-n", "p", "-z", "3"])
      expect(revokesCertificate(revocations, file)).toBe(true)
      expect(opensshRevokes(krlPath, file.path)).toBe(true)
    }
  })

  it("-u adds to a KRL; a revoked CA key revokes every certificate it signed", () => {
    const updated = makeKrl(
      dir,
      "main.krl",
      ["-u", "-s", ca.publicPath],
      [writeText(dir, "spec-2", `serial: 9\nhash: ${fingerprint(key("byHash"))}\n`)],
    )
    const after = krl(updated.bytes)
    const nine = certificates.find(({ serial }) => serial === 9)?.file ?? expect.fail("no serial 9")
    expect(revokesCertificate(after, nine)).toBe(true)
    expect(revokesCertificate(after, certificates[0]?.file ?? expect.fail("none"))).toBe(true)
    expect(isRevoked(after, { key: key("byHash").blob })).toBe(true)
    expect(opensshRevokes(updated.path, key("byHash").publicPath)).toBe(true)

    const caRevoked = krl(
      makeKrl(dir, "ca.krl", [], [writeText(dir, "spec-ca", `key: ${otherCa.publicLine}\n`)]).bytes,
    )
    const signed = certify(dir, otherCa, key("clean"), "anyone", ["-n", "p", "-z", "77"])
    expect(revokesCertificate(caRevoked, signed)).toBe(true)
    expect(revokesCertificate(caRevoked, certify(dir, ca, key("clean"), "anyone", ["-n", "p"]))).toBe(false)
  })

  it("key and certificate files given to -k: keys by hash, certificates by serial (or key id when 0)", () => {
    const bySerial = certify(dir, ca, key("clean"), "by-file", ["-n", "p", "-z", "4242"])
    const byIdFile = certify(dir, otherCa, key("clean"), "id-file", ["-n", "p"])
    const made = makeKrl(dir, "files.krl", [], [key("plainFile").publicPath, bySerial.path, byIdFile.path])
    const revocations = krl(made.bytes)
    expect(isRevoked(revocations, { key: key("plainFile").blob })).toBe(true)
    expect(revokesCertificate(revocations, bySerial)).toBe(true)
    expect(revokesCertificate(revocations, byIdFile)).toBe(true)
    const sameSerialOtherCa = certify(dir, otherCa, key("clean"), "x", ["-n", "p", "-z", "4242"])
    expect(revokesCertificate(revocations, sameSerialOtherCa)).toBe(
      opensshRevokes(made.path, sameSerialOtherCa.path),
    )
    expect(revokesCertificate(revocations, sameSerialOtherCa)).toBe(false)
  })
})

const fingerprint = (files: KeyFiles) =>
  `SHA256:${createHash("sha256").update(files.blob).digest("base64").replace(/=+$/, "")}`

// ---------------------------------------------------------------------------------------------
// Crafted KRLs

const reasonOf = (bytes: Buffer) => {
  const parsed = parseKrl(bytes)
  return Either.isLeft(parsed) ? parsed.left.reason : "parsed"
}

describe("crafted KRLs", () => {
  it("an any-CA section revokes a key id whoever signed it", () => {
    const revocations = krl(
      Buffer.concat([krlHeader(), krlCertificates(Buffer.alloc(0), krlKeyIds("everywhere"))]),
    )
    expect(revocations.comment).toBe("comment")
    for (const authority of [ca, otherCa]) {
      expect(
        revokesCertificate(revocations, certify(dir, authority, key("clean"), "everywhere", ["-n", "p"])),
      ).toBe(true)
      expect(
        revokesCertificate(revocations, certify(dir, authority, key("clean"), "elsewhere", ["-n", "p"])),
      ).toBe(false)
    }
  })

  it("bitmaps: bit N revokes offset + N, across byte boundaries and with a leading zero byte", () => {
    // 0x00 0x81 0x01: bits 0, 8 and 15 (0x8101 = 1000 0001 0000 0001).
    const bitmap = krlSection(0x22, Buffer.concat([u64(100n), str(Buffer.from([0x00, 0x81, 0x01]))]))
    const revocations = krl(Buffer.concat([krlHeader(), krlCertificates(ca.blob, bitmap)]))
    expect(revocations.certificates.get(ca.blob.toString("base64"))?.serials).toEqual([
      { low: 100n, high: 100n },
      { low: 108n, high: 108n },
      { low: 115n, high: 115n },
    ])
    const full = krlSection(0x22, Buffer.concat([u64(1n), str(Buffer.from([0x7f, 0xff, 0xff]))]))
    expect(
      krl(Buffer.concat([krlHeader(), krlCertificates(ca.blob, full)])).certificates.get(
        ca.blob.toString("base64"),
      )?.serials,
    ).toEqual([{ low: 1n, high: 23n }])
  })

  it("non-critical extensions and signature sections are skipped, as sshd does", () => {
    const signature = Buffer.concat([krlSection(4, Buffer.from(str("ssh-ed25519"))), str(randomBytes(64))])
    const bytes = Buffer.concat([
      krlHeader(),
      krlSection(255, krlExtension("note@example.com", false)),
      krlCertificates(
        ca.blob,
        krlSection(0x39, krlExtension("cert-note@example.com", false)),
        krlKeyIds("x"),
      ),
      signature,
    ])
    expect(reasonOf(bytes)).toBe("parsed")
  })

  it.each([
    ["not a KRL", () => Buffer.from("ssh-ed25519 AAAA")],
    ["not a KRL", () => Buffer.alloc(0)],
    ["unsupported", () => krlHeader(2)],
    [
      "unsupported",
      () => Buffer.concat([krlHeader(), krlSection(255, krlExtension("must@example.com", true))]),
    ],
    [
      "unsupported",
      () =>
        Buffer.concat([
          krlHeader(),
          krlCertificates(ca.blob, krlSection(0x39, krlExtension("must@example.com", true))),
        ]),
    ],
    ["unsupported", () => Buffer.concat([krlHeader(), krlSection(6, Buffer.alloc(0))])],
    [
      "unsupported",
      () => Buffer.concat([krlHeader(), krlCertificates(ca.blob, krlSection(0x24, Buffer.alloc(0)))]),
    ],
    ["malformed", () => Buffer.concat([krlHeader(), krlCertificates(ca.blob, krlSection(0x20, u64(0n)))])],
    [
      "malformed",
      () =>
        Buffer.concat([
          krlHeader(),
          krlCertificates(ca.blob, krlSection(0x21, Buffer.concat([u64(9n), u64(3n)]))),
        ]),
    ],
    [
      "malformed",
      () =>
        Buffer.concat([
          krlHeader(),
          krlCertificates(ca.blob, krlSection(0x21, Buffer.concat([u64(1n), u64(3n), u64(4n)]))),
        ]),
    ],
    [
      "malformed",
      () => Buffer.concat([krlHeader(), krlCertificates(ca.blob, krlSection(0x20, Buffer.alloc(7)))]),
    ],
    [
      "malformed",
      () =>
        Buffer.concat([
          krlHeader(),
          krlCertificates(ca.blob, krlSection(0x22, Buffer.concat([u64(0n), str(Buffer.from([1]))]))),
        ]),
    ],
    [
      "malformed",
      () =>
        Buffer.concat([
          krlHeader(),
          krlCertificates(
            ca.blob,
            krlSection(0x22, Buffer.concat([u64(0xfffffffffffffff0n), str(Buffer.from([1, 0, 0]))])),
          ),
        ]),
    ],
    [
      "malformed",
      () =>
        Buffer.concat([
          krlHeader(),
          krlCertificates(ca.blob, krlSection(0x22, Buffer.concat([u64(1n), str(Buffer.from([0x80]))]))),
        ]),
    ],
    ["malformed", () => Buffer.concat([krlHeader(), krlSection(3, str(Buffer.alloc(19)))])],
    ["malformed", () => Buffer.concat([krlHeader(), krlSection(5, str(Buffer.alloc(33)))])],
    ["malformed", () => Buffer.concat([krlHeader(), krlCertificates(Buffer.from([0, 0]), krlKeyIds("x"))])],
    ["truncated", () => krlHeader().subarray(0, 20)],
  ])("%s: case %#", (reason, bytes) => {
    expect(reasonOf(bytes())).toBe(reason)
  })
})

describe("plain key lists (RevokedKeys without a KRL)", () => {
  it("revokes listed keys, certificates of listed keys, and certificates of listed CAs", () => {
    const listedCert = certify(dir, ca, key("bySha1"), "listed", ["-n", "p"])
    const text = [
      "# revoked",
      "",
      key("byKey").publicLine,
      `  ${otherCa.publicLine}`,
      listedCert.line,
      "ssh-dss AAAAB3NzaC1kc3MAAAAA old dsa",
    ].join("\r\n")
    const parsed = parseRevokedKeysFile(Buffer.from(text))
    const revocations = Either.isRight(parsed) ? parsed.right : expect.fail(parsed.left.message)
    expect(revocations.format).toBe("key list")
    expect(isRevoked(revocations, { key: key("byKey").blob })).toBe(true)
    expect(isRevoked(revocations, { key: key("bySha1").blob })).toBe(true)
    expect(isRevoked(revocations, { key: key("clean").blob })).toBe(false)
    expect(revokesCertificate(revocations, certify(dir, otherCa, key("clean"), "x", ["-n", "p"]))).toBe(true)
    expect(revokesCertificate(revocations, certify(dir, ca, key("byKey"), "x", ["-n", "p"]))).toBe(true)
    expect(revokesCertificate(revocations, certify(dir, ca, key("clean"), "x", ["-n", "p"]))).toBe(false)
  })

  it("a line that does not parse fails the whole file (the caller fails closed, as sshd)", () => {
    for (const bad of [
      "not a key",
      "ssh-ed25519 !!!!",
      `ssh-rsa ${key("clean").blob.toString("base64")}`,
      `restrict ${key("clean").publicLine}`,
    ]) {
      expect(Either.isLeft(parseRevokedKeyList(`${key("byKey").publicLine}\n${bad}\n`))).toBe(true)
    }
    expect(Either.isRight(parseRevokedKeyList(""))).toBe(true)
  })

  it("a file is read as a KRL when it has the magic, as a list otherwise", () => {
    const made = makeKrl(dir, "pick.krl", [], [key("byKey").publicPath])
    const asKrl = parseRevokedKeysFile(made.bytes)
    expect(Either.isRight(asKrl) && asKrl.right.format).toBe("krl")
    const broken = parseRevokedKeysFile(Buffer.concat([made.bytes, Buffer.from([9])]))
    expect(Either.isLeft(broken) && broken.left.reason).toBe("truncated")
  })
})

describe("hostile KRL bytes never throw", () => {
  it("every truncation of a real KRL, bit flips, random bytes after the magic", () => {
    const made = makeKrl(
      dir,
      "fuzz.krl",
      ["-s", ca.publicPath],
      [
        writeText(
          dir,
          "fuzz-spec",
          `serial: 1-5\nserial: 9\nid: a\nkey: ${key("byKey").publicLine}\nsha256: ${key("bySha256").publicLine}\n`,
        ),
      ],
    )
    // A KRL cut at a section boundary is a smaller valid KRL (so it is for sshd too): a prefix may
    // parse, but must never revoke what the whole KRL does not.
    const whole = krl(made.bytes)
    const subjects = [key("byKey"), key("bySha256"), key("clean")].map((files) => ({ key: files.blob }))
    let parsedPrefixes = 0
    for (let length = 0; length < made.bytes.length; length++) {
      const prefix = parseKrl(made.bytes.subarray(0, length))
      if (Either.isLeft(prefix)) continue
      parsedPrefixes++
      for (const subject of subjects) {
        if (isRevoked(prefix.right, subject)) expect(isRevoked(whole, subject)).toBe(true)
      }
    }
    expect(parsedPrefixes).toBeLessThan(6)
    for (let index = 0; index < made.bytes.length; index++) {
      for (let bit = 0; bit < 8; bit++) {
        const flipped = Buffer.from(made.bytes)
        flipped[index] = (flipped[index] ?? 0) ^ (1 << bit)
        // A flip may still be a valid KRL (another serial, another hash): it must only not throw.
        parseRevokedKeysFile(flipped)
      }
    }
    for (let round = 0; round < 3000; round++) {
      const bytes = Buffer.concat([krlHeader(), randomBytes(Math.floor(Math.random() * 300))])
      const parsed = parseKrl(bytes)
      if (Either.isRight(parsed)) isRevoked(parsed.right, { key: key("clean").blob })
    }
  })
})
