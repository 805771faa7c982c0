/**
 * The host key against real files: generation, permissions, passphrases, and keys made by ssh-keygen.
 * Fingerprints are compared with what OpenSSH's ssh-keygen prints for the same file.
 */
import { execFileSync } from "node:child_process"
import { chmodSync, existsSync, readFileSync, rmSync, statSync } from "node:fs"
import { join } from "node:path"
import { Cause, Effect, Exit, Logger, LogLevel, Option } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { HostKeyError } from "../src/gateway/errors.js"
import { loadHostKey } from "../src/gateway/ssh/HostKey.js"
import { generateEd25519KeyPair, utils } from "../src/shared/ssh2.js"
import { tempDir } from "./support/gateway.js"

const load = (path: string, passphrase?: string) =>
  loadHostKey(path, passphrase).pipe(Logger.withMinimumLogLevel(LogLevel.None))

const fingerprintBySshKeygen = (path: string): string =>
  execFileSync("ssh-keygen", ["-lf", path, "-E", "sha256"]).toString().split(" ")[1] ?? ""

const modeOf = (path: string): number => statSync(path).mode & 0o777

/** The HostKeyError a failed load ended with. */
const failureOf = async (effect: Effect.Effect<unknown, HostKeyError>): Promise<HostKeyError> => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) throw new Error("expected the load to fail")
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(`expected a failure, got ${Cause.pretty(exit.cause)}`)
  expect(failure.value).toBeInstanceOf(HostKeyError)
  return failure.value
}

describe("loadHostKey", () => {
  let dir: string
  beforeAll(() => {
    dir = tempDir("mcp-ssh-hostkey-")
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it("generates an ed25519 key when missing: private 0600, public 0644, new parent dirs 0700", async () => {
    const path = join(dir, "generated", "nested", "host_key")
    const key = await Effect.runPromise(load(path, undefined))
    expect(key.path).toBe(path)
    expect(key.privateKey.type).toBe("ssh-ed25519")
    expect(modeOf(path)).toBe(0o600)
    expect(modeOf(`${path}.pub`)).toBe(0o644)
    expect(modeOf(join(dir, "generated"))).toBe(0o700)
    expect(modeOf(join(dir, "generated", "nested"))).toBe(0o700)
    expect(readFileSync(path, "utf8")).toMatch(/^-----BEGIN OPENSSH PRIVATE KEY-----/)

    // OpenSSH reads both halves and agrees on the fingerprint.
    expect(key.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/)
    expect(fingerprintBySshKeygen(path)).toBe(key.fingerprint)
    expect(fingerprintBySshKeygen(`${path}.pub`)).toBe(key.fingerprint)
    const derived = execFileSync("ssh-keygen", ["-y", "-f", path]).toString().trim()
    expect(derived.split(" ").slice(0, 2).join(" ")).toBe(key.publicKeyLine)
    expect(readFileSync(`${path}.pub`, "utf8")).toMatch(
      new RegExp(`^${key.publicKeyLine.replace(/[+/]/g, "\\$&")}( |\\n)`),
    )

    // A second start loads the same key.
    const again = await Effect.runPromise(load(path, undefined))
    expect(again.fingerprint).toBe(key.fingerprint)
    expect(again.publicKeyLine).toBe(key.publicKeyLine)
    expect(readFileSync(path).equals(key.serverKey.key)).toBe(true)
  })

  it("refuses a private key readable by others, saying how to fix it", async () => {
    const path = join(dir, "open_key")
    await Effect.runPromise(load(path, undefined))
    chmodSync(path, 0o644)
    const error = await failureOf(load(path, undefined))
    expect(error.path).toBe(path)
    expect(error.message).toContain("chmod 600")
    expect(error.message).toContain("0644")
    chmodSync(path, 0o640)
    expect((await failureOf(load(path, undefined))).message).toContain("chmod 600")
    chmodSync(path, 0o600)
    await Effect.runPromise(load(path, undefined))
  })

  it("generates a passphrase-protected key that loads with the passphrase only", async () => {
    const path = join(dir, "protected_key")
    const key = await Effect.runPromise(load(path, "correct horse"))
    expect(modeOf(path)).toBe(0o600)
    // Encrypted, and OpenSSH can open it with the same passphrase.
    expect(() => execFileSync("ssh-keygen", ["-y", "-P", "", "-f", path], { stdio: "pipe" })).toThrow()
    const derived = execFileSync("ssh-keygen", ["-y", "-P", "correct horse", "-f", path]).toString()
    expect(derived.split(" ").slice(0, 2).join(" ")).toBe(key.publicKeyLine)

    const again = await Effect.runPromise(load(path, "correct horse"))
    expect(again.fingerprint).toBe(key.fingerprint)
    expect(again.serverKey.passphrase).toBe("correct horse")

    const withoutPassphrase = await failureOf(load(path, undefined))
    expect(withoutPassphrase.message).toMatch(/no passphrase given/)
    expect(withoutPassphrase.message).toContain("--passphrase")
    expect(withoutPassphrase.message).toContain(path)

    const wrongPassphrase = await failureOf(load(path, "wrong"))
    expect(wrongPassphrase.message).toContain("not a usable private key")
    expect(wrongPassphrase.message).toMatch(/bad passphrase/)
  })

  it("loads an existing ed25519 key made by ssh-keygen, and an encrypted one with its passphrase", async () => {
    const path = join(dir, "keygen_key")
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "made by ssh-keygen", "-f", path])
    const key = await Effect.runPromise(load(path, undefined))
    expect(key.privateKey.type).toBe("ssh-ed25519")
    expect(key.fingerprint).toBe(fingerprintBySshKeygen(path))
    expect(key.publicKeyLine).toBe(readFileSync(`${path}.pub`, "utf8").split(" ").slice(0, 2).join(" "))

    const encrypted = join(dir, "keygen_encrypted")
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "pw", "-f", encrypted])
    expect((await Effect.runPromise(load(encrypted, "pw"))).fingerprint).toBe(
      fingerprintBySshKeygen(encrypted),
    )
    expect((await failureOf(load(encrypted, undefined))).message).toMatch(/passphrase/i)
  })

  it("refuses a file that holds no private key, and an RSA key too small for the rules", async () => {
    const publicOnly = join(dir, "public_only")
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", publicOnly])
    rmSync(publicOnly)
    execFileSync("cp", [`${publicOnly}.pub`, publicOnly])
    chmodSync(publicOnly, 0o600)
    expect((await failureOf(load(publicOnly, undefined))).message).toMatch(/private key/)

    const small = join(dir, "rsa_1024")
    execFileSync("ssh-keygen", ["-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", small])
    expect((await failureOf(load(small, undefined))).message).toMatch(/1024 bits/)
    expect(existsSync(small)).toBe(true)
  })
})

describe("generateEd25519KeyPair", () => {
  it("never makes a key ssh2 cannot read back (ssh2's own generator does, about one in 256)", () => {
    for (let i = 0; i < 1500; i++) {
      const pair = generateEd25519KeyPair("test", undefined)
      expect(utils.parseKey(pair.public)).not.toBeInstanceOf(Error)
      expect(utils.parseKey(pair.private)).not.toBeInstanceOf(Error)
    }
  })
})
