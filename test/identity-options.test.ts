/**
 * authorized_keys options and lines: OpenSSH's syntax (quoted values, escaped quotes, case-insensitive
 * names), the gateway's mcp-identity / mcp-groups, which options are honoured, harmless or make the
 * line skipped, identities of keys and certificates, and the login-time checks of a line.
 */
import { generateKeyPairSync } from "node:crypto"
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import {
  type AuthorizedLine,
  authorizeKeyLine,
  certificateIdentity,
  type KeyLineOptions,
  noOptions,
  parseAuthorizedKeyLine,
  parseAuthorizedKeyLines,
  parseExpiryTime,
  parseKeyOptions,
  sanitizeIdentity,
} from "../src/gateway/identity/authorizedKeyOptions.js"
import { fingerprintOf, parseAuthorizedKeys } from "../src/shared/publicKey.js"

const sshString = (data: Buffer | string) => {
  const bytes = Buffer.from(data)
  const length = Buffer.alloc(4)
  length.writeUInt32BE(bytes.length)
  return Buffer.concat([length, bytes])
}
const newKey = (comment = "alice@laptop") => {
  const x = Buffer.from(
    generateKeyPairSync("ed25519").publicKey.export({ format: "jwk" }).x ?? "",
    "base64url",
  )
  const blob = Buffer.concat([sshString("ssh-ed25519"), sshString(x)])
  return { line: `ssh-ed25519 ${blob.toString("base64")}${comment === "" ? "" : ` ${comment}`}`, blob }
}

const options = (text: string): KeyLineOptions => {
  const parsed = parseKeyOptions(text)
  return Either.isRight(parsed) ? parsed.right : expect.fail(parsed.left.message)
}
const skipped = (text: string): string => {
  const parsed = parseKeyOptions(text)
  return Either.isLeft(parsed) ? parsed.left.message : expect.fail(`accepted: ${text}`)
}

describe("option syntax", () => {
  it("no options at all", () => {
    expect(options("")).toEqual(noOptions)
    expect(Either.getOrThrow(parseKeyOptions(undefined))).toEqual(noOptions)
  })

  it('quoted values keep commas and blanks; only \\" is an escape', () => {
    expect(options('mcp-groups="dev,ops",mcp-identity="alice"').groups).toEqual(["dev", "ops"])
    expect(options('mcp-groups=" dev , ops ,dev"').groups).toEqual(["dev", "ops"])
    expect(options('cert-authority,principals="a,b"').principals).toEqual(["a", "b"])
    expect(options('environment="A=has \\"quotes\\" and \\\\n",mcp-identity="x"').identity).toBe("x")
    expect(options('from="10.0.0.0/8,!10.0.0.5"').from?.text).toBe("10.0.0.0/8,!10.0.0.5")
  })

  it("names are case-insensitive, as in OpenSSH", () => {
    expect(options("RESTRICT,No-Pty,Cert-Authority").certAuthority).toBe(true)
    expect(options('MCP-Identity="bob"').identity).toBe("bob")
    expect(options('FROM="10.0.0.1"').from?.patterns).toHaveLength(1)
  })

  it.each([
    ['mcp-identity="alice', "no closing quote"],
    ["mcp-identity=alice", "double quotes"],
    ["restrict,", "end with a comma"],
    [",restrict", "name is missing"],
    ["restrict,,no-pty", "name is missing"],
    ['mcp-identity="a"x', "unexpected 'x'"],
    ['"quoted"', "name is missing"],
    ["from", "needs a value"],
    ['restrict="yes"', "takes no value"],
    ['no-pty="1"', "takes no value"],
  ])("malformed %j: %s", (text, reason) => {
    expect(skipped(text)).toContain(reason)
  })
})

describe("which options are honoured, harmless, or skip the line", () => {
  it("honoured: restrict, cert-authority, principals, from, expiry-time, mcp-identity, mcp-groups", () => {
    const parsed = options(
      'restrict,from="10.0.0.0/8",expiry-time="20990101",mcp-identity="ci-7",mcp-groups="ci"',
    )
    expect(parsed).toMatchObject({ restrict: true, identity: "ci-7", groups: ["ci"], certAuthority: false })
    expect(parsed.expiresAt).toBe(Math.floor(new Date(2099, 0, 1).getTime() / 1000))
    expect(options('cert-authority,principals="deploy",mcp-groups="ci"')).toMatchObject({
      certAuthority: true,
      principals: ["deploy"],
      groups: ["ci"],
    })
  })

  it.each([
    "no-pty",
    "pty",
    "no-port-forwarding",
    "port-forwarding",
    "no-agent-forwarding",
    "agent-forwarding",
    "no-X11-forwarding",
    "X11-forwarding",
    "no-user-rc",
    "user-rc",
    "no-touch-required",
    "touch-required",
    "no-verify-required",
    'permitopen="localhost:80"',
    'permitlisten="8080"',
    'tunnel="1"',
    'environment="PATH=/bin"',
    "restrict,pty,port-forwarding",
  ])("harmless: %s", (text) => {
    expect(Either.isRight(parseKeyOptions(text))).toBe(true)
  })

  it.each([
    ['command="/bin/true"', "option 'command'"],
    ["verify-required", "option 'verify-required'"],
    ["no-such-option", "option 'no-such-option': is not a known option"],
    ['mcp-role="admin"', "option 'mcp-role'"],
    ['restrict,unknown-flag,mcp-identity="x"', "option 'unknown-flag'"],
    ['from="10.0.0.1",from="10.0.0.2"', "is given twice"],
    ['mcp-identity="a",mcp-identity="b"', "is given twice"],
    ['mcp-groups="a",mcp-groups="b"', "is given twice"],
    ['cert-authority,principals="a",principals="b"', "is given twice"],
    ['principals="a"', "only to cert-authority lines"],
    ['cert-authority,mcp-identity="ci"', "cannot name the identity"],
    ['cert-authority,principals="a,,b"', "empty entry"],
    ['mcp-identity="has space"', "is not a name"],
    ['mcp-identity=""', "is not a name"],
    [`mcp-identity="${"a".repeat(65)}"`, "is not a name"],
    ['mcp-groups="dev,"', "is not a group name"],
    ['mcp-groups="dev,o/ps"', "is not a group name"],
    ['from="10.0.0.1/8"', "bits are set"],
    ['from="!*.evil.example,*"', "negated hostname"],
    ['expiry-time="2025"', "is not YYYYMMDD"],
    ['expiry-time="20250230"', "is not YYYYMMDD"],
  ])("skips %j (%s)", (text, reason) => {
    expect(skipped(text)).toContain(reason)
  })

  it("hostname patterns in from= are kept with a warning", () => {
    expect(options('from="*.example.com,10.0.0.0/8"').warnings).toEqual([
      "from=: '*.example.com' is a hostname; hostnames are not resolved, so it matches no client",
    ])
  })

  it("expiry-time given twice: the earliest wins, as sshd", () => {
    expect(options('expiry-time="20300101Z",expiry-time="20290101Z"').expiresAt).toBe(
      Date.UTC(2029, 0, 1) / 1000,
    )
  })
})

describe("expiry-time", () => {
  it.each([
    ["20300102", new Date(2030, 0, 2).getTime() / 1000],
    ["203001021304", new Date(2030, 0, 2, 13, 4).getTime() / 1000],
    ["20300102130405", new Date(2030, 0, 2, 13, 4, 5).getTime() / 1000],
    ["20300102Z", Date.UTC(2030, 0, 2) / 1000],
    ["203001021304utc", Date.UTC(2030, 0, 2, 13, 4) / 1000],
    ["20240229", new Date(2024, 1, 29).getTime() / 1000],
  ])("%s", (text, seconds) => {
    expect(parseExpiryTime(text)).toBe(seconds)
  })

  it.each([
    "",
    "2030010",
    "203001021",
    "2030010213",
    "20230229",
    "20301301",
    "20300100",
    "20300102246000",
    "20300102125960",
    "2030-01-02",
    "19700101Z",
    "20300102 ",
    "x20300102",
  ])("refuses %j", (text) => {
    expect(parseExpiryTime(text)).toBeUndefined()
  })
})

describe("whole lines", () => {
  const line = (text: string, number = 1): AuthorizedLine => {
    const parsed = parseAuthorizedKeyLine(text, number)
    if (parsed === undefined || parsed.kind === "skipped")
      return expect.fail(`not a key line: ${JSON.stringify(parsed)}`)
    return parsed
  }

  it("a plain key: identity from mcp-identity, else the sanitized comment, else the fingerprint", () => {
    const key = newKey("Alice Smith <alice@example.com>")
    const plain = line(key.line)
    expect(plain.kind === "key" && plain.identity).toEqual({
      name: "Alice_Smith_alice@example.com_",
      groups: [],
    })
    const named = line(`mcp-identity="alice",mcp-groups="dev,ops" ${key.line}`)
    expect(named.kind === "key" && named.identity).toEqual({ name: "alice", groups: ["dev", "ops"] })
    const bare = newKey("")
    const anonymous = line(bare.line)
    expect(anonymous.kind === "key" && anonymous.identity.name).toBe(fingerprintOf(bare.blob))
    const symbols = line(newKey("!!! ###").line)
    expect(symbols.kind === "key" && symbols.identity.name).toMatch(/^SHA256:/)
  })

  it("options with quoted blanks and escaped quotes end at the first unquoted blank", () => {
    const key = newKey()
    const parsed = line(`environment="A=\\"x y\\"",from="10.0.0.0/8" ${key.line}`)
    expect(parsed.key.blob.equals(key.blob)).toBe(true)
    expect(parsed.options.from?.text).toBe("10.0.0.0/8")
  })

  it("a cert-authority line", () => {
    const ca = newKey("team CA")
    const parsed = line(`cert-authority,principals="ci,deploy",mcp-groups="ci" ${ca.line}`)
    expect(parsed.kind).toBe("cert-authority")
    expect(parsed.options.principals).toEqual(["ci", "deploy"])
  })

  it("skipped lines say why; blanks and comments are not lines", () => {
    const key = newKey()
    expect(parseAuthorizedKeyLine("   ", 1)).toBeUndefined()
    expect(parseAuthorizedKeyLine("# comment", 1)).toBeUndefined()
    expect(parseAuthorizedKeyLine(`command="x" ${key.line}`, 4)).toEqual({
      kind: "skipped",
      line: 4,
      reason:
        "option 'command': forces a command, which has no meaning for this gateway; the key is not used",
    })
    expect(parseAuthorizedKeyLine(`mcp-identity="open ${key.line}`, 5)).toMatchObject({ kind: "skipped" })
    expect(parseAuthorizedKeyLine("restrict", 6)).toMatchObject({ kind: "skipped" })
    expect(parseAuthorizedKeyLine("restrict ssh-ed25519 AAAA", 7)).toMatchObject({ kind: "skipped" })
    expect(
      parseAuthorizedKeyLine(`ssh-ed25519-cert-v01@openssh.com ${key.blob.toString("base64")}`, 8),
    ).toMatchObject({
      kind: "skipped",
    })
  })

  it("a file: line numbers as parseAuthorizedKeys counts them, every key it finds", () => {
    const keys = [newKey("one"), newKey("two"), newKey("three")]
    const content = [
      "# team",
      keys[0]?.line,
      `no-pty,mcp-groups="dev" ${keys[1]?.line}`,
      "",
      `bogus-option ${keys[2]?.line}`,
      `cert-authority ${keys[2]?.line}`,
    ].join("\r\n")
    const parsed = parseAuthorizedKeyLines(content)
    expect(parsed.lines.map((entry) => [entry.kind, entry.line])).toEqual([
      ["key", 2],
      ["key", 3],
      ["cert-authority", 6],
    ])
    expect(parsed.skipped.map((entry) => entry.line)).toEqual([5])
    // The current parser sees the same keys on the same lines (it does not judge options).
    expect(parseAuthorizedKeys(content).keys.map((key) => key.line)).toEqual([2, 3, 5, 6])
  })
})

describe("identities", () => {
  it("sanitizeIdentity keeps name characters and drops the rest", () => {
    expect(sanitizeIdentity("alice@laptop")).toBe("alice@laptop")
    expect(sanitizeIdentity("  -- bob the builder ")).toBe("bob_the_builder_")
    expect(sanitizeIdentity("x\ny\u0000z")).toBe("x_y_z")
    expect(sanitizeIdentity("a".repeat(100))).toHaveLength(64)
    expect(sanitizeIdentity("!!!")).toBe("")
  })

  it("a certificate's identity: key id, with the allowed principals and the CA line's groups", () => {
    const accepted = {
      keyId: "ci job 42",
      principals: ["ci", "deploy"],
      serial: 42n,
      caFingerprint: "SHA256:ca",
      keyFingerprint: "SHA256:key",
    }
    const caLine = options('cert-authority,mcp-groups="ci,runners"')
    expect(certificateIdentity(accepted, caLine)).toEqual({
      name: "ci_job_42",
      groups: ["ci", "deploy", "runners"],
    })
    expect(certificateIdentity({ ...accepted, keyId: "" }, caLine).name).toBe("SHA256:key")
  })
})

describe("authorizeKeyLine: a line's own checks at login", () => {
  const at = (text: string, clientAddress: string, now: number | Date = new Date()) =>
    authorizeKeyLine(options(text), { now, clientAddress })
  const reason = (result: ReturnType<typeof at>) => (Either.isLeft(result) ? result.left.reason : "allowed")

  it("from= allows, does not list, or denies", () => {
    expect(reason(at('from="10.0.0.0/8,!10.0.0.5"', "10.0.0.6"))).toBe("allowed")
    expect(reason(at('from="10.0.0.0/8,!10.0.0.5"', "::ffff:10.0.0.5"))).toBe("address denied")
    expect(reason(at('from="10.0.0.0/8"', "192.0.2.1"))).toBe("address not allowed")
    expect(reason(at("restrict", "192.0.2.1"))).toBe("allowed")
  })

  it("expiry-time: valid through that second, refused after", () => {
    const expiry = Date.UTC(2030, 0, 2) / 1000
    expect(reason(at('expiry-time="20300102Z"', "10.0.0.1", expiry))).toBe("allowed")
    expect(reason(at('expiry-time="20300102Z"', "10.0.0.1", expiry + 1))).toBe("expired")
    expect(reason(at('expiry-time="20300102Z"', "10.0.0.1", new Date((expiry + 1) * 1000)))).toBe("expired")
  })
})
