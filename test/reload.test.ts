/**
 * Live config reload of the real gateway: SIGHUP, an edit of servers_config.json, POST /admin/reload
 * and `mcp-ssh-server reload`, under a live SSH session with calls in flight, with real children.
 */
import { execFile } from "node:child_process"
import { readFileSync, renameSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { promisify } from "node:util"
import { afterEach, describe, expect, it } from "vitest"
import {
  disposeGateway,
  mainScript,
  node,
  type RunningGateway,
  type ServerEntry,
  startGateway,
} from "./support/gateway.js"
import { metricsUrl, scrape } from "./support/metrics.js"
import { childrenOf, signalProcess, waitUntil } from "./support/processes.js"
import { callTool as call, openSession, toolNames } from "./support/ssh.js"

const run = promisify(execFile)
const adminToken = "reload-test-admin-token-0123456789"

/** A mini server; `tag` only marks its command line, so the test can tell the children apart. */
const mini = (tag: string, timeout?: number): ServerEntry => ({
  ...node("mini-server.mjs", "normal", tag),
  ...(timeout === undefined ? {} : { timeout }),
})

let gateway: RunningGateway | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
})

const start = async (servers: Record<string, ServerEntry>, flags: ReadonlyArray<string> = []) => {
  const started = await startGateway({
    servers,
    keyApi: true,
    flags: ["--admin-token", adminToken, ...flags],
  })
  gateway = started
  return started
}

/** Replace the config as editors do: write a new file, rename it over the old one. */
const writeConfig = (running: RunningGateway, config: unknown, raw?: string) => {
  const path = join(running.dir, "servers_config.json")
  const next = `${path}.new`
  writeFileSync(next, raw ?? JSON.stringify(config))
  renameSync(next, path)
}

/** The gateway's children whose command line carries `tag`. */
const childrenTagged = (running: RunningGateway, tag: string) =>
  childrenOf(running.pid).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(tag)
    } catch {
      return false
    }
  })

const postReload = async (running: RunningGateway, token = adminToken) => {
  const response = await fetch(`${running.keyApiUrl}/admin/reload`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}` },
  })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

describe("live config reload", () => {
  it("on SIGHUP adds, removes and changes servers under a live session with calls in flight", async () => {
    const running = await start({ alpha: mini("alpha"), beta: mini("beta"), delta: mini("delta") })
    const channel = await openSession(running, "")
    await channel.initialize()
    expect(await toolNames(channel, "list1")).toContain("beta__sleep")
    await waitUntil(() => childrenTagged(running, "delta").length === 1, 10_000, "delta's child")
    const [alphaPid] = childrenTagged(running, "alpha")
    const [deltaPid] = childrenTagged(running, "delta")

    // Calls in flight on the unchanged, the removed and the changed server.
    channel.send({
      jsonrpc: "2.0",
      id: "a",
      method: "tools/call",
      params: { name: "alpha__sleep", arguments: { ms: 1500 } },
    })
    channel.send({
      jsonrpc: "2.0",
      id: "b",
      method: "tools/call",
      params: { name: "beta__sleep", arguments: { ms: 1500 } },
    })
    channel.send({
      jsonrpc: "2.0",
      id: "d",
      method: "tools/call",
      params: { name: "delta__sleep", arguments: { ms: 1500 } },
    })
    await new Promise((resolve) => setTimeout(resolve, 200))

    writeConfig(running, {
      mcpServers: {
        alpha: mini("alpha"),
        gamma: mini("gamma"),
        delta: { ...mini("delta"), env: { CHANGED: "1" } },
      },
    })
    signalProcess(running.pid, "SIGHUP")
    await running.waitForLog(
      /config reloaded \((SIGHUP|servers_config\.json changed)\): added: gamma; removed: beta; changed: delta/,
    )
    await channel.waitFor((message) => message.method === "notifications/tools/list_changed")

    // Every call in flight gets its real answer: the removed and changed servers drain first.
    for (const id of ["a", "b", "d"])
      expect(await channel.response(id)).toMatchObject({ result: { content: [{ text: "slept" }] } })
    expect(await call(channel, "g", "gamma__echo", { message: "new" })).toMatchObject({
      result: { content: [{ text: "new" }] },
    })
    expect(await call(channel, "b2", "beta__echo", { message: "gone" })).toMatchObject({
      error: { code: -32602, message: "Unknown tool: beta__echo" },
    })
    expect(await toolNames(channel, "list2")).toEqual(
      expect.arrayContaining(["alpha__echo", "gamma__echo", "delta__echo"]),
    )
    expect((await toolNames(channel, "list3")).some((name) => name.startsWith("beta__"))).toBe(false)

    // The unchanged server's child is the same process; the removed one is gone; the changed one is new.
    expect(childrenTagged(running, "alpha")).toEqual([alphaPid])
    await waitUntil(() => childrenTagged(running, "beta").length === 0, 10_000, "beta's child to stop")
    await waitUntil(
      () => childrenTagged(running, "delta").length === 1 && childrenTagged(running, "delta")[0] !== deltaPid,
      10_000,
      "delta's new child",
    )
    channel.channel.close()
  })

  it("reloads when the file is edited; a broken file keeps the running config, naming each problem", async () => {
    const running = await start({ alpha: mini("alpha") })
    const channel = await openSession(running, "")
    await channel.initialize()

    writeConfig(running, undefined, "{ not json")
    await running.waitForLog(
      /config reload \(servers_config\.json changed\) refused; the running config stays/,
    )
    writeConfig(running, {
      mcpServers: { alpha: mini("alpha"), "bad name": mini("x"), beta: { ...mini("beta"), colour: "red" } },
    })
    await running.waitForLog(/mcpServers\.bad name: a server name must be/)
    expect(running.log()).toMatch(/mcpServers\.beta.*colour/)

    // Still the old config, still serving.
    expect(await call(channel, "1", "alpha__echo", { message: "alive" })).toMatchObject({
      result: { content: [{ text: "alive" }] },
    })
    const refused = await postReload(running)
    expect(refused.status).toBe(400)
    expect(refused.body.error).toMatch(/the running one stays/)
    expect((refused.body.errors as Array<string>).join("\n")).toMatch(/mcpServers\.bad name/)

    writeConfig(running, {
      mcpServers: { alpha: mini("alpha"), beta: mini("beta") },
      gateway: { startupWait: 7 },
    })
    await running.waitForLog(/config reloaded \(servers_config\.json changed\): added: beta/)
    await running.waitForLog(/setting\(s\) startupWait changed; they take effect at the next start/)
    expect(await call(channel, "2", "beta__echo", { message: "joined" })).toMatchObject({
      result: { content: [{ text: "joined" }] },
    })
    channel.channel.close()
  })

  it("answers POST /admin/reload with what changed, and mcp-ssh-server reload asks the same", async () => {
    const running = await start({ alpha: mini("alpha") })
    expect((await postReload(running, "not-the-admin-token-at-all")).status).toBe(403)
    expect(await postReload(running)).toEqual({
      status: 200,
      body: {
        status: "reloaded",
        added: [],
        removed: [],
        changed: [],
        access_changed: false,
        ignored_settings: [],
      },
    })

    const configPath = join(running.dir, "servers_config.json")
    // Written in place, not renamed: the watch may or may not reload first; the CLI's answer is the same.
    writeFileSync(configPath, JSON.stringify({ mcpServers: { alpha: mini("alpha"), beta: mini("beta") } }))
    const tokenFile = join(running.dir, "admin-token")
    writeFileSync(tokenFile, adminToken, { mode: 0o600 })
    const port = new URL(running.keyApiUrl ?? "").port
    const cli = [
      mainScript,
      "reload",
      "--key-server-port",
      port,
      "--admin-token-file",
      tokenFile,
      "--servers-config",
      configPath,
    ]
    const reloaded = await run(process.execPath, cli)
    expect(reloaded.stdout).toMatch(/^reloaded: (added: beta|no server changed)/)
    expect(await postReload(running)).toMatchObject({ status: 200, body: { added: [], removed: [] } })

    writeFileSync(configPath, JSON.stringify({ mcpServers: {} }))
    const refused = await run(process.execPath, cli).then(
      () => undefined,
      (error: { code: number; stderr: string }) => error,
    )
    expect(refused?.code).toBe(1)
    expect(refused?.stderr).toMatch(/mcpServers: no enabled server/)
  })

  it("serializes a storm of SIGHUPs, and the last config wins", async () => {
    const running = await start({ alpha: mini("alpha") })
    // SIGHUP alone (the file untouched, so no watch event) reloads.
    signalProcess(running.pid, "SIGHUP")
    await running.waitForLog(/config reloaded \(SIGHUP\): no server changed/)
    for (let round = 0; round < 8; round++) {
      writeConfig(running, { mcpServers: { alpha: mini("alpha"), [`s${round}`]: mini(`s${round}`) } })
      signalProcess(running.pid, "SIGHUP")
    }
    await running.waitForLog(/config reloaded .*s7/)
    // Nothing left to apply: the config in force is the last one written.
    const settled = await postReload(running)
    expect(settled).toMatchObject({ status: 200, body: { added: [], removed: [], changed: [] } })
    const channel = await openSession(running, "")
    await channel.initialize()
    const names = await toolNames(channel, "list")
    expect(names.filter((name) => name.endsWith("__echo"))).toEqual(["alpha__echo", "s7__echo"])
    expect(running.process.exitCode).toBe(null)
    channel.channel.close()
  })

  it("counts reloads by outcome in /metrics, whose listener also answers /ready", async () => {
    const running = await start({ alpha: mini("alpha") }, ["--metrics-port", "0"])
    const url = await metricsUrl(running)
    const ready = await fetch(url.replace(/\/metrics$/, "/ready"))
    expect(ready.status).toBe(200)
    expect(await ready.json()).toMatchObject({ status: "ready" })

    expect((await postReload(running)).status).toBe(200)
    writeConfig(running, { mcpServers: { alpha: mini("alpha"), beta: mini("beta") } })
    await running.waitForLog(/config reloaded \(servers_config\.json changed\): added: beta/)
    writeConfig(running, undefined, "{ broken")
    await running.waitForLog(/config reload \(servers_config\.json changed\) refused/)
    const counted = await scrape(url)
    expect(counted.value("mcp_ssh_config_reloads_total", { outcome: "unchanged" })).toBe(1)
    expect(counted.value("mcp_ssh_config_reloads_total", { outcome: "applied" })).toBe(1)
    expect(counted.value("mcp_ssh_config_reloads_total", { outcome: "failed" })).toBe(1)
  })
})
