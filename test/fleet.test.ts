/**
 * A loopback fleet: a real HAProxy (TCP mode, `send-proxy-v2`, health checks on each replica's
 * `GET /ready`) in front of 3 gateway replicas sharing one host key and one key store (the
 * authorized keys file). One key logs in through HAProxy on every replica; one replica is SIGKILLed
 * while `mcp-ssh-client` bridges call through HAProxy: the calls in flight on it fail with -32000,
 * its bridges reconnect through HAProxy to the survivors and go on, and nothing else is lost.
 *
 * The fleet is started by `startFleet`; its `replicaFlags` is where another shared key store goes
 * (`--key-store postgres://...`), and `keyApi` gives each replica its key API. The checks below hold
 * for any shared key store; the PostgreSQL ones (a key registered on one replica logs in on the
 * others; a revocation on one ends the key's sessions on all within 1 s; the database stopped, known
 * keys still log in and /register answers 503; restarted, it works again) go in a describe of their
 * own with a fleet started on a temporary PostgreSQL.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { initializeRequest, type RunningClient, startClient } from "./support/client.js"
import { node, tempDir } from "./support/gateway.js"
import { haproxyPath, type RunningHaproxy, startHaproxy } from "./support/haproxy.js"
import { removeDir } from "./support/openssh.js"
import { checkedPid, signalProcess, waitUntil } from "./support/processes.js"
import { type Fleet, type Replica, startReplicas } from "./support/replicas.js"
import { connect } from "./support/ssh.js"

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
  } = {},
): Promise<FleetBehindHaproxy> => {
  const fleet = await startReplicas(options.count ?? 3, {
    servers: { mini: node("mini-server.mjs") },
    ...(options.keyApi === undefined ? {} : { keyApi: options.keyApi }),
    // HAProxy connects from 127.0.0.1; the gateways believe its PROXY header, nobody else's.
    flags: ["--trusted-proxies", "127.0.0.1", ...(options.replicaFlags ?? [])],
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

beforeAll(async () => {
  if (haproxyPath !== undefined) setup = await startFleet()
}, 60_000)

afterAll(async () => {
  await setup?.dispose()
}, 60_000)

const echo = (client: RunningClient, id: string, message: string) =>
  client.send({
    jsonrpc: "2.0",
    id,
    method: "tools/call",
    params: { name: "mini__echo", arguments: { message } },
  })

describe.skipIf(haproxyPath === undefined)("a fleet of 3 replicas behind HAProxy", () => {
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
