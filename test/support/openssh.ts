/**
 * Test inputs made by OpenSSH's own ssh-keygen: CA and user keys, certificates, KRLs. Each suite
 * works in a temp directory of its own and removes it afterwards. Keys whose private half a test needs
 * for signing are made with node:crypto (sshCraft.ts) and written as OpenSSH public keys, so ssh-keygen
 * certifies exactly the key the test signs with.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type KeyKind, makeKey, type TestKey } from "./sshCraft.js"

export const makeTempDir = (prefix = "mcp-ssh-identity-"): string => mkdtempSync(join(tmpdir(), prefix))
export const removeDir = (dir: string): void => rmSync(dir, { recursive: true, force: true })

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

/** A key pair held by the test (sshCraft.ts), its public half written for ssh-keygen -s to certify. */
export interface SigningKey extends KeyFiles, TestKey {}

export const signingKey = (dir: string, name: string, kind: KeyKind): SigningKey => {
  const key = makeKey(kind, name)
  const publicPath = join(dir, `${name}.pub`)
  writeFileSync(publicPath, `${key.publicLine}\n`)
  return { ...key, privatePath: "", publicPath }
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
