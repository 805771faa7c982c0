/**
 * A loopback fleet: a real HAProxy (TCP mode, `send-proxy-v2`, health checks on each replica's
 * `GET /ready`) in front of 3 gateway replicas sharing one host key and one key store (the
 * authorized keys file). One key logs in through HAProxy on every replica; one replica is SIGKILLed
 * while `mcp-ssh-client` bridges call through HAProxy: the calls in flight on it fail with -32000,
 * its bridges reconnect through HAProxy to the survivors and go on, and nothing else is lost.
 *
 * A second fleet, in a describe of its own, shares a temporary PostgreSQL as its key store
 * (`--key-store postgres://...`, each replica with its key API): a key registered through replica A
 * logs in through B and C; revoked through C, its live sessions on A and B end within 1 s (printed,
 * with 1 s of slack for a loaded machine); the database stopped, known keys still log in through
 * HAProxy and /register answers 503 on every replica; restarted, registration works again and the
 * new key logs in on another replica. Each fleet runs only while its own describe does.
 */
import { readFileSync } from "node:fs"
import type { Client as Ssh2Connection } from "ssh2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { initializeRequest, type RunningClient, startClient } from "./support/client.js"
import { type ClientKey, makeKey, node, tempDir } from "./support/gateway.js"
import { type RunningHaproxy, startHaproxy } from "./support/haproxy.js"
import { removeDir } from "./support/openssh.js"
import { withoutHaproxy, withoutPostgres } from "./support/optionalServers.js"
import { type PostgresServer, startPostgres } from "./support/postgres.js"
import { checkedPid, signalProcess, waitUntil } from "./support/processes.js"
import { type Fleet, type Replica, startReplicas } from "./support/replicas.js"
import { connect, openLineChannel } from "./support/ssh.js"

interface FleetBehindHaproxy {
  readonly fleet: Fleet
  readonly haproxy: RunningHaproxy
  /** An `mcp-ssh-client` bridge to HAProxy's port, pinning the fleet's one host key. */
  readonly bridge: () => RunningClient
  readonly dispose: () => Promise<void>
}

/** 3 replicas (or `count`) and HAProxy in front, every replica UP in HAProxy's eyes. */
const startFleet = async (
  options: {
    readonly count?: number
    readonly replicaFlags?: ReadonlyArray<string>
    readonly keyApi?: boolean
    /** Each replica's environment on top of the test's (a database password, the admin token). */
    readonly env?: Readonly<Record<string, string>>
    /**
     * Where HAProxy connects from (127.0.0.1 unless given): the one address the replicas trust. Another
     * loopback address leaves 127.0.0.1 free to reach a replica directly, without a PROXY header.
     */
    readonly proxySource?: string
  } = {},
): Promise<FleetBehindHaproxy> => {
  const fleet = await startReplicas(options.count ?? 3, {
    servers: { mini: node("mini-server.mjs") },
    ...(options.keyApi === undefined ? {} : { keyApi: options.keyApi }),
    ...(options.env === undefined ? {} : { env: options.env }),
    // HAProxy connects from proxySource; the gateways believe its PROXY header, nobody else's.
    flags: ["--trusted-proxies", options.proxySource ?? "127.0.0.1", ...(options.replicaFlags ?? [])],
  })
  const home = tempDir("mcp-ssh-fleet-home-")
  const haproxy = await startHaproxy({
    backends: fleet.replicas.map((replica) => ({
      name: replica.name,
      port: replica.gateway.port,
      checkPort: replica.metricsPort,
    })),
    proxyProtocol: "v2",
    checkInterval: 300,
    ...(options.proxySource === undefined ? {} : { sourceAddress: options.proxySource }),
  }).catch(async (error: unknown) => {
    await fleet.dispose()
    removeDir(home)
    throw error
  })
  const bridges: Array<RunningClient> = []
  const dispose = async () => {
    for (const bridge of bridges) {
      if (bridge.process.exitCode === null && bridge.process.signalCode === null)
        signalProcess(checkedPid(bridge.process.pid, "bridge"), "SIGTERM")
    }
    await Promise.all(bridges.map((bridge) => bridge.exited))
    await haproxy.stop()
    await fleet.dispose()
    removeDir(home)
  }
  // Every replica UP in HAProxy's eyes (its health check on GET /ready) before any client comes.
  let states: Record<string, string> | undefined
  const until = Date.now() + 10_000
  for (;;) {
    states = await haproxy.serverStates()
    if (fleet.replicas.every((replica) => states?.[replica.name] === "UP")) break
    if (Date.now() > until) {
      await dispose()
      throw new Error(`replicas not UP in HAProxy: ${JSON.stringify(states)}\n${haproxy.output()}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  const knownHosts = fleet.knownHostsFor(haproxy.port)
  const bridge = () => {
    const client = startClient(
      [
        "--host",
        "127.0.0.1",
        "--port",
        String(haproxy.port),
        "--client-key",
        fleet.clientKey.privatePath,
        "--known-hosts",
        knownHosts,
        "--servers",
        "mini",
      ],
      home,
    )
    bridges.push(client)
    return client
  }
  return { fleet, haproxy, bridge, dispose }
}

/** A failure, with what the replicas warned about and what HAProxy said, to tell why. */
const fail = (error: unknown, fleet: FleetBehindHaproxy | undefined): never => {
  const warnings = (fleet?.fleet.replicas ?? []).map(
    (replica) =>
      `${replica.name}:\n${replica.gateway
        .log()
        .split("\n")
        .filter((line) => /level=(WARN|ERROR)/.test(line))
        .join("\n")}`,
  )
  throw new Error(
    `${error instanceof Error ? error.message : String(error)}\n${warnings.join("\n")}\nhaproxy:\n${fleet?.haproxy.output() ?? ""}`,
  )
}

const authenticatedCount = (replica: Replica) =>
  replica.gateway
    .log()
    .split("\n")
    .filter((line) => / message=authenticated /.test(line)).length

let setup: FleetBehindHaproxy | undefined

const echo = (client: RunningClient, id: string, message: string) =>
  client.send({
    jsonrpc: "2.0",
    id,
    method: "tools/call",
    params: { name: "mini__echo", arguments: { message } },
  })

describe.skipIf(withoutHaproxy)("a fleet of 3 replicas behind HAProxy", () => {
  // Started for this describe only: the PostgreSQL describe's fleet does not run beside it.
  beforeAll(async () => {
    setup = await startFleet()
  }, 60_000)

  afterAll(async () => {
    await setup?.dispose()
  }, 60_000)

  it("logs one key in through HAProxy on every replica, under one host key", async () => {
    if (setup === undefined) throw new Error("no fleet")
    const { fleet, haproxy } = setup
    const first = fleet.replicas[0]
    if (first === undefined) throw new Error("no replica")
    // Round robin: as many logins as replicas reach each one once (a few more allowed for a check's
    // timing). `connect` checks the host key against the fleet's one key each time.
    for (let login = 0; login < fleet.replicas.length * 3; login++) {
      if (fleet.replicas.every((replica) => authenticatedCount(replica) > 0)) break
      const client = await connect(first.gateway, { port: haproxy.port })
      client.end()
      await waitUntil(
        () => fleet.replicas.reduce((sum, replica) => sum + authenticatedCount(replica), 0) > login,
        10_000,
        "the login's log line",
      )
    }
    for (const replica of fleet.replicas) expect(authenticatedCount(replica), replica.name).toBeGreaterThan(0)
  })

  it("survives a replica SIGKILLed under load: its calls in flight fail with -32000, its bridges reconnect to the survivors and go on", async () => {
    if (setup === undefined) throw new Error("no fleet")
    const { fleet } = setup
    const before = new Map(fleet.replicas.map((replica) => [replica.name, authenticatedCount(replica)]))
    // One after another: six node processes and their sessions' children at once would only add to
    // the load of a busy machine.
    const bridges: Array<RunningClient> = []
    for (let index = 0; index < 6; index++) {
      const bridge = setup.bridge()
      bridges.push(bridge)
      bridge.send(initializeRequest(`init-${index}`))
      bridge.send({ jsonrpc: "2.0", method: "notifications/initialized" })
      await bridge
        .waitFor((message) => message.id === `init-${index}`, 20_000)
        .catch((error: unknown) => fail(error, setup))
    }
    // Each bridge's session: one long call held in flight, and echo calls one after another.
    for (const [index, bridge] of bridges.entries()) {
      bridge.send({
        jsonrpc: "2.0",
        id: `held-${index}`,
        method: "tools/call",
        params: { name: "mini__sleep", arguments: { ms: 6_000 } },
      })
    }
    let running = true
    const sent = bridges.map(() => [] as Array<string>)
    const loops = bridges.map(async (bridge, index) => {
      for (let call = 0; running; call++) {
        const id = `echo-${index}-${call}`
        sent[index]?.push(id)
        echo(bridge, id, id)
        await bridge.waitFor((message) => message.id === id, 30_000)
      }
    })

    // The victim: a replica that serves some of these bridges.
    const victim = fleet.replicas.find(
      (replica) => authenticatedCount(replica) > (before.get(replica.name) ?? 0),
    )
    if (victim === undefined) throw new Error("no replica took a bridge")
    await new Promise((resolve) => setTimeout(resolve, 500))
    signalProcess(checkedPid(victim.gateway.pid, victim.name), "SIGKILL")
    await victim.gateway.exited
    const survivorsBefore = fleet.replicas
      .filter((replica) => replica !== victim)
      .reduce((sum, replica) => sum + authenticatedCount(replica), 0)

    // Whose held call failed: the bridges the victim served. Everyone else's held call answers.
    const held = await Promise.all(
      bridges.map((bridge, index) => bridge.waitFor((message) => message.id === `held-${index}`, 20_000)),
    )
    const lost = held.flatMap((message, index) => ("error" in message ? [index] : []))
    expect(lost.length).toBeGreaterThan(0)
    expect(lost.length).toBeLessThan(bridges.length)
    for (const index of lost) {
      expect(held[index]).toMatchObject({
        error: { code: -32000, message: expect.stringMatching(/^connection to the gateway lost: /) },
      })
    }
    for (const [index, message] of held.entries()) {
      if (!lost.includes(index)) expect(message, `held-${index}`).toMatchObject({ result: {} })
    }

    // The lost bridges are back, on the survivors, and their echo calls go on.
    for (const index of lost) {
      const bridge = bridges[index] ?? expect.fail("no bridge")
      await bridge.waitFor((message) => message.method === "notifications/tools/list_changed", 20_000)
      const count = sent[index]?.length ?? 0
      await waitUntil(() => (sent[index]?.length ?? 0) > count + 2, 20_000, `bridge ${index} calling again`)
    }
    await waitUntil(
      () =>
        fleet.replicas
          .filter((replica) => replica !== victim)
          .reduce((sum, replica) => sum + authenticatedCount(replica), 0) >=
        survivorsBefore + lost.length,
      10_000,
      "the lost bridges logged in on the survivors",
    )
    running = false
    await Promise.all(loops)

    // Nothing else lost: every request got exactly one answer; only the lost bridges' calls in flight
    // at the kill failed, with -32000; each bridge still runs, its stdout whole lines.
    for (const [index, bridge] of bridges.entries()) {
      const answers = bridge.messages().filter((message) => "id" in message && !("method" in message))
      for (const id of sent[index] ?? []) {
        const mine = answers.filter((message) => message.id === id)
        expect(mine, id).toHaveLength(1)
        const [answer] = mine
        if (answer !== undefined && "error" in answer) {
          expect(lost).toContain(index)
          expect(answer).toMatchObject({ error: { code: -32000 } })
        }
      }
      const failed = (sent[index] ?? []).filter((id) =>
        answers.some((message) => message.id === id && "error" in message),
      )
      expect(failed.length, `bridge ${index}`).toBeLessThanOrEqual(lost.includes(index) ? 1 : 0)
      expect(bridge.process.exitCode).toBe(null)
      expect(bridge.stdout().toString("utf8").endsWith("\n")).toBe(true)
    }
  }, 60_000)
})

/** How often this key logged in on the replica: its log's `authenticated` lines carry the fingerprint. */
const loginsOf = (replica: Replica, fingerprint: string) =>
  replica.gateway
    .log()
    .split("\n")
    .filter((line) => / message=authenticated /.test(line) && line.includes(fingerprint)).length

const adminToken = "admin-token-for-the-fleet-0123456789"
/** The issue's deadline for propagation, and the slack a loaded 2-core machine gets on top. */
const propagation = 1_000
const slack = 1_000

const keyApi = async (replica: Replica, path: string, json: unknown, bearer: string) => {
  const response = await fetch(`${replica.gateway.keyApiUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
    body: JSON.stringify(json),
  })
  const text = await response.text()
  return { status: response.status, body: JSON.parse(text) as Record<string, unknown>, text }
}

/** Try until it works or the deadline passes; the value and the milliseconds it took. */
const within = async <A>(
  deadlineMs: number,
  attempt: () => Promise<A>,
): Promise<{ value: A; ms: number }> => {
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

describe.skipIf(withoutHaproxy || withoutPostgres)(
  "a fleet of 3 replicas on one PostgreSQL key store, behind HAProxy",
  () => {
    let pg: PostgresServer | undefined
    let pgSetup: FleetBehindHaproxy | undefined
    let dir: string | undefined
    /** Connections a test opened; whatever a failing test left open is closed in afterAll. */
    const open = new Set<Ssh2Connection>()

    beforeAll(async () => {
      pg = await startPostgres()
      const url = await pg.createDatabase("fleet_keys")
      dir = tempDir("mcp-ssh-fleet-keys-")
      pgSetup = await startFleet({
        replicaFlags: ["--key-store", url],
        keyApi: true,
        env: { PGPASSWORD: pg.password, MCP_SSH_ADMIN_TOKEN: adminToken },
        // 127.0.0.1 stays free for the test's direct logins to one replica.
        proxySource: "127.0.0.2",
      })
    }, 120_000)

    afterAll(async () => {
      for (const client of open) client.end()
      try {
        await pgSetup?.dispose()
      } finally {
        try {
          await pg?.dispose()
        } finally {
          if (dir !== undefined) removeDir(dir)
        }
      }
    }, 60_000)

    const parts = () => {
      const [a, b, c] = pgSetup?.fleet.replicas ?? []
      if (pgSetup === undefined || a === undefined || b === undefined || c === undefined || dir === undefined)
        throw new Error("no fleet")
      return { fleet: pgSetup, a, b, c, dir }
    }

    /** Log in to one replica directly (its own SSH port): which replica it is, for certain. */
    const loginTo = async (replica: Replica, key: ClientKey) => {
      const client = await connect(replica.gateway, {
        privateKey: readFileSync(key.privatePath),
        readyTimeout: 10_000,
      })
      open.add(client)
      client.once("close", () => open.delete(client))
      return client
    }

    /** Log in through HAProxy; the replica it reached is the one whose log gained this key's login. */
    const loginThrough = async (key: ClientKey, fingerprint: string) => {
      const { fleet, a } = parts()
      const before = fleet.fleet.replicas.map((replica) => loginsOf(replica, fingerprint))
      const client = await connect(a.gateway, {
        port: fleet.haproxy.port,
        privateKey: readFileSync(key.privatePath),
        readyTimeout: 10_000,
      })
      open.add(client)
      client.once("close", () => open.delete(client))
      const reached = () =>
        fleet.fleet.replicas.find((replica, index) => loginsOf(replica, fingerprint) > (before[index] ?? 0))
      await waitUntil(() => reached() !== undefined, 10_000, "the login's log line")
      return { client, replica: reached() ?? expect.fail("no replica logged the login") }
    }

    /** Through HAProxy until every replica took one login of this key (round robin: 3 in a row). */
    const loginThroughEach = async (key: ClientKey, fingerprint: string) => {
      const { fleet } = parts()
      const reached = new Set<string>()
      for (let attempt = 0; attempt < 9 && reached.size < fleet.fleet.replicas.length; attempt++) {
        const { client, replica } = await loginThrough(key, fingerprint)
        reached.add(replica.name)
        client.end()
      }
      expect([...reached].sort()).toEqual(fleet.fleet.replicas.map((replica) => replica.name).sort())
    }

    /** A key registered through `replica`'s /register with a token made on its /admin/tokens. */
    const register = async (replica: Replica, key: ClientKey, token: string) => {
      const registered = await keyApi(replica, "/register", { client_pub_key: key.publicLine }, token)
      expect(registered.status, registered.text).toBe(200)
      return String(registered.body.fingerprint)
    }
    const tokenOn = async (replica: Replica) => {
      const made = await keyApi(replica, "/admin/tokens", { identity: "roamer" }, adminToken)
      expect(made.status, made.text).toBe(201)
      return String(made.body.token)
    }

    let roaming: ClientKey
    let roamingFingerprint: string

    it("a key registered through replica A's key API logs in through B and C, directly and through HAProxy", async () => {
      const { a, b, c, dir } = parts()
      roaming = makeKey(dir, "roaming")
      await expect(loginTo(b, roaming)).rejects.toThrow(/authentication methods failed/)
      roamingFingerprint = await register(a, roaming, await tokenOn(a))
      for (const replica of [b, c]) {
        const { value, ms } = await within(propagation + slack, () => loginTo(replica, roaming))
        value.end()
        console.info(`registered on ${a.name}, logged in on ${replica.name} after ${ms} ms`)
      }
      await loginThroughEach(roaming, roamingFingerprint)
    }, 60_000)

    it("revoked through C, its live sessions on A and B end within 1 s", async () => {
      const { a, b, c } = parts()
      // Sessions through HAProxy until one is on A and one on B, each with the MCP channel open.
      const live = new Map<string, Ssh2Connection>()
      for (let attempt = 0; attempt < 9 && live.size < 2; attempt++) {
        const { client, replica } = await loginThrough(roaming, roamingFingerprint)
        if (replica === c || live.has(replica.name)) {
          client.end()
          continue
        }
        const channel = await openLineChannel(client)
        expect(await channel.initialize()).toHaveProperty("result")
        live.set(replica.name, client)
      }
      expect([...live.keys()].sort()).toEqual([a.name, b.name].sort())
      const closedAt = [...live.entries()].map(
        ([name, client]) =>
          new Promise<[string, number]>((resolve) => client.once("close", () => resolve([name, Date.now()]))),
      )
      const sent = Date.now()
      const revoked = await keyApi(c, "/admin/keys/revoke", { fingerprint: roamingFingerprint }, adminToken)
      expect(revoked, revoked.text).toMatchObject({ status: 200, body: { removed: 1 } })
      const answered = Date.now() - sent
      const ended = await Promise.race([
        Promise.all(closedAt),
        new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 10_000)),
      ])
      expect(ended, "a session of the revoked key did not end within 10 s").toBeDefined()
      const took = (ended ?? []).map(([name, at]) => [name, at - sent] as const)
      // The figure is printed for a reader of a slow run; the deadline is the check.
      console.info(
        `revoked through ${c.name} (answered after ${answered} ms): ${took.map(([name, ms]) => `session on ${name} ended after ${ms} ms`).join(", ")}`,
      )
      for (const [name, ms] of took)
        expect(ms, `the session on ${name}`).toBeLessThanOrEqual(propagation + slack)
      await expect(loginThrough(roaming, roamingFingerprint)).rejects.toThrow(/authentication methods failed/)
    }, 60_000)

    it("PostgreSQL stopped: existing keys still log in through HAProxy, registration answers 503; restarted: registration works and the key logs in on another replica", async () => {
      const { a, b, c, dir } = parts()
      const database = pg ?? expect.fail("no PostgreSQL")
      // A key known to every replica before the outage, and a valid token (so a 503 is the outage's).
      const steady = makeKey(dir, "steady")
      const added = await keyApi(b, "/admin/keys", { client_pub_key: steady.publicLine }, adminToken)
      expect(added.status, added.text).toBe(200)
      const steadyFingerprint = String(added.body.fingerprint)
      for (const replica of [a, c])
        (await within(propagation + slack, () => loginTo(replica, steady))).value.end()
      const token = await tokenOn(a)
      const late = makeKey(dir, "late")

      await database.stop()
      try {
        await loginThroughEach(steady, steadyFingerprint)
        // An outage never opens access: the key revoked before it stays out.
        await expect(loginThrough(roaming, roamingFingerprint)).rejects.toThrow(
          /authentication methods failed/,
        )
        for (const replica of [a, b, c]) {
          const refused = await keyApi(replica, "/register", { client_pub_key: late.publicLine }, token)
          expect(refused.status, `${replica.name}: ${refused.text}`).toBe(503)
          expect(String(refused.body.error)).toMatch(/key database postgres:\/\/\S+ is unavailable/)
        }
      } finally {
        await database.start()
      }

      // Back: A's pool connects again on the next write; the token the outage refused is still good.
      const { ms } = await within(15_000, async () => {
        const reply = await keyApi(a, "/register", { client_pub_key: late.publicLine }, token)
        if (reply.status !== 200) throw new Error(reply.text)
        return reply
      })
      console.info(`PostgreSQL restarted: registration on ${a.name} worked again after ${ms} ms`)
      // B's and C's change feeds reconnect with backoff (at most 5 s apart) and read everything again.
      const { ms: seen } = await within(10_000, async () => (await loginTo(b, late)).end())
      console.info(`the key registered on ${a.name} after the outage logged in on ${b.name} after ${seen} ms`)
      ;(await within(10_000, () => loginTo(c, late))).value.end()
    }, 90_000)
  },
)
