/**
 * The PostgreSQL key store with a real PostgreSQL (test/support/postgres.ts), real gateways
 * (dist/main.js) and real ssh2 clients: replicas starting together on an empty database, `keys
 * import`, a key registered through one replica logging in through another, a revocation through one
 * ending the live session on another, a database outage (known keys log in, registration answers
 * 503) and its end, and the password never in a log line.
 *
 * The "within 1 s" checks are deadlines for the outcome, polled with slack for a loaded machine.
 */
import { spawn } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { join } from "node:path"
import type { Client as Ssh2Connection } from "ssh2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  type ClientKey,
  disposeGateway,
  mainScript,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { withoutPostgres } from "./support/optionalServers.js"
import { type PostgresServer, startPostgres } from "./support/postgres.js"
import { connect, openLineChannel } from "./support/ssh.js"

const adminToken = "admin-token-for-tests-0123456789"
/** The functional deadline of propagation, and the slack a shared 2-core machine gets on top. */
const propagation = 1_000
const slack = 4_000

interface Run {
  readonly code: number | null
  readonly stdout: string
  readonly stderr: string
}

const cli = (args: ReadonlyArray<string>, env: Record<string, string>) =>
  new Promise<Run>((resolve, reject) => {
    const child = spawn(process.execPath, [mainScript, ...args], {
      env: Object.fromEntries(
        Object.entries({ ...process.env, ...env }).filter(([name]) => !name.startsWith("MCP_SSH_")),
      ),
      stdio: ["ignore", "pipe", "pipe"],
    })
    let stdout = ""
    let stderr = ""
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`mcp-ssh-server ${args.join(" ")} did not finish:\n${stderr}`))
    }, 30_000)
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    child.once("close", (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })

const call = async (gateway: RunningGateway, path: string, json: unknown, bearer?: string) => {
  const response = await fetch(`${gateway.keyApiUrl}${path}`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(bearer === undefined ? {} : { authorization: `Bearer ${bearer}` }),
    },
    body: JSON.stringify(json),
  })
  const text = await response.text()
  return { status: response.status, body: JSON.parse(text) as Record<string, unknown>, text }
}

const login = (gateway: RunningGateway, key: ClientKey) =>
  connect(gateway, { privateKey: readFileSync(key.privatePath), readyTimeout: 5_000 })

/** Try until it works or the deadline passes; the milliseconds it took, or the last failure. */
const until = async <A>(deadlineMs: number, attempt: () => Promise<A>): Promise<{ value: A; ms: number }> => {
  const started = Date.now()
  for (;;) {
    try {
      return { value: await attempt(), ms: Date.now() - started }
    } catch (error) {
      if (Date.now() - started > deadlineMs) throw error
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }
}

describe.skipIf(withoutPostgres)("the PostgreSQL key store", () => {
  let pg: PostgresServer
  let url: string
  let dir: string
  let passwordFile: string
  const replicas: Array<RunningGateway> = []
  const cliOutputs: Array<string> = []
  const env = () => ({ PGPASSWORD: pg.password })
  const run = async (args: ReadonlyArray<string>, extra: Record<string, string> = env()) => {
    const result = await cli(args, extra)
    cliOutputs.push(result.stdout, result.stderr)
    return result
  }

  /** A gateway on the key database: the password from PGPASSWORD, or from a file. */
  const replica = (usePasswordFile: boolean) =>
    startGateway({
      servers: { mini: node("mini-server.mjs") },
      keyApi: true,
      flags: ["--key-store", url, ...(usePasswordFile ? ["--key-store-password-file", passwordFile] : [])],
      env: { MCP_SSH_ADMIN_TOKEN: adminToken, ...(usePasswordFile ? {} : env()) },
    }).then((gateway) => {
      replicas.push(gateway)
      return gateway
    })

  beforeAll(async () => {
    pg = await startPostgres()
    url = await pg.createDatabase("keys")
    dir = tempDir()
    passwordFile = join(dir, "pgpass")
    writeFileSync(passwordFile, `${pg.password}\n`, { mode: 0o600 })
  }, 60_000)
  afterAll(async () => {
    await Promise.all(replicas.map((gateway) => disposeGateway(gateway)))
    await pg?.dispose()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  }, 60_000)

  let a: RunningGateway
  let b: RunningGateway

  it("three replicas starting at once on an empty database apply each migration once", async () => {
    const started = await Promise.all([replica(false), replica(true), replica(false)])
    ;[a, b] = started
    const applied = await pg.query(
      "SELECT version FROM mcp_ssh_schema_migrations ORDER BY version",
      [],
      "keys",
    )
    expect(applied.rows).toEqual([{ version: 1 }])
    const appliedLines = started.flatMap((gateway) =>
      gateway
        .log()
        .split("\n")
        .filter((line) => /applied migration 1/.test(line)),
    )
    expect(appliedLines).toHaveLength(1)
    for (const gateway of started) expect(gateway.log()).toMatch(/listening for key changes/)
    // The third is not needed further: fewer processes on a shared machine.
    await disposeGateway(started[2])
  }, 90_000)

  it("keys import moves a file in, says how many, adds nothing the second time, refuses bad lines", async () => {
    const first = await run(["keys", "import", a.authorizedKeysPath, "--key-store", url])
    expect(first).toMatchObject({
      code: 0,
      stdout: expect.stringMatching(/imported 1 line\(s\) .* 0 already there/),
    })
    const again = await run(["keys", "import", a.authorizedKeysPath, "--key-store", url])
    expect(again.stdout).toMatch(/imported 0 line\(s\) .* 1 already there/)
    const bad = join(dir, "bad_keys")
    writeFileSync(
      bad,
      `${b.clientKey.publicLine}\n# fine\nno-such-option ${b.clientKey.publicLine}\nssh-ed25519 AAAA\n`,
    )
    const refused = await run(["keys", "import", bad, "--key-store", url])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(`${bad}:3:`)
    expect(refused.stderr).toContain(`${bad}:4:`)
    expect(refused.stderr).not.toContain(`${bad}:1:`)
    const count = await pg.query("SELECT count(*)::int AS n FROM mcp_ssh_authorized_keys", [], "keys")
    expect(count.rows).toEqual([{ n: 1 }])
    // The file store has nothing to import into.
    expect((await run(["keys", "import", bad])).stderr).toMatch(/give --key-store postgres/)
    // Both replicas follow: A's own key logs in through B.
    await until(propagation + slack, () =>
      connect(b, { privateKey: readFileSync(a.clientKey.privatePath) }),
    ).then(({ value }) => value.end())
  }, 60_000)

  let roaming: ClientKey
  let roamingFingerprint: string

  it("a key registered through replica A logs in through replica B within 1 s", async () => {
    roaming = makeKey(dir, "roaming")
    await expect(login(b, roaming)).rejects.toThrow(/authentication methods failed/)
    const token = await call(a, "/admin/tokens", { identity: "roamer" }, adminToken)
    expect(token.status).toBe(201)
    const registered = await call(
      a,
      "/register",
      { client_pub_key: roaming.publicLine },
      String(token.body.token),
    )
    expect(registered.status).toBe(200)
    roamingFingerprint = String(registered.body.fingerprint)
    const { value, ms } = await until(propagation + slack, () => login(b, roaming))
    value.end()
    // The outcome is the test; how long it took is said, for a reader of a slow run.
    console.info(`registered on A, logged in on B after ${ms} ms`)
    const history = await pg.query(
      "SELECT action, source FROM mcp_ssh_key_history WHERE fingerprint = $1",
      [roamingFingerprint],
      "keys",
    )
    expect(history.rows).toEqual([
      { action: "add", source: expect.stringMatching(/^register 127\.0\.0\.1 token=/) },
    ])
    // The token counted its use in the database: a second key with the same single-use token is refused.
    const second = await call(
      a,
      "/register",
      { client_pub_key: makeKey(dir, "second").publicLine },
      String(token.body.token),
    )
    expect(second.status).toBe(403)
  })

  it("a key revoked through replica B ends its live session on replica A within 1 s", async () => {
    const live: Ssh2Connection = await login(a, roaming)
    const channel = await openLineChannel(live)
    expect(await channel.initialize()).toHaveProperty("result")
    const closed = new Promise<number>((resolve) => live.once("close", () => resolve(Date.now())))
    const revoked = await call(b, "/admin/keys/revoke", { fingerprint: roamingFingerprint }, adminToken)
    expect(revoked).toMatchObject({ status: 200, body: { removed: 1 } })
    const sent = Date.now()
    const ended = await Promise.race([
      closed,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), propagation + slack)),
    ])
    expect(ended, "the session on A did not end").toBeDefined()
    console.info(`revoked on B, session on A ended after ${Number(ended) - sent} ms`)
    await a.waitForLog(/is no longer in postgres:.*treated as revoked/)
    await expect(login(a, roaming)).rejects.toThrow(/authentication methods failed/)
  })

  it("a key added with the CLI logs in through every replica; revoked in the database, it is out", async () => {
    const key = makeKey(dir, "from-cli")
    const added = await run(["keys", "add", key.publicLine, "--key-store", url])
    expect(added).toMatchObject({ code: 0, stdout: expect.stringMatching(/^added SHA256:/) })
    for (const gateway of [a, b]) (await until(propagation + slack, () => login(gateway, key))).value.end()
    const listed = await run(["keys", "list", "--json", "--key-store", url])
    expect(JSON.parse(listed.stdout).keys).toEqual(
      expect.arrayContaining([expect.objectContaining({ comment: "from-cli@test", source: "cli" })]),
    )

    // Revoked in the database (a revoked key list imported): its live session ends, logins are refused.
    const live = await login(b, key)
    const closed = new Promise<void>((resolve) => live.once("close", () => resolve()))
    const empty = join(dir, "no_keys")
    const list = join(dir, "revoked_list")
    writeFileSync(empty, "")
    writeFileSync(list, `${key.publicLine}\n`)
    const imported = await run(["keys", "import", empty, "--revoked-keys", list, "--key-store", url])
    expect(imported.stdout).toMatch(/revoked entries: 1 imported, 0 already there/)
    // Live connections are judged again once a second, after the change settles.
    const ended = await Promise.race([
      closed.then(() => true),
      new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2_000 + slack)),
    ])
    expect(ended, "the session of the revoked key did not end").toBe(true)
    await expect(login(a, key)).rejects.toThrow(/authentication methods failed/)

    // The other admin commands work on the database too.
    const fingerprint = JSON.parse(listed.stdout).keys.find(
      (entry: { comment: string }) => entry.comment === "from-cli@test",
    ).fingerprint
    const revoked = await run(["keys", "revoke", fingerprint, "--key-store", url])
    expect(revoked).toMatchObject({ code: 0, stdout: expect.stringMatching(/^revoked SHA256:/) })
    const token = await run(["tokens", "create", "--identity", "cli-made", "--key-store", url])
    expect(token.code).toBe(0)
    const enrolled = await call(
      b,
      "/register",
      { client_pub_key: makeKey(dir, "cli-token").publicLine },
      token.stdout.trim(),
    )
    expect(enrolled.status).toBe(200)
  }, 90_000)

  it("while the database is down known keys log in, revoked ones stay out and writes answer 503; then it recovers", async () => {
    await pg.stop()
    try {
      ;(await login(a, a.clientKey)).end()
      ;(await login(b, a.clientKey)).end()
      await expect(login(b, roaming)).rejects.toThrow(/authentication methods failed/)
      const refused = await call(
        b,
        "/register",
        { client_pub_key: makeKey(dir, "during").publicLine },
        "mcpssh_whatever",
      )
      expect(refused.status).toBe(503)
      expect(String(refused.body.error)).toMatch(/key database postgres:\/\/\S+ is unavailable/)
      const adminAdd = await call(
        a,
        "/admin/keys",
        { client_pub_key: makeKey(dir, "admin-during").publicLine },
        adminToken,
      )
      expect(adminAdd.status).toBe(503)
    } finally {
      await pg.start()
    }
    const late = makeKey(dir, "after")
    const token = (
      await until(15_000, async () => {
        const reply = await call(b, "/admin/tokens", {}, adminToken)
        if (reply.status !== 201) throw new Error(reply.text)
        return String(reply.body.token)
      })
    ).value
    const registered = await call(b, "/register", { client_pub_key: late.publicLine }, token)
    expect(registered.status).toBe(200)
    // A's change feed reconnects with backoff (at most 5 s) and reads everything again.
    ;(await until(10_000, () => login(a, late))).value.end()
    await a.waitForLog(/listening for key changes/)
  }, 60_000)

  it("refuses to start while the database cannot be reached, and never logs the password", async () => {
    const config = join(dir, "servers_config.json")
    writeFileSync(config, JSON.stringify({ mcpServers: { mini: node("mini-server.mjs") } }))
    const secret = "never-log-THIS-password-9"
    const closed = `postgres://mcp:${secret}@127.0.0.1:1/keys`
    const refused = await run(
      ["--servers-config", config, "--port", "0", "--server-key", join(dir, "hk"), "--key-store", closed],
      {},
    )
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(
      /key database postgres:\/\/mcp@127\.0\.0\.1:1\/keys is unavailable.*not starting/,
    )
    expect(refused.stderr).not.toContain(secret)
    const badUrl = await run(
      ["--servers-config", config, "--key-store", `postgres://mcp:${secret}@127.0.0.1:1`],
      {},
    )
    expect(badUrl.code).toBe(1)
    expect(badUrl.stderr).toMatch(/--key-store: .*names no database/)
    expect(badUrl.stderr).not.toContain(secret)
    for (const text of [...replicas.map((gateway) => gateway.log()), ...cliOutputs]) {
      expect(text).not.toContain(pg.password)
      expect(text).not.toContain(secret)
    }
  }, 60_000)
})
