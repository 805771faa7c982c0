/**
 * Test inputs made by OpenSSH's own ssh-keygen: CA and user keys, certificates, KRLs. Each suite
 * works in a temp directory of its own and removes it afterwards. Keys whose private half a test needs
 * for signing are made with node:crypto and written as OpenSSH public keys, so ssh-keygen certifies
 * exactly the key the test signs with.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { generateKeyPairSync, type KeyObject, sign } from "node:crypto"
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"

export const makeTempDir = (prefix = "mcp-ssh-identity-"): string => mkdtempSync(join(tmpdir(), prefix))
export const removeDir = (dir: string): void => rmSync(dir, { recursive: true, force: true })

export type KeyKind = "ed25519" | "ecdsa256" | "ecdsa384" | "ecdsa521" | "rsa"
export const keyKinds: ReadonlyArray<KeyKind> = ["ed25519", "ecdsa256", "ecdsa384", "ecdsa521", "rsa"]

const keygenArgs = (kind: KeyKind): Array<string> =>
  kind === "ed25519"
    ? ["-t", "ed25519"]
    : kind === "rsa"
      ? ["-t", "rsa", "-b", "2048"]
      : ["-t", "ecdsa", "-b", kind.slice("ecdsa".length)]

export interface KeyFiles {
  readonly privatePath: string
  readonly publicPath: string
  readonly publicLine: string
  readonly blob: Buffer
}

const blobOfLine = (line: string): Buffer => Buffer.from(line.trim().split(/\s+/)[1] ?? "", "base64")

/** A key pair made by ssh-keygen (for CAs: ssh-keygen signs with the private half). */
export const keygen = (dir: string, name: string, kind: KeyKind, comment = name): KeyFiles => {
  const privatePath = join(dir, name)
  execFileSync("ssh-keygen", ["-q", ...keygenArgs(kind), "-N", "", "-C", comment, "-f", privatePath])
  const publicLine = readFileSync(`${privatePath}.pub`, "utf8").trim()
  return { privatePath, publicPath: `${privatePath}.pub`, publicLine, blob: blobOfLine(publicLine) }
}

const sshString = (data: Uint8Array | string): Buffer => {
  const bytes = typeof data === "string" ? Buffer.from(data) : Buffer.from(data)
  const length = Buffer.alloc(4)
  length.writeUInt32BE(bytes.length)
  return Buffer.concat([length, bytes])
}
const mpint = (unsigned: Buffer): Buffer => {
  let start = 0
  while (start < unsigned.length - 1 && unsigned[start] === 0) start++
  const trimmed = unsigned.subarray(start)
  return sshString((trimmed[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.alloc(1), trimmed]) : trimmed)
}

const curveOf = {
  ecdsa256: ["P-256", "nistp256", 32],
  ecdsa384: ["P-384", "nistp384", 48],
  ecdsa521: ["P-521", "nistp521", 66],
} as const

/** A key pair held by the test: the private KeyObject signs, the .pub file goes to ssh-keygen -s. */
export interface SigningKey extends KeyFiles {
  readonly kind: KeyKind
  /** An SSH signature (`string algorithm, string blob`) over data, as a client sends in userauth. */
  readonly signUserauth: (data: Buffer, rsaAlgorithm?: "rsa-sha2-256" | "rsa-sha2-512" | "ssh-rsa") => Buffer
}

export const signingKey = (dir: string, name: string, kind: KeyKind): SigningKey => {
  let privateKey: KeyObject
  let blob: Buffer
  let type: string
  if (kind === "ed25519") {
    const pair = generateKeyPairSync("ed25519")
    privateKey = pair.privateKey
    type = "ssh-ed25519"
    blob = Buffer.concat([
      sshString(type),
      sshString(Buffer.from(pair.publicKey.export({ format: "jwk" }).x ?? "", "base64url")),
    ])
  } else if (kind === "rsa") {
    const pair = generateKeyPairSync("rsa", { modulusLength: 2048 })
    privateKey = pair.privateKey
    type = "ssh-rsa"
    const jwk = pair.publicKey.export({ format: "jwk" })
    blob = Buffer.concat([
      sshString(type),
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
    blob = Buffer.concat([sshString(type), sshString(sshCurve), sshString(point)])
  }
  const publicLine = `${type} ${blob.toString("base64")} ${name}`
  const publicPath = join(dir, `${name}.pub`)
  writeFileSync(publicPath, `${publicLine}\n`)
  const signUserauth = (
    data: Buffer,
    rsaAlgorithm: "rsa-sha2-256" | "rsa-sha2-512" | "ssh-rsa" = "rsa-sha2-512",
  ) => {
    if (kind === "ed25519") return Buffer.concat([sshString(type), sshString(sign(null, data, privateKey))])
    if (kind === "rsa") {
      const hash =
        rsaAlgorithm === "rsa-sha2-256" ? "sha256" : rsaAlgorithm === "rsa-sha2-512" ? "sha512" : "sha1"
      return Buffer.concat([sshString(rsaAlgorithm), sshString(sign(hash, data, privateKey))])
    }
    const [, , width] = curveOf[kind]
    const hash = kind === "ecdsa256" ? "sha256" : kind === "ecdsa384" ? "sha384" : "sha512"
    const raw = sign(hash, data, { key: privateKey, dsaEncoding: "ieee-p1363" })
    const body = Buffer.concat([mpint(raw.subarray(0, width)), mpint(raw.subarray(width))])
    return Buffer.concat([sshString(type), sshString(body)])
  }
  return { privatePath: "", publicPath, publicLine, blob, kind, signUserauth }
}

export interface CertificateFile {
  readonly path: string
  readonly line: string
  readonly blob: Buffer
}

let certificateCount = 0

/**
 * `ssh-keygen -s ca -I id [args] key.pub`, on a copy of the public key so that one key can carry many
 * certificates. args are the other flags: `-n p1,p2`, `-V +1h`, `-z 42`, `-O ...`, `-h`, `-t ...`.
 */
export const certify = (
  dir: string,
  ca: KeyFiles,
  key: KeyFiles,
  keyId: string,
  args: ReadonlyArray<string> = [],
): CertificateFile => {
  certificateCount++
  const copy = join(dir, `cert-${certificateCount}.pub`)
  copyFileSync(key.publicPath, copy)
  execFileSync("ssh-keygen", ["-q", "-s", ca.privatePath, "-I", keyId, ...args, copy], { stdio: "pipe" })
  const path = join(dir, `cert-${certificateCount}-cert.pub`)
  const line = readFileSync(path, "utf8").trim()
  return { path, line, blob: blobOfLine(line) }
}

/** `ssh-keygen -k -f krl [args] files...`: args such as `-s ca.pub`, `-u`, `-z version`. */
export const makeKrl = (
  dir: string,
  name: string,
  args: ReadonlyArray<string>,
  files: ReadonlyArray<string>,
): { readonly path: string; readonly bytes: Buffer } => {
  const path = join(dir, name)
  execFileSync("ssh-keygen", ["-k", "-f", path, ...args, ...files], { stdio: "pipe" })
  return { path, bytes: readFileSync(path) }
}

/** OpenSSH's own answer: does the KRL revoke this key or certificate file? (`ssh-keygen -Q`) */
export const opensshRevokes = (krlPath: string, keyPath: string): boolean =>
  spawnSync("ssh-keygen", ["-Q", "-f", krlPath, keyPath], { stdio: "pipe" }).status !== 0

export const writeText = (dir: string, name: string, text: string): string => {
  const path = join(dir, name)
  writeFileSync(path, text)
  return path
}
