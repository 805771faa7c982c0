/**
 * GET /metrics against the real gateway: calls made over SSH, a refused login, a crashing child and
 * key API requests, scraped over HTTP and read with a Prometheus text-format parser; the counters
 * must match what was done. Also: off by default (no listener at all), a port in use refuses the
 * start naming the address, tool names become a label only with --metrics-tool-labels.
 */
import { spawn } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { createServer } from "node:net"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import {
  disposeGateway,
  mainScript,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { listeningPorts, metricsUrl, scrape, scrapeUntil } from "./support/metrics.js"
import { connect, openSession } from "./support/ssh.js"

let gateway: RunningGateway | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
})

const echo = (id: number, name = "mini__echo") => ({
  id,
  method: "tools/call",
  params: { name, arguments: { message: `call ${id}` } },
})

describe("GET /metrics", () => {
  it("counts the calls, sessions, connections and failed logins made", async () => {
    const running = await startGateway({
      servers: { mini: node("mini-server.mjs") },
      flags: ["--metrics-port", "0"],
    })
    gateway = running
    const url = await metricsUrl(running)
    // Two listeners: SSH and metrics.
    expect(listeningPorts(running.pid)).toEqual(
      [running.port, Number(new URL(url).port)].sort((a, b) => a - b),
    )

    // One login refused: a key nobody authorized.
    const stranger = makeKey(running.dir, "stranger")
    await expect(connect(running, { privateKey: readFileSync(stranger.privatePath) })).rejects.toThrow()

    const channel = await openSession(running, "mini")
    await channel.initialize()
    const calls = 7
    for (let id = 1; id <= calls; id++) {
      const { method, params } = echo(id)
      expect(await channel.request(id, method, params)).toMatchObject({ result: {} })
    }
    expect(await channel.request(99, "tools/call", { name: "mini__nope" })).toMatchObject({ error: {} })

    const during = await scrapeUntil(
      url,
      (now) =>
        now.value("mcp_ssh_connections_total", { outcome: "refused" }) === 1 &&
        now.value("mcp_ssh_connections_open") === 1,
    )
    const ok = { server: "mini", method: "tools/call", outcome: "ok" }
    expect(during.family("mcp_ssh_calls_total")?.type).toBe("COUNTER")
    expect(during.value("mcp_ssh_calls_total", ok)).toBe(calls)
    expect(
      during.value("mcp_ssh_calls_total", { server: "gateway", method: "tools/call", outcome: "error" }),
    ).toBe(1)
    expect(during.value("mcp_ssh_calls_total", { method: "initialize", outcome: "ok" })).toBe(1)
    expect(during.value("mcp_ssh_calls_total")).toBe(calls + 2)
    expect(during.family("mcp_ssh_call_duration_seconds")?.type).toBe("HISTOGRAM")
    expect(during.value("mcp_ssh_call_duration_seconds", ok)).toBe(calls)
    expect(during.value("mcp_ssh_call_duration_seconds_sum", ok)).toBeGreaterThan(0)
    expect(during.value("mcp_ssh_call_duration_seconds_bucket", { ...ok, le: "+Inf" })).toBe(calls)
    // Tool names are no label without --metrics-tool-labels.
    expect(during.samples("mcp_ssh_calls_total").every((sample) => sample.labels?.tool === undefined)).toBe(
      true,
    )
    expect(during.value("mcp_ssh_calls_in_flight")).toBe(0)
    expect(during.value("mcp_ssh_calls_limited_total")).toBe(0)

    expect(during.value("mcp_ssh_sessions_total")).toBe(1)
    expect(during.value("mcp_ssh_sessions_open")).toBe(1)
    expect(during.value("mcp_ssh_connections_total", { outcome: "authenticated" })).toBe(1)
    expect(during.value("mcp_ssh_connections_total", { outcome: "refused" })).toBe(1)
    expect(during.value("mcp_ssh_connections_total", { outcome: "limited" })).toBe(0)
    expect(during.value("mcp_ssh_auth_failures_total", { reason: "unknown_key" })).toBe(1)
    expect(during.value("mcp_ssh_auth_failures_total")).toBe(1)

    const child = { server: "mini", scope: "session" }
    expect(during.value("mcp_ssh_children_running", child)).toBe(1)
    expect(during.value("mcp_ssh_child_starts_total", { server: "mini" })).toBe(1)
    expect(during.value("mcp_ssh_child_crashes_total")).toBe(0)
    // A Node process: tens of MB.
    expect(during.value("mcp_ssh_child_rss_bytes", child)).toBeGreaterThan(10 * 1024 * 1024)
    expect(during.value("mcp_ssh_bytes_total", { direction: "in" })).toBeGreaterThan(1000)
    expect(during.value("mcp_ssh_bytes_total", { direction: "out" })).toBeGreaterThan(1000)
    expect(during.samples("mcp_ssh_build_info")[0]?.labels).toEqual({
      version: expect.stringMatching(/^\d+\.\d+\.\d+/),
      node_version: process.version,
    })
    expect(during.value("mcp_ssh_config_reloads_total")).toBe(0)
    // The process itself, from prom-client's default metrics.
    expect(during.value("process_cpu_user_seconds_total")).toBeGreaterThan(0)
    expect(during.value("process_resident_memory_bytes")).toBeGreaterThan(0)
    expect(during.family("nodejs_eventloop_lag_seconds")).toBeDefined()

    channel.channel.end()
    await channel.exit
    const after = await scrapeUntil(
      url,
      (now) =>
        now.value("mcp_ssh_sessions_open") === 0 &&
        now.value("mcp_ssh_children_running") === 0 &&
        now.value("mcp_ssh_connections_open") === 0,
    )
    expect(after.value("mcp_ssh_sessions_open")).toBe(0)
    expect(after.value("mcp_ssh_children_running", child)).toBe(0)
    expect(after.value("mcp_ssh_connections_open")).toBe(0)
    expect(after.value("mcp_ssh_child_rss_bytes")).toBe(0)
    expect(after.value("mcp_ssh_sessions_total")).toBe(1)

    // Only GET /metrics is served.
    expect((await fetch(new URL("/", url))).status).toBe(404)
    expect((await fetch(new URL("/metrics/x", url))).status).toBe(404)
    expect((await fetch(url, { method: "POST" })).status).toBe(404)
  })

  it("labels calls with the tool only with --metrics-tool-labels; counts crashes, restarts and key API requests", async () => {
    const running = await startGateway({
      servers: { mini: node("mini-server.mjs"), crashy: node("mini-server.mjs", "crash-on-call") },
      flags: ["--metrics-port", "0", "--metrics-tool-labels"],
      keyApi: true,
    })
    gateway = running
    const url = await metricsUrl(running)
    const channel = await openSession(running, "")
    await channel.initialize()
    for (const id of [1, 2]) {
      const { method, params } = echo(id)
      await channel.request(id, method, params)
    }
    // The child exits without answering: the call fails, and the child is restarted.
    const crash = echo(3, "crashy__echo")
    expect(await channel.request(crash.id, crash.method, crash.params)).toMatchObject({ error: {} })

    const keyApi = running.keyApiUrl ?? ""
    expect((await fetch(`${keyApi}/health`)).status).toBe(200)
    expect((await fetch(`${keyApi}/no/such/path?x=1`)).status).toBe(404)

    const now = await scrapeUntil(
      url,
      (current) => current.value("mcp_ssh_child_starts_total", { server: "crashy" }) === 2,
      10_000,
    )
    expect(
      now.value("mcp_ssh_calls_total", {
        server: "mini",
        method: "tools/call",
        tool: "mini__echo",
        outcome: "ok",
      }),
    ).toBe(2)
    expect(now.value("mcp_ssh_call_duration_seconds", { tool: "mini__echo" })).toBe(2)
    expect(
      now.value("mcp_ssh_calls_total", { server: "crashy", tool: "crashy__echo", outcome: "error" }),
    ).toBe(1)
    expect(now.value("mcp_ssh_calls_total", { method: "initialize", tool: "" })).toBe(1)

    expect(now.value("mcp_ssh_child_crashes_total", { server: "crashy" })).toBe(1)
    expect(now.value("mcp_ssh_child_restarts_total", { server: "crashy" })).toBe(1)
    expect(now.value("mcp_ssh_child_crashes_total", { server: "mini" })).toBe(0)

    expect(now.value("mcp_ssh_key_api_requests_total", { route: "/health", status: "200" })).toBe(1)
    expect(now.value("mcp_ssh_key_api_requests_total", { route: "other", status: "404" })).toBe(1)
    expect(now.value("mcp_ssh_key_api_requests_total")).toBe(2)
    // /metrics is not on the key API.
    expect((await fetch(`${keyApi}/metrics`)).status).toBe(404)
    channel.channel.end()
    await channel.exit
  })

  it("is off by default: no listener", async () => {
    const running = await startGateway({ servers: { mini: node("mini-server.mjs") } })
    gateway = running
    expect(listeningPorts(running.pid)).toEqual([running.port])
    expect(running.log()).not.toMatch(/metrics/)
  })

  it("takes its settings from MCP_SSH_* too, and warns on a non-loopback address", async () => {
    const running = await startGateway({
      servers: { mini: node("mini-server.mjs") },
      env: { MCP_SSH_METRICS_HOST: "0.0.0.0", MCP_SSH_METRICS_PORT: "0" },
    })
    gateway = running
    await running.waitForLog(/metrics on 0\.0\.0\.0:\d+ can be read by anyone who reaches that address/)
    const url = await metricsUrl(running)
    expect(url).toMatch(/^http:\/\/0\.0\.0\.0:\d+\/metrics$/)
    const loopback = new URL(url)
    loopback.hostname = "127.0.0.1"
    expect((await scrape(loopback.href)).value("mcp_ssh_sessions_total")).toBe(0)
  })

  it("refuses to start when the metrics port is in use, naming the address", async () => {
    const taken = createServer()
    await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", resolve))
    const address = taken.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    const dir = tempDir()
    try {
      const configPath = join(dir, "servers_config.json")
      writeFileSync(configPath, JSON.stringify({ mcpServers: { mini: node("mini-server.mjs") } }))
      const child = spawn(
        process.execPath,
        [
          mainScript,
          ...["--servers-config", configPath, "--port", "0", "--server-key", join(dir, "host_key")],
          ...["--authorized-clients", join(dir, "authorized_keys"), "--metrics-port", String(port)],
        ],
        { stdio: ["ignore", "pipe", "pipe"] },
      )
      let output = ""
      child.stdout.on("data", (chunk: Buffer) => {
        output += chunk.toString()
      })
      child.stderr.on("data", (chunk: Buffer) => {
        output += chunk.toString()
      })
      const code = await new Promise<number | null>((resolve) => child.once("exit", resolve))
      expect(code).toBe(1)
      expect(output).toContain(`mcp-ssh-server: cannot listen on 127.0.0.1:${port}: listen EADDRINUSE`)
      // Refused before SSH listened.
      expect(output).not.toMatch(/SSH server listening/)
    } finally {
      taken.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
