/**
 * The key API's pure code: validation of submitted keys, authorized_keys line editing, enrollment
 * token bookkeeping, token-bucket math and the open-registration policy.
 */
import { generateKeyPairSync } from "node:crypto"
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { decodeSettings } from "../src/gateway/config/settings.js"
import { appendKey, readStoredKeys, removeKey } from "../src/gateway/keys/authorizedKeysFile.js"
import {
  bearerToken,
  forwardedClient,
  registrationPolicyProblem,
  trustedProxiesOf,
} from "../src/gateway/keys/keyApiRules.js"
import { isIdle, rateLimitKey, take } from "../src/gateway/keys/tokenBucket.js"
import {
  checkToken,
  formatToken,
  formatTokenFile,
  newRecord,
  parseTokenFile,
  parseTtl,
  redeemToken,
  secretsEqual,
} from "../src/gateway/keys/tokens.js"
import { isLoopbackHost } from "../src/shared/net.js"
import { fingerprintOf, isKeyProblem, type PublicKey } from "../src/shared/publicKey.js"
import { validateSubmittedKey } from "../src/shared/submittedKey.js"

const sshString = (data: string | Buffer): Buffer => {
  const bytes = Buffer.from(data)
  const length = Buffer.alloc(4)
  length.writeUInt32BE(bytes.length)
  return Buffer.concat([length, bytes])
}
const mpint = (value: string | undefined) => {
  const bytes = Buffer.from(value ?? "", "base64url")
  return sshString((bytes[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.alloc(1), bytes]) : bytes)
}
const line = (type: string, ...fields: Array<Buffer>) =>
  `${type} ${Buffer.concat([sshString(type), ...fields]).toString("base64")}`

const ed25519 = () => {
  const jwk = generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" })
  return line("ssh-ed25519", sshString(Buffer.from(jwk.x ?? "", "base64url")))
}
const ecdsa = (curve: "P-256" | "P-384", name = curve === "P-256" ? "nistp256" : "nistp384") => {
  const jwk = generateKeyPairSync("ec", { namedCurve: curve }).publicKey.export({ format: "jwk" })
  const point = Buffer.concat([
    Buffer.from([4]),
    Buffer.from(jwk.x ?? "", "base64url"),
    Buffer.from(jwk.y ?? "", "base64url"),
  ])
  return line(`ecdsa-sha2-${curve === "P-256" ? "nistp256" : "nistp384"}`, sshString(name), sshString(point))
}
const rsa = (bits: number) => {
  const jwk = generateKeyPairSync("rsa", { modulusLength: bits }).publicKey.export({ format: "jwk" })
  return line("ssh-rsa", mpint(jwk.e), mpint(jwk.n))
}

const accepted = (text: string): PublicKey => {
  const result = validateSubmittedKey(text)
  if (isKeyProblem(result)) throw new Error(`refused: ${result.reason}`)
  return result
}
const reason = (text: string): string => {
  const result = validateSubmittedKey(text)
  return isKeyProblem(result) ? result.reason : "accepted"
}

describe("validateSubmittedKey", () => {
  it("accepts ed25519, ECDSA and RSA of 2048 bits, with or without a comment and a final newline", () => {
    expect(accepted(`${ed25519()} me@laptop\n`).comment).toBe("me@laptop")
    expect(accepted(`${ed25519()}\r\n`).comment).toBe("")
    expect(accepted(`${ecdsa("P-256")} with spaces in it`).comment).toBe("with spaces in it")
    expect(accepted(ecdsa("P-384")).type).toBe("ecdsa-sha2-nistp384")
    expect(accepted(rsa(2048)).type).toBe("ssh-rsa")
  })

  it("reads an rsa-sha2-512 label as the ssh-rsa key it is", () => {
    const key = rsa(2048)
    const relabelled = accepted(key.replace(/^ssh-rsa/, "rsa-sha2-512"))
    expect(relabelled.type).toBe("ssh-rsa")
    expect(relabelled.fingerprint).toBe(accepted(key).fingerprint)
  })

  it("refuses what could break the file or identify the wrong key", () => {
    const key = ed25519()
    expect(reason(`${key}\n\n`)).toMatch(/single line/)
    expect(reason(`${key}\rsecond`)).toMatch(/single line/)
    expect(reason(`from="10.0.0.1" ${key}`)).toMatch(/options/)
    expect(reason(`restrict ${key}`)).toMatch(/options/)
    expect(reason(rsa(1024))).toMatch(/1024 bits/)
    expect(reason(ecdsa("P-256", "nistp384"))).toMatch(/different curve/)
    const blob = Buffer.from(key.split(" ")[1] ?? "", "base64")
    expect(
      reason(`ssh-ed25519 ${Buffer.concat([blob, Buffer.from([0, 0, 0, 0])]).toString("base64")}`),
    ).toMatch(/wrong length/)
    expect(reason("ssh-ed25519")).toMatch(/key data is missing/)
    expect(reason(`${key} ${"é".repeat(257)}`)).toMatch(/longer than 256/)
    expect(reason(`${key} ${"é".repeat(256)}`)).toBe("accepted")
    expect(reason(`${key} tab\there`)).toMatch(/control/)
    expect(reason(`${key} line\u2028sep`)).toMatch(/control/)
    expect(reason(`sk-ssh-ed25519@openssh.com ${key.split(" ")[1]}`)).toMatch(/not accepted/)
  })

  it("refuses a private key without repeating it", () => {
    const { privateKey } = generateKeyPairSync("ed25519")
    const pem = privateKey.export({ format: "pem", type: "pkcs8" }).toString()
    const result = reason(pem)
    expect(result).toMatch(/private key/)
    expect(result).not.toContain(pem.split("\n")[1] ?? "")
    expect(reason("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none")).toMatch(/private key/)
  })

  it("shortens and sanitizes the type it repeats", () => {
    expect(reason(`${"x".repeat(100)}\u0007 AAAA`)).toMatch(/^key type 'x{40}\.\.\.' is not accepted/)
  })
})

describe("authorized_keys editing", () => {
  const key = (comment: string) => accepted(`${ed25519()} ${comment}`)
  const meta = { addedAt: "2026-01-02T03:04:05.000Z", source: "register 10.0.0.7 token=ab12" }

  it("appends a key with its metadata once, and keeps the file's last line", () => {
    const first = key("one")
    const once = appendKey("# mine\nno-final-newline-line", first, meta)
    expect(once.added).toBe(true)
    expect(once.content.startsWith("# mine\nno-final-newline-line\n")).toBe(true)
    const twice = appendKey(once.content, { ...first, comment: "another comment" }, meta)
    expect(twice).toEqual({ content: once.content, added: false })
    expect(readStoredKeys(once.content).keys[0]).toMatchObject({
      fingerprint: first.fingerprint,
      comment: "one",
      addedAt: meta.addedAt,
      source: meta.source,
    })
  })

  it("removes every line of a key, whatever its options, and its metadata, and nothing else", () => {
    const target = key("target")
    const other = key("other")
    const blob = target.blob.toString("base64")
    const original = [
      "# hand note",
      `ssh-ed25519 ${blob} first-copy`,
      `${`ssh-ed25519 ${other.blob.toString("base64")} other`}\r`,
      `no-pty,command="echo a b" ssh-ed25519 ${blob} second-copy`,
      "garbage that does not parse",
      "",
    ].join("\n")
    const withMeta = appendKey(original, key("later"), meta).content
    const tagged = `# mcp-ssh {"fingerprint":"${target.fingerprint}","added_at":"x","source":"cli"}\n${withMeta}`
    const { content, removed } = removeKey(tagged, target.fingerprint)
    expect(removed).toBe(2)
    expect(content).not.toContain(blob)
    expect(content).not.toContain(target.fingerprint)
    expect(content).toContain("# hand note\n")
    expect(content).toContain(`ssh-ed25519 ${other.blob.toString("base64")} other\r\n`)
    expect(content).toContain("garbage that does not parse\n")
    expect(readStoredKeys(content).keys.map((k) => k.comment)).toEqual(["other", "later"])
    expect(removeKey(content, target.fingerprint)).toEqual({ content, removed: 0 })
  })

  it("ignores metadata lines that are not its own", () => {
    const k = key("k")
    const content = `# mcp-ssh not json\n# mcp-ssh {"fingerprint":1}\nssh-ed25519 ${k.blob.toString("base64")} k\n`
    expect(readStoredKeys(content).keys[0]).toMatchObject({ addedAt: undefined, source: undefined })
  })
})

describe("enrollment tokens", () => {
  const now = new Date("2026-05-01T12:00:00Z")
  const later = (seconds: number) => new Date(now.getTime() + seconds * 1000)
  const token = formatToken(Buffer.alloc(32, 7))
  const record = newRecord({ id: "t1", token, uses: 2, ttlSeconds: 600, now })

  it("parses lifetimes", () => {
    expect(parseTtl("90")).toEqual(Either.right(90))
    expect(parseTtl("10m")).toEqual(Either.right(600))
    expect(parseTtl("12h")).toEqual(Either.right(43_200))
    expect(parseTtl("7d")).toEqual(Either.right(604_800))
    expect(Either.isLeft(parseTtl("0s"))).toBe(true)
    expect(Either.isLeft(parseTtl("400d"))).toBe(true)
    expect(Either.isLeft(parseTtl("soon"))).toBe(true)
  })

  it("stores a hash, never the token, and reads back what it wrote", () => {
    expect(token).toMatch(/^mcpssh_[A-Za-z0-9_-]{43}$/)
    const file = formatTokenFile([record])
    expect(file).not.toContain(token)
    expect(parseTokenFile(file)).toEqual(Either.right([record]))
    expect(parseTokenFile("")).toEqual(Either.right([]))
    expect(Either.isLeft(parseTokenFile('{"version":2,"tokens":[]}'))).toBe(true)
  })

  it("counts uses per key, answers a retry of the same key, and refuses once used up", () => {
    let records = [record]
    const use = (fingerprint: string, at = now) => {
      const result = redeemToken(records, token, fingerprint, at, true)
      records = [...result.records]
      return result.check
    }
    expect(use("SHA256:a")).toMatchObject({ _tag: "Accepted", alreadyUsedForThisKey: false })
    expect(use("SHA256:a")).toMatchObject({ _tag: "Accepted", alreadyUsedForThisKey: true })
    expect(records[0]?.uses_left).toBe(1)
    expect(use("SHA256:b")._tag).toBe("Accepted")
    expect(use("SHA256:c")).toEqual({ _tag: "Rejected", reason: "the enrollment token has no uses left" })
    expect(use("SHA256:b")._tag).toBe("Accepted")
    expect(checkToken(records, token, "SHA256:a", later(601))).toEqual({
      _tag: "Rejected",
      reason: "the enrollment token has expired",
    })
    expect(checkToken(records, `${token}x`, "SHA256:a", now)).toMatchObject({ reason: /not valid/ })
    // Expired tokens are kept a day, then dropped.
    expect(redeemToken(records, token, "SHA256:z", later(3600), false).records).toHaveLength(1)
    expect(redeemToken(records, token, "SHA256:z", later(90_000), false).records).toHaveLength(0)
  })

  it("compares secrets whatever their lengths", () => {
    expect(secretsEqual("a-long-admin-token", "a-long-admin-token")).toBe(true)
    expect(secretsEqual("a-long-admin-token", "a-long-admin-tokeN")).toBe(false)
    expect(secretsEqual("short", "a-long-admin-token")).toBe(false)
  })
})

describe("token bucket", () => {
  const policy = { capacity: 3, refillPerSecond: 0.5 }

  it("allows a burst, then one request per refill, and says when to retry", () => {
    let bucket = take(undefined, policy, 0).bucket
    bucket = take(bucket, policy, 0).bucket
    const third = take(bucket, policy, 0)
    expect(third.allowed).toBe(true)
    const fourth = take(third.bucket, policy, 0)
    expect(fourth).toMatchObject({ allowed: false, retryAfterSeconds: 2 })
    expect(take(fourth.bucket, policy, 1000)).toMatchObject({ allowed: false, retryAfterSeconds: 1 })
    expect(take(fourth.bucket, policy, 2000).allowed).toBe(true)
    expect(isIdle(fourth.bucket, policy, 5000)).toBe(false)
    expect(isIdle(fourth.bucket, policy, 6000)).toBe(true)
  })

  it("limits IPv4 per address and IPv6 per /64", () => {
    expect(rateLimitKey("10.1.2.3")).toBe("10.1.2.3")
    expect(rateLimitKey("::ffff:10.1.2.3")).toBe("10.1.2.3")
    expect(rateLimitKey("2001:db8:0:1::5")).toBe("2001:db8:0:1::/64")
    expect(rateLimitKey("2001:0db8:0000:0001:aaaa:bbbb:cccc:dddd")).toBe("2001:db8:0:1::/64")
    expect(rateLimitKey("::1")).toBe("0:0:0:0::/64")
    expect(rateLimitKey("fe80::1%eth0")).toBe("fe80:0:0:0::/64")
  })
})

describe("key API policy", () => {
  const settings = {
    runKeyServer: true,
    registration: "open" as const,
    keyServerHost: "0.0.0.0",
    keyServerPort: 8000,
    allowOpenRegistrationOnPublicInterface: false,
  }

  it("knows loopback addresses", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]", "::ffff:127.0.0.1"]) {
      expect(isLoopbackHost(host), host).toBe(true)
    }
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "example.com"]) {
      expect(isLoopbackHost(host), host).toBe(false)
    }
  })

  it("refuses open registration off loopback unless asked by name", () => {
    expect(registrationPolicyProblem(settings)).toMatch(/--registration open on 0\.0\.0\.0:8000/)
    expect(
      registrationPolicyProblem({ ...settings, allowOpenRegistrationOnPublicInterface: true }),
    ).toBeUndefined()
    expect(registrationPolicyProblem({ ...settings, keyServerHost: "127.0.0.1" })).toBeUndefined()
    expect(registrationPolicyProblem({ ...settings, registration: "token" })).toBeUndefined()
    expect(registrationPolicyProblem({ ...settings, runKeyServer: false })).toBeUndefined()
  })

  it("reads bearer tokens", () => {
    expect(bearerToken("Bearer abc")).toBe("abc")
    expect(bearerToken("bearer   abc  ")).toBe("abc")
    expect(bearerToken("Basic abc")).toBeUndefined()
    expect(bearerToken(undefined)).toBeUndefined()
  })

  it("never repeats a secret setting in an error", () => {
    const result = decodeSettings({ adminToken: { value: "tooshort", source: "--admin-token" } })
    expect(Either.isLeft(result)).toBe(true)
    if (Either.isLeft(result)) {
      expect(result.left).toMatch(/--admin-token: must be at least 16 characters.*\(value hidden\)/)
      expect(result.left).not.toContain("tooshort")
    }
    const port = decodeSettings({ keyServerPort: { value: "x", source: "--key-server-port" } })
    expect(Either.isLeft(port) && port.left).toMatch(/got "x"/)
  })

  it("fingerprints like ssh-keygen", () => {
    expect(fingerprintOf(Buffer.from(""))).toBe("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU")
  })
})

describe("the client behind a trusted proxy", () => {
  const trusted = trustedProxiesOf("10.0.0.0/8, 192.0.2.1")

  it("believes X-Forwarded-For only from a trusted proxy, taking the rightmost address that is not one", () => {
    expect(forwardedClient("192.0.2.1", "198.51.100.7", trusted)).toBe("198.51.100.7")
    expect(forwardedClient("192.0.2.1", "203.0.113.1, 198.51.100.7, 10.2.3.4", trusted)).toBe("198.51.100.7")
    expect(forwardedClient("192.0.2.1", " ::ffff:198.51.100.7 ", trusted)).toBe("198.51.100.7")
    expect(forwardedClient("192.0.2.1", "2001:db8::1", trusted)).toBe("2001:db8::1")
    // Nothing but proxies, nothing at all, or garbage: the socket's address.
    expect(forwardedClient("192.0.2.1", "10.1.1.1, 10.2.2.2", trusted)).toBe("192.0.2.1")
    expect(forwardedClient("192.0.2.1", "", trusted)).toBe("192.0.2.1")
    expect(forwardedClient("192.0.2.1", "198.51.100.7, not-an-address", trusted)).toBe("192.0.2.1")
    expect(forwardedClient("192.0.2.1", undefined, trusted)).toBe("192.0.2.1")
    // From anyone else, or with no trusted proxies at all, the header is ignored.
    expect(forwardedClient("203.0.113.5", "198.51.100.7", trusted)).toBe("203.0.113.5")
    expect(forwardedClient("192.0.2.1", "198.51.100.7", undefined)).toBe("192.0.2.1")
  })
})
