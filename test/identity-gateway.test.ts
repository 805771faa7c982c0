/**
 * Identities through the real gateway: OpenSSH's `ssh` logs in with certificates made by `ssh-keygen -s`
 * (ed25519, ECDSA, RSA); key lines give identity and groups; the audit line names them. ssh2 clients
 * offer certificates that must be refused (expired, not yet valid, host, principal, revoked serial and
 * key through a KRL, source-address, untrusted CA, malformed), each logged with its reason and the
 * fingerprint, and the key inside a refused certificate is no plain key unless listed. Edits to the
 * authorized keys and the KRL apply to live connections.
 */
import { execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import ssh2 from "ssh2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { disposeGateway, node, type RunningGateway, startGateway } from "./support/gateway.js"
import {
  type CertificateFile,
  certify,
  type KeyFiles,
  keygen,
  makeKrl,
  makeTempDir,
  removeDir,
  writeText,
} from "./support/openssh.js"
import { waitUntil } from "./support/processes.js"
import { connect, openLineChannel, opensshArgs } from "./support/ssh.js"

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

const fingerprintOf = (path: string): string =>
  spawnOutput("ssh-keygen", ["-l", "-E", "sha256", "-f", path]).split(" ")[1] ?? expect.fail("no fingerprint")

const spawnOutput = (command: string, args: ReadonlyArray<string>): string =>
  execFileSync(command, args).toString()

/**
 * A private key that ssh2's client offers as a certificate: the same key, with the certificate as its
 * public half and the certificate's algorithm as its type. ssh2 sends the query without signature
 * first, which is where every refusal below happens (its signed request would carry the certificate's
 * name as the signature algorithm, which OpenSSH's client never does).
 */
const offerCertificate = (key: KeyFiles, certificate: { readonly line: string }) => {
  const parsed = ssh2.utils.parseKey(readFileSync(key.privatePath))
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error("cannot parse the key")
  const [algorithm = "", encoded = ""] = certificate.line.split(" ")
  const blob = Buffer.from(encoded, "base64")
  const offered = Object.assign(Object.create(parsed) as object, {
    type: algorithm,
    getPublicSSH: () => blob,
  })
  // authHandler, since ssh2 takes only a Buffer or string as `privateKey`; it sees a parsed key here.
  const authHandler: Array<ssh2.PublicKeyAuthMethod> = [
    { type: "publickey", username: "mcp", key: offered as unknown as Buffer },
  ]
  return { privateKey: undefined, authHandler }
}

/** One call over OpenSSH's `ssh` with `-o CertificateFile`; the answer and ssh's stderr. */
const opensshPing = (gateway: RunningGateway, key: KeyFiles, certificate: CertificateFile | undefined) =>
  new Promise<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>(
    (resolve) => {
      const args = opensshArgs(gateway, key.privatePath)
      const ssh = spawn(
        "ssh",
        [
          ...(certificate === undefined ? [] : ["-o", `CertificateFile=${certificate.path}`]),
          ...args,
          "mini",
        ],
        { stdio: ["pipe", "pipe", "pipe"] },
      )
      let stdout = ""
      let stderr = ""
      ssh.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString()
        if (stdout.includes('"id":1')) ssh.stdin.end()
      })
      ssh.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString()
      })
      ssh.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" })}\n`)
      ssh.once("close", (code) => resolve({ code, stdout, stderr }))
    },
  )

const auditLineOf = (gateway: RunningGateway, fingerprint: string) =>
  gateway.waitForLog(new RegExp(`audit=true client=${escapeRegExp(fingerprint)} `))

describe("identities and certificates through the gateway", () => {
  let dir: string
  let gateway: RunningGateway
  let ca: KeyFiles
  let otherCa: KeyFiles
  let alice: KeyFiles
  let robot: KeyFiles
  let revokedKey: KeyFiles
  let faraway: KeyFiles
  let expiredKey: KeyFiles
  let skipped: KeyFiles
  let krlPath: string

  const revokedSerial = "66"
  const krlSpec = (serials: ReadonlyArray<string>) =>
    writeText(
      dir,
      `krl-spec-${randomBytes(4).toString("hex")}`,
      [...serials.map((serial) => `serial: ${serial}`), `key: ${revokedKey.publicLine}`].join("\n"),
    )

  beforeAll(async () => {
    dir = makeTempDir()
    ca = keygen(dir, "ca", "ed25519", "team-ca")
    otherCa = keygen(dir, "other-ca", "ed25519")
    alice = keygen(dir, "alice", "ed25519", "alice@laptop")
    robot = keygen(dir, "robot", "ed25519", "robot")
    revokedKey = keygen(dir, "revoked", "ed25519", "revoked")
    faraway = keygen(dir, "faraway", "ed25519", "faraway")
    expiredKey = keygen(dir, "expired", "ed25519", "expired")
    skipped = keygen(dir, "skipped", "ed25519", "skipped")
    krlPath = makeKrl(dir, "revoked.krl", ["-s", ca.publicPath], [krlSpec([revokedSerial])]).path
    gateway = await startGateway({
      servers: { mini: node("mini-server.mjs") },
      authorizedLines: [
        `mcp-identity="alice",mcp-groups="dev,ops" ${alice.publicLine}`,
        `cert-authority,principals="ci,deploy",mcp-groups="robots" ${ca.publicLine}`,
        `from="10.0.0.0/8" ${faraway.publicLine}`,
        `expiry-time="20000101" ${expiredKey.publicLine}`,
        `no-pty,bogus-option ${skipped.publicLine}`,
        revokedKey.publicLine,
      ],
      flags: ["--revoked-keys", krlPath, "--max-startups-per-source", "50"],
    })
  })
  afterAll(async () => {
    await disposeGateway(gateway)
    removeDir(dir)
  })

  it("skips a line with an unknown option, naming the line and the option", async () => {
    await gateway.waitForLog(
      new RegExp(`${escapeRegExp(gateway.authorizedKeysPath)}:6: ignored: option 'bogus-option'`),
    )
    await expect(connect(gateway, { privateKey: readFileSync(skipped.privatePath) })).rejects.toThrow(
      /All configured authentication methods failed/,
    )
  })

  it.each([
    ["ed25519", "ed25519"],
    ["ecdsa", "ecdsa256"],
    ["rsa", "rsa"],
  ] as const)(
    "OpenSSH's ssh logs in with an %s certificate; the audit line names its identity, groups, serial and CA",
    async (_name, kind) => {
      const key = keygen(dir, `ci-${kind}`, kind)
      const certificate = certify(dir, ca, key, `ci-runner-${kind}`, [
        "-n",
        "ci,other",
        "-V",
        "-5m:+1h",
        "-z",
        "42",
      ])
      const result = await opensshPing(gateway, key, certificate)
      expect(result.stdout, result.stderr).toMatch(/"id":1,"result":\{\}/)
      const line = await auditLineOf(gateway, fingerprintOf(key.publicPath))
      expect(line).toContain(
        `identity=ci-runner-${kind} groups=ci,robots cert_serial=42 ca=${fingerprintOf(ca.publicPath)}`,
      )
      await gateway.waitForLog(new RegExp(`authenticated.*identity=ci-runner-${kind}`))
    },
  )

  it("a key line's mcp-identity and mcp-groups name the client in the audit line", async () => {
    const connection = await connect(gateway, { privateKey: readFileSync(alice.privatePath) })
    const channel = await openLineChannel(connection, { exec: "mini" })
    expect(await channel.request(1, "ping")).toMatchObject({ result: {} })
    connection.end()
    expect(await auditLineOf(gateway, fingerprintOf(alice.publicPath))).toMatch(
      /identity=alice groups=dev,ops /,
    )
  })

  /** Offer a certificate with ssh2: refused, and logged with the reason and the key's fingerprint. */
  const refusedCertificate = async (
    key: KeyFiles,
    certificate: { readonly line: string },
    reason: RegExp,
  ) => {
    await expect(connect(gateway, offerCertificate(key, certificate))).rejects.toThrow(
      /All configured authentication methods failed/,
    )
    const line = await gateway.waitForLog(reason)
    expect(line).toMatch(/authentication failed: /)
    return line
  }

  it.each([
    [
      "expired",
      ["-n", "ci", "-V", "20200101:20200102"],
      /certificate refused: expired: certificate 'bad-expired'/,
    ],
    [
      "not yet valid",
      ["-n", "ci", "-V", "+1d:+2d"],
      /certificate refused: not yet valid: certificate 'bad-future'/,
    ],
    [
      "a host certificate",
      ["-h", "-n", "ci"],
      /certificate refused: not a user certificate: certificate 'bad-host'/,
    ],
    [
      "a principal not allowed",
      ["-n", "root"],
      /certificate refused: no principal allowed: certificate 'bad-principal'/,
    ],
    [
      "revoked by serial",
      ["-n", "ci", "-z", revokedSerial],
      /certificate refused: revoked: certificate 'bad-serial' serial 66/,
    ],
    [
      "from another source address",
      ["-n", "ci", "-O", "source-address=10.1.2.0/24"],
      /certificate refused: source address not allowed: .*is not in source-address 10\.1\.2\.0\/24/,
    ],
  ] as const)("refuses a certificate that is %s", async (what, args, reason) => {
    const key = keygen(dir, `bad-${what.replace(/\W+/g, "-")}`, "ed25519")
    const keyId = `bad-${{ expired: "expired", "not yet valid": "future", "a host certificate": "host", "a principal not allowed": "principal", "revoked by serial": "serial", "from another source address": "source" }[what]}`
    const certificate = certify(dir, ca, key, keyId, args)
    const line = await refusedCertificate(key, certificate, reason)
    expect(line).toContain(
      `certificate of ${fingerprintOf(key.publicPath)} signed by CA ${fingerprintOf(ca.publicPath)}`,
    )
    // The key inside is no plain key: it is not listed.
    await expect(connect(gateway, { privateKey: readFileSync(key.privatePath) })).rejects.toThrow(
      /All configured authentication methods failed/,
    )
    await gateway.waitForLog(
      new RegExp(`key ssh-ed25519 is not authorized \\(${escapeRegExp(fingerprintOf(key.publicPath))}\\)`),
    )
  })

  it("refuses a certificate of a revoked key, and the revoked key itself", async () => {
    const certificate = certify(dir, ca, revokedKey, "bad-key", ["-n", "ci"])
    await refusedCertificate(revokedKey, certificate, /certificate refused: revoked: certificate 'bad-key'/)
    await expect(connect(gateway, { privateKey: readFileSync(revokedKey.privatePath) })).rejects.toThrow(
      /All configured authentication methods failed/,
    )
    await gateway.waitForLog(
      new RegExp(
        `key ${escapeRegExp(fingerprintOf(revokedKey.publicPath))} is revoked \\(revoked keys file\\)`,
      ),
    )
  })

  it("refuses a certificate signed by a CA no line trusts, and random bytes", async () => {
    const certificate = certify(dir, otherCa, robot, "untrusted", ["-n", "ci"])
    await refusedCertificate(
      robot,
      certificate,
      new RegExp(
        `signed by CA ${escapeRegExp(fingerprintOf(otherCa.publicPath))}: no cert-authority line trusts that CA`,
      ),
    )
    const garbage = { line: `ssh-ed25519-cert-v01@openssh.com ${randomBytes(300).toString("base64")}` }
    await refusedCertificate(
      robot,
      garbage,
      /authentication failed: certificate refused: (truncated|malformed|unknown key type): .*\(certificate SHA256:/,
    )
  })

  it("a refused certificate of a listed key leaves that key's own login alone", async () => {
    const certificate = certify(dir, ca, alice, "alice-expired", ["-n", "ci", "-V", "20200101:20200102"])
    await refusedCertificate(alice, certificate, /certificate 'alice-expired' serial 0 expired/)
    const connection = await connect(gateway, { privateKey: readFileSync(alice.privatePath) })
    connection.end()
  })

  it("refuses a key whose from= does not match, and one past its expiry-time", async () => {
    await expect(connect(gateway, { privateKey: readFileSync(faraway.privatePath) })).rejects.toThrow(
      /All configured authentication methods failed/,
    )
    await gateway.waitForLog(
      /authentication failed: key SHA256:\S+ \(authorized_keys line 4\): address not allowed: \S+ is not in from=\\?"10\.0\.0\.0\/8/,
    )
    await expect(connect(gateway, { privateKey: readFileSync(expiredKey.privatePath) })).rejects.toThrow(
      /All configured authentication methods failed/,
    )
    await gateway.waitForLog(
      /authentication failed: key SHA256:\S+ \(authorized_keys line 5\): expired: expiry-time passed/,
    )
  })

  it("a changed mcp-groups ends the key's live connection, and the next session has the new groups", async () => {
    const connection = await connect(gateway, { privateKey: readFileSync(alice.privatePath) })
    const closed = new Promise<void>((resolve) => connection.once("close", resolve))
    const before = readFileSync(gateway.authorizedKeysPath, "utf8")
    writeFileSync(gateway.authorizedKeysPath, before.replace('mcp-groups="dev,ops"', 'mcp-groups="dev"'))
    await closed
    await gateway.waitForLog(
      new RegExp(
        `closed: the authorized_keys line of ${escapeRegExp(fingerprintOf(alice.publicPath))} changed`,
      ),
    )
    const again = await connect(gateway, { privateKey: readFileSync(alice.privatePath) })
    const channel = await openLineChannel(again, { exec: "mini" })
    expect(await channel.request(2, "ping")).toMatchObject({ result: {} })
    again.end()
    await gateway.waitForLog(/identity=alice groups=dev server=/)
  })

  it("a KRL that now revokes a live certificate's serial ends its connection", async () => {
    const key = keygen(dir, "live-cert", "ed25519")
    const certificate = certify(dir, ca, key, "live-robot", ["-n", "deploy", "-z", "77"])
    const ssh = spawn(
      "ssh",
      ["-o", `CertificateFile=${certificate.path}`, ...opensshArgs(gateway, key.privatePath), "mini"],
      {
        stdio: ["pipe", "pipe", "pipe"],
      },
    )
    let stdout = ""
    ssh.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    const exited = new Promise<number | null>((resolve) => ssh.once("close", resolve))
    ssh.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" })}\n`)
    await gateway.waitForLog(/identity=live-robot groups=deploy,robots cert_serial=77/)
    // The audit line can be written before the answer has crossed to ssh's stdout.
    await waitUntil(() => /"id":1/.test(stdout), 10_000, "the ping's answer on ssh's stdout")
    const next = makeKrl(dir, "next.krl", ["-s", ca.publicPath], [krlSpec([revokedSerial, "77"])])
    writeFileSync(krlPath, readFileSync(next.path))
    await gateway.waitForLog(/closed: certificate serial 77 of SHA256:\S+ is now revoked/)
    await exited
  })

  it("refuses every login while the revoked keys file is not a KRL or key list, and recovers", async () => {
    const good = readFileSync(krlPath)
    writeFileSync(krlPath, "this is not a key\n")
    await expect(connect(gateway, { privateKey: readFileSync(alice.privatePath) })).rejects.toThrow(
      /All configured authentication methods failed/,
    )
    await gateway.waitForLog(
      /revoked keys file .* is not usable .*: every login is refused until it is fixed/,
    )
    await gateway.waitForLog(/authentication failed: the revoked keys file is not usable/)
    writeFileSync(krlPath, good)
    const connection = await connect(gateway, { privateKey: readFileSync(alice.privatePath) })
    connection.end()
  })

  it("keys list shows each line's identity and groups", () => {
    const listed = spawnOutput(process.execPath, [
      join(import.meta.dirname, "../dist/main.js"),
      "keys",
      "list",
      "--json",
      "--authorized-clients",
      gateway.authorizedKeysPath,
    ])
    const { keys } = JSON.parse(listed) as { keys: Array<Record<string, unknown>> }
    expect(keys).toContainEqual(
      expect.objectContaining({ kind: "key", identity: "alice", groups: ["dev"], comment: "alice@laptop" }),
    )
    expect(keys).toContainEqual(
      expect.objectContaining({
        kind: "cert-authority",
        identity: null,
        groups: ["robots"],
        principals: ["ci", "deploy"],
      }),
    )
    // Without mcp-identity, the comment names the key.
    expect(keys).toContainEqual(expect.objectContaining({ identity: "revoked", groups: [] }))
  })
})
