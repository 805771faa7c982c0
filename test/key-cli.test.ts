/**
 * `mcp-ssh-server keys list|add|revoke` and `tokens create`, the real program on real files: offline
 * (no server), and beside a running gateway that sees the changes (a token the CLI made works at
 * once; a key the CLI revokes ends its live session), and concurrent with API registrations
 * without losing a line either way.
 */
import { spawn } from "node:child_process"
import { createHash, generateKeyPairSync } from "node:crypto"
import { existsSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { chmod, rm } from "node:fs/promises"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  disposeGateway,
  mainScript,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { connect, openLineChannel } from "./support/ssh.js"

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

/** The test's environment without MCP_SSH_* variables, so only what a test sets counts. */
const cleanEnvironment = (): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("MCP_SSH_")))

const cli = (
  args: ReadonlyArray<string>,
  options: { readonly cwd: string; readonly stdin?: string; readonly env?: Record<string, string> },
) =>
  new Promise<Run>((resolve, reject) => {
    const child = spawn(process.execPath, [mainScript, ...args], {
      cwd: options.cwd,
      env: { ...cleanEnvironment(), ...options.env },
      stdio: ["pipe", "pipe", "pipe"],
    })
    let stdout = ""
    let stderr = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`mcp-ssh-server ${args.join(" ")} did not finish:\n${stderr}`))
    }, 20_000)
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child.stdin.end(options.stdin ?? "")
    child.once("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

const sshString = (data: string | Buffer): Buffer => {
  const bytes = Buffer.from(data)
  const length = Buffer.alloc(4)
  length.writeUInt32BE(bytes.length)
  return Buffer.concat([length, bytes])
}

const edKeyLine = (comment: string): string => {
  const { publicKey } = generateKeyPairSync("ed25519")
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x ?? "", "base64url")
  return `ssh-ed25519 ${Buffer.concat([sshString("ssh-ed25519"), sshString(raw)]).toString("base64")} ${comment}`
}

describe("keys and tokens, offline", () => {
  let dir: string
  let keysPath: string
  const store = () => ["--authorized-clients", keysPath]

  beforeAll(() => {
    dir = tempDir()
    keysPath = join(dir, "keys", "authorized_keys")
  })
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true })
  })

  it("adds keys from the command line, a .pub file and stdin; lists and revokes them", async () => {
    expect((await cli(["keys", "list", ...store()], { cwd: dir })).stdout).toMatch(/no keys in/)

    // Three processes at once: each waits its turn on the lock, none loses another's line.
    const fromArgument = edKeyLine("argument@test")
    const fileKey = makeKey(dir, "from-file")
    const stdinKey = edKeyLine("stdin@test")
    const adds = await Promise.all([
      cli(["keys", "add", ...store(), fromArgument], { cwd: dir }),
      cli(["keys", "add", ...store(), `${fileKey.privatePath}.pub`], { cwd: dir }),
      cli(["keys", "add", ...store(), "-"], { cwd: dir, stdin: `${stdinKey}\n` }),
    ])
    expect(adds.map((run) => run.code)).toEqual([0, 0, 0])
    expect(adds[0]?.stdout).toMatch(/^added SHA256:\S+ \(ssh-ed25519\)/)

    const [again, listed, table] = await Promise.all([
      cli(["keys", "add", ...store(), fromArgument], { cwd: dir }),
      cli(["keys", "list", ...store(), "--json"], { cwd: dir }),
      cli(["keys", "list", ...store()], { cwd: dir }),
    ])
    expect(again.code).toBe(0)
    expect(again.stdout).toMatch(/is authorized already/)
    const { keys } = JSON.parse(listed.stdout) as { keys: Array<Record<string, unknown>> }
    expect(keys.map((key) => key.comment).sort()).toEqual(["argument@test", "from-file@test", "stdin@test"])
    expect(keys.every((key) => key.source === "cli" && /^\d{4}-/.test(String(key.added_at)))).toBe(true)
    expect(table.stdout.trim().split("\n")).toHaveLength(3)
    expect(table.stdout).toContain(String(keys[1]?.fingerprint))

    const content = readFileSync(keysPath, "utf8")
    expect(content.split(fromArgument).length - 1).toBe(1)
    expect(statSync(keysPath).mode & 0o777).toBe(0o600)
    expect(statSync(join(dir, "keys")).mode & 0o777).toBe(0o700)

    const argumentKey = keys.find((key) => key.comment === "argument@test")
    const [revoked, unknown] = await Promise.all([
      cli(["keys", "revoke", ...store(), String(argumentKey?.fingerprint)], { cwd: dir }),
      cli(["keys", "revoke", ...store(), "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"], { cwd: dir }),
    ])
    expect(revoked.code).toBe(0)
    expect(readFileSync(keysPath, "utf8")).not.toContain(fromArgument.split(" ")[1])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/no key has the fingerprint/)
  })

  it("keeps comments, options and unparsable lines written by hand", async () => {
    const path = join(dir, "hand_keys")
    const options = `restrict,command="echo hi" ${edKeyLine("with@options")}`
    const original = `# my note\r\n${options}\r\nnot a key at all\n\n${edKeyLine("plain@test")}`
    writeFileSync(path, original)
    await chmod(path, 0o600)
    const line = edKeyLine("new@test")
    expect((await cli(["keys", "add", "--authorized-clients", path, line], { cwd: dir })).code).toBe(0)
    const added = readFileSync(path, "utf8")
    expect(added.startsWith(`${original}\n`)).toBe(true)
    // Revoke the key written by hand with options: its line goes, every other byte stays.
    const blob = Buffer.from(options.split(" ").at(-2) ?? "", "base64")
    const fingerprint = `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`
    expect(
      (await cli(["keys", "revoke", "--authorized-clients", path, fingerprint], { cwd: dir })).code,
    ).toBe(0)
    expect(readFileSync(path, "utf8")).toBe(added.replace(`${options}\r\n`, ""))
  })

  it("refuses a bad key with the reason, without touching the file or echoing a private key", async () => {
    const before = readFileSync(keysPath)
    const privateKey = makeKey(dir, "secret")
    const refused = await cli(["keys", "add", ...store(), privateKey.privatePath], { cwd: dir })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/private key/)
    const secret = readFileSync(privateKey.privatePath, "utf8")
    for (const chunk of secret.split("\n").filter((text) => text.length > 20)) {
      expect(refused.stderr + refused.stdout).not.toContain(chunk)
    }
    expect(readFileSync(keysPath).equals(before)).toBe(true)
  })

  it("takes over a lock left by a process that died", async () => {
    const dead = spawn(process.execPath, ["-e", ""])
    await new Promise((resolve) => dead.once("close", resolve))
    writeFileSync(`${keysPath}.lock`, `${dead.pid} leftover\n`)
    // Success is the proof: a lock held by a live process fails the command after its 10 s deadline.
    const added = await cli(["keys", "add", ...store(), edKeyLine("after-crash@test")], { cwd: dir })
    expect(added.code).toBe(0)
    expect(existsSync(`${keysPath}.lock`)).toBe(false)
  })

  it("refuses to build on a key file others can write", async () => {
    const path = join(dir, "loose_keys")
    writeFileSync(path, `${edKeyLine("loose@test")}\n`)
    await chmod(path, 0o666)
    const refused = await cli(["keys", "add", "--authorized-clients", path, edKeyLine("x@test")], {
      cwd: dir,
    })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/writable by group or others/)
  })

  it("creates enrollment tokens: the token on stdout once, only its hash on disk, 0600", async () => {
    const [created, badTtl] = await Promise.all([
      cli(["tokens", "create", ...store(), "--uses", "3", "--ttl", "10m"], { cwd: dir }),
      cli(["tokens", "create", ...store(), "--ttl", "10x"], { cwd: dir }),
    ])
    expect(created.code).toBe(0)
    const token = created.stdout.trim()
    expect(token).toMatch(/^mcpssh_[A-Za-z0-9_-]{43}$/)
    expect(created.stderr).toMatch(/3 use\(s\), expires/)
    const tokenFile = `${keysPath}.tokens`
    const stored = readFileSync(tokenFile, "utf8")
    expect(stored).not.toContain(token)
    expect(JSON.parse(stored).tokens[0]).toMatchObject({ uses: 3, uses_left: 3 })
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600)
    expect(badTtl.code).toBe(1)
    expect(badTtl.stderr).toMatch(/not a duration/)
  })

  it("takes the store's location from MCP_SSH_* like the server, and documents its subcommands", async () => {
    const [viaEnv, help] = await Promise.all([
      cli(["keys", "list", "--json"], { cwd: dir, env: { MCP_SSH_AUTHORIZED_CLIENTS: keysPath } }),
      cli(["keys", "--help"], { cwd: dir }),
    ])
    expect(JSON.parse(viaEnv.stdout).keys.length).toBeGreaterThan(0)
    for (const subcommand of ["list", "add", "revoke"]) expect(help.stdout).toContain(subcommand)
  })
})

describe("keys and tokens beside a running gateway", () => {
  let gateway: RunningGateway
  const store = () => ["--authorized-clients", gateway.authorizedKeysPath]

  beforeAll(async () => {
    gateway = await startGateway({
      servers: { mini: node("mini-server.mjs") },
      keyApi: true,
      flags: ["--key-server-rate-burst", "500"],
    })
  })
  afterAll(async () => {
    await disposeGateway(gateway)
  })

  const register = (line: string, token: string) =>
    fetch(`${gateway.keyApiUrl}/register`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
      body: JSON.stringify({ client_pub_key: line }),
    })

  it("accepts at once a token the CLI created, and ends the live session of a key the CLI revokes", async () => {
    const token = (await cli(["tokens", "create", ...store()], { cwd: gateway.dir })).stdout.trim()
    const key = makeKey(gateway.dir, "cli-enrolled")
    const reply = await register(key.publicLine, token)
    expect(reply.status).toBe(200)
    const { fingerprint } = (await reply.json()) as { fingerprint: string }

    const live = await connect(gateway, { privateKey: readFileSync(key.privatePath) })
    const channel = await openLineChannel(live)
    expect(await channel.initialize()).toHaveProperty("result")
    const closed = new Promise<void>((resolve) => live.once("close", () => resolve()))
    // A call in progress when the key goes is answered with an error, not left hanging.
    channel.send({
      jsonrpc: "2.0",
      id: "slow",
      method: "tools/call",
      params: { name: "mini__sleep", arguments: { ms: 60_000 } },
    })
    expect(
      await channel.request("quick", "tools/call", { name: "mini__echo", arguments: {} }),
    ).toHaveProperty("result")

    const revoked = await cli(["keys", "revoke", ...store(), fingerprint], { cwd: gateway.dir })
    expect(revoked.code).toBe(0)
    await closed
    expect(await channel.response("slow", 1000)).toMatchObject({
      error: { code: -32000, message: expect.stringMatching(/session ended/) },
    })
    await gateway.waitForLog(new RegExp(`key ${fingerprint.replace(/[+/]/g, "\\$&")} is no longer in`))
    await expect(connect(gateway, { privateKey: readFileSync(key.privatePath) })).rejects.toThrow(
      /authentication methods failed/,
    )
  })

  it("loses no line when CLI processes and API registrations write at the same time", async () => {
    const token = (
      await cli(["tokens", "create", ...store(), "--uses", "60"], { cwd: gateway.dir })
    ).stdout.trim()
    const viaCli = Array.from({ length: 4 }, (_, index) => edKeyLine(`cli-${index}@test`))
    const viaApi = Array.from({ length: 60 }, (_, index) => edKeyLine(`api-${index}@test`))
    const [cliRuns, apiReplies] = await Promise.all([
      Promise.all(viaCli.map((line) => cli(["keys", "add", ...store(), line], { cwd: gateway.dir }))),
      Promise.all(viaApi.map((line) => register(line, token))),
    ])
    expect(cliRuns.map((run) => run.code)).toEqual(viaCli.map(() => 0))
    expect(apiReplies.map((reply) => reply.status)).toEqual(viaApi.map(() => 200))
    const content = readFileSync(gateway.authorizedKeysPath, "utf8")
    for (const line of [...viaCli, ...viaApi, gateway.clientKey.publicLine]) {
      expect(content.split(line).length - 1).toBe(1)
    }
  })
})
