/**
 * Shared servers with real processes over SSH: one child for many sessions (counted in the process
 * table), every concurrent call answered to its own caller, a shared child's crash confined to it,
 * the idle stop and the next lazy start, and the process budget's error.
 */
import { execFile } from "node:child_process"
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterEach, describe, expect, it } from "vitest"
import { disposeGateway, mainScript, node, type RunningGateway, startGateway } from "./support/gateway.js"
import { childrenOf, waitUntil } from "./support/processes.js"
import { callTool as call, connect, openLineChannel, toolNames } from "./support/ssh.js"

let gateway: RunningGateway | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
})

const openSession = async (running: RunningGateway, servers: string) => {
  const connection = await connect(running)
  const channel = await openLineChannel(connection, { exec: servers })
  await channel.initialize()
  return { connection, channel }
}

const textOf = (message: Record<string, unknown>) => JSON.stringify(message.result ?? message.error)

const run = promisify(execFile)
const adminToken = "shared-servers-admin-token"

describe("shared servers", () => {
  it("50 sessions run one process, and 2,000 concurrent calls each get their own answer", async () => {
    gateway = await startGateway({ servers: { mini: { ...node("mini-server.mjs"), scope: "shared" } } })
    const running = gateway
    const sessions = []
    for (let batch = 0; batch < 5; batch++) {
      sessions.push(...(await Promise.all(Array.from({ length: 10 }, () => openSession(running, "mini")))))
    }
    // The probe's child has gone; what is left is the shared one.
    await waitUntil(() => childrenOf(running.pid).length === 1, 10_000, "one child")
    const answers = await Promise.all(
      sessions.flatMap(({ channel }, session) =>
        Array.from({ length: 40 }, async (_, index) => {
          const marker = `session-${session}-call-${index}`
          const answer = await call(channel, `c${index}`, "mini__echo", { message: marker })
          return { marker, text: textOf(answer) }
        }),
      ),
    )
    expect(answers).toHaveLength(2000)
    for (const { marker, text } of answers) expect(text).toContain(`"${marker}"`)
    expect(childrenOf(running.pid)).toHaveLength(1)
    for (const { connection } of sessions) connection.end()
  }, 120_000)

  it("a child that announces list changes is listed once for all sessions, and again after it announces one", async () => {
    gateway = await startGateway({
      servers: {
        mini: { ...node("mini-server.mjs", "list-changed"), scope: "shared" },
        plain: { ...node("mini-server.mjs", "counts-lists"), scope: "shared" },
      },
    })
    const running = gateway
    const first = await openSession(running, "mini")
    const listedByChild = async (id: string) =>
      Number(JSON.parse(textOf(await call(first.channel, id, "mini__listed", {}))).content[0].text)
    const before = await listedByChild("listed-0")
    const sessions = await Promise.all(Array.from({ length: 5 }, () => openSession(running, "mini")))
    for (const [index, { channel }] of sessions.entries()) {
      expect(await toolNames(channel, `list-${index}`)).toEqual(
        [
          "mini__echo",
          "mini__env",
          "mini__exit",
          "mini__grow",
          "mini__listed",
          "mini__sleep",
          "mini__updated",
        ].sort(),
      )
    }
    // The first session listed the tools to route its call (counted in `before`); all five sessions
    // after it were answered from memory.
    expect(before).toBeGreaterThan(0)
    expect((await listedByChild("listed-1")) - before).toBe(0)

    // The child adds a tool and says so: every session hears it, and the next list asks the child.
    expect(textOf(await call(first.channel, "grow", "mini__grow", {}))).toContain("grown-1")
    for (const { channel } of sessions)
      await channel.waitFor((message) => message.method === "notifications/tools/list_changed")
    for (const [index, { channel }] of sessions.entries())
      expect(await toolNames(channel, `relist-${index}`)).toContain("mini__grown-1")
    expect((await listedByChild("listed-2")) - before).toBe(1)

    // A list with another parameter (a progress token) is the child's to answer, as is a server
    // that does not announce changes: a second session sees the plain server's own list each time.
    await first.channel.request("meta-list", "tools/list", { _meta: { progressToken: "p" } })
    expect((await listedByChild("listed-3")) - before).toBe(2)

    // A restarted child is listed again (its first life's pages are forgotten), once for all.
    await call(first.channel, "exit", "mini__exit", {})
    // list_changed when it grew, when it went and when it came back.
    const changed = (message: Record<string, unknown>) =>
      message.method === "notifications/tools/list_changed"
    await first.channel.waitForCount(changed, 3, 20_000)
    for (const [index, { channel }] of sessions.entries()) await toolNames(channel, `after-restart-${index}`)
    expect(await listedByChild("listed-4")).toBe(1)

    // A cursor the child never gave (the merged cursor is readable, so a client can make one up) is
    // the child's to answer, every time.
    const madeUp = Buffer.from(JSON.stringify(["mini", "made-up"])).toString("base64url")
    for (const id of ["made-up-1", "made-up-2"])
      await first.channel.request(id, "tools/list", { cursor: madeUp })
    expect(await listedByChild("listed-5")).toBe(3)

    // A server that does not promise to announce changes is listed by the child for each session.
    const plainSessions = [await openSession(running, "plain"), await openSession(running, "plain")]
    const [plainFirst] = plainSessions
    if (plainFirst === undefined) throw new Error("no plain session")
    const plainListed = async (id: string) =>
      Number(JSON.parse(textOf(await call(plainFirst.channel, id, "plain__listed", {}))).content[0].text)
    const plainBefore = await plainListed("plain-listed-0")
    for (const [index, { channel }] of plainSessions.entries())
      expect(await toolNames(channel, `plain-list-${index}`)).toContain("plain__echo")
    expect((await plainListed("plain-listed-1")) - plainBefore).toBe(2)
    for (const { connection } of [first, ...plainSessions, ...sessions]) connection.end()
  }, 60_000)

  it("sends each call of a session to the instance with the fewest calls in flight", async () => {
    gateway = await startGateway({
      servers: { mini: { ...node("mini-server.mjs", "pid"), scope: "shared", instances: 2 } },
    })
    const { connection, channel } = await openSession(gateway, "mini")
    const pidOf = async (id: string) => {
      const answer = await call(channel, id, "mini__pid", {})
      return Number(JSON.parse(textOf(answer)).content[0].text)
    }
    // One call waits at the first instance, so the next goes to the other; then each has one.
    const first = call(channel, "sleep-1", "mini__sleep", { ms: 3_000 })
    const otherPid = await pidOf("pid-1")
    const second = call(channel, "sleep-2", "mini__sleep", { ms: 3_000 })
    const firstPid = await pidOf("pid-2")
    expect(otherPid).not.toBe(firstPid)
    expect(childrenOf(gateway.pid)).toEqual(expect.arrayContaining([firstPid, otherPid]))
    await Promise.all([first, second])
    connection.end()
  }, 60_000)

  it("a shared child crashing under load loses nothing of the other servers", async () => {
    gateway = await startGateway({
      servers: {
        crashy: { ...node("mini-server.mjs", "crash-on-call"), scope: "shared" },
        mini: node("mini-server.mjs"),
      },
    })
    const running = gateway
    const sessions = await Promise.all(Array.from({ length: 5 }, () => openSession(running, "")))
    const load = Promise.all(
      sessions.flatMap(({ channel }, session) =>
        Array.from({ length: 40 }, (_, index) =>
          call(channel, `m${index}`, "mini__echo", { message: `s${session}-${index}` }).then(textOf),
        ),
      ),
    )
    const crashed = await Promise.all(
      sessions.map(({ channel }) => call(channel, "crash", "crashy__echo", { message: "boom" })),
    )
    // The first call crashes it; the others fail with it, or race its restart and its list's return.
    for (const answer of crashed) expect(answer.error).toBeDefined()
    expect(crashed.map((answer) => answer.error)).toContainEqual(
      expect.objectContaining({ code: -32000, message: expect.stringContaining("server 'crashy'") }),
    )
    const texts = await load
    expect(texts.every((text, index) => text.includes(`-${index % 40}"`))).toBe(true)
    for (const { connection } of sessions) connection.end()
  }, 60_000)

  it("stops when idle, and starts again for the next session", async () => {
    gateway = await startGateway({
      servers: { mini: { ...node("mini-server.mjs"), scope: "shared", idleTimeout: 1 } },
    })
    const running = gateway
    const first = await openSession(running, "mini")
    await waitUntil(() => childrenOf(running.pid).length === 1, 10_000, "the shared child")
    first.channel.channel.end()
    await first.channel.exit
    first.connection.end()
    await running.waitForLog(/stopped idle server 'mini' after 1s unused/, 10_000)
    await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "no child")
    const second = await openSession(running, "mini")
    const answer = await call(second.channel, "1", "mini__echo", { message: "again" })
    expect(textOf(answer)).toContain("again")
    expect(childrenOf(running.pid)).toHaveLength(1)
    second.connection.end()
  }, 60_000)

  it("past --max-children a session's server gets the budget's error, and its other server works", async () => {
    gateway = await startGateway({
      servers: { one: node("mini-server.mjs"), two: node("mini-server.mjs") },
      flags: ["--max-children", "1"],
    })
    const { channel, connection } = await openSession(gateway, "")
    const answers = await Promise.all([
      call(channel, "a", "one__echo", { message: "first" }),
      call(channel, "b", "two__echo", { message: "second" }),
    ])
    const refused = answers.filter((answer) => answer.error !== undefined)
    const served = answers.filter((answer) => answer.error === undefined)
    expect(served).toHaveLength(1)
    expect(refused).toHaveLength(1)
    expect(refused[0]?.error).toMatchObject({
      code: -32000,
      message: expect.stringMatching(
        /server '(one|two)' is not running: server '(one|two)' cannot start: the gateway runs 1 children, its --max-children limit of 1/,
      ),
    })
    await gateway.waitForLog(/the gateway runs 1 children, its --max-children limit of 1/)
    connection.end()
  }, 60_000)

  it("GET /admin/servers and mcp-ssh-server servers list show the running children", async () => {
    gateway = await startGateway({
      servers: {
        hub: { ...node("mini-server.mjs"), scope: "shared", start: "eager" },
        own: node("mini-server.mjs"),
      },
      keyApi: true,
      flags: ["--admin-token", adminToken],
    })
    const running = gateway
    const sessions = await Promise.all([openSession(running, ""), openSession(running, "")])
    await waitUntil(() => childrenOf(running.pid).length === 3, 10_000, "three children")
    const response = await fetch(`${running.keyApiUrl}/admin/servers`, {
      headers: { authorization: `Bearer ${adminToken}` },
    })
    const body = (await response.json()) as { children: Array<Record<string, unknown>> }
    const hub = body.children.filter((child) => child.server === "hub")
    expect(hub).toEqual([
      expect.objectContaining({ scope: "shared", state: "ready", identity: null, sessions: 2, restarts: 0 }),
    ])
    expect(hub[0]?.rss_bytes).toBeGreaterThan(1024 * 1024)
    expect(body.children.filter((child) => child.server === "own")).toHaveLength(2)
    const pids = body.children.map((child) => child.pid).sort()
    expect(pids).toEqual([...childrenOf(running.pid)].sort())
    expect((await fetch(`${running.keyApiUrl}/admin/servers`)).status).toBe(401)

    const tokenFile = join(running.dir, "admin-token")
    writeFileSync(tokenFile, adminToken, { mode: 0o600 })
    const port = new URL(running.keyApiUrl ?? "").port
    const listed = await run(process.execPath, [
      mainScript,
      "servers",
      "list",
      "--key-server-port",
      port,
      "--admin-token-file",
      tokenFile,
      "--servers-config",
      join(running.dir, "servers_config.json"),
    ])
    const lines = listed.stdout.trim().split("\n")
    expect(lines[0]).toMatch(/^server\s+scope\s+state\s+pid\s+identity\s+sessions\s+uptime\s+restarts\s+rss$/)
    expect(lines.filter((line) => /^hub\s+shared\s+ready\s+\d+\s+-\s+2\s/.test(line))).toHaveLength(1)
    expect(lines.filter((line) => line.startsWith("own "))).toHaveLength(2)
    for (const { connection } of sessions) connection.end()
  }, 60_000)

  it("a session takes a warm spare instead of waiting for a spawn, and the spare is replaced", async () => {
    gateway = await startGateway({
      servers: { probe: { ...node("probe-server.mjs"), spares: 1 } },
      flags: ["--log-level", "DEBUG"],
    })
    const running = gateway
    // Started and initialized: a process alone may still be answering initialize.
    await running.waitForLog(/a spare of server 'probe' is ready/)
    await waitUntil(() => childrenOf(running.pid).length === 1, 10_000, "the spare")
    const [spare] = childrenOf(running.pid)
    const { channel, connection } = await openSession(running, "probe")
    // The session's child is the spare that was already running, not a new spawn.
    const answer = await call(channel, "1", "probe__pid")
    expect(textOf(answer)).toContain(`"${spare}"`)
    // A new spare takes its place.
    await waitUntil(() => childrenOf(running.pid).length === 2, 10_000, "a new spare")
    expect(childrenOf(running.pid)).toContain(spare)
    channel.channel.end()
    await channel.exit
    connection.end()
    await waitUntil(
      () => !childrenOf(running.pid).includes(spare ?? -1),
      20_000,
      "the spare to end with its session",
    )
    expect(childrenOf(running.pid)).toHaveLength(1)
  }, 60_000)
})
