/**
 * The metrics without a gateway: bounded labels, the settings that turn them on (errors naming the
 * field), the no-op default, and the live registry's text read back through a Prometheus parser.
 */
import { Effect, Either } from "effect"
import { describe, expect, it } from "vitest"
import { decodeSettings } from "../src/gateway/config/settings.js"
import { Metrics, noMetrics } from "../src/gateway/ops/Metrics.js"
import {
  authFailureReason,
  LabelBudget,
  methodLabel,
  outcomeLabel,
  residentBytes,
  routeLabel,
  toolLabel,
} from "../src/gateway/ops/metricLabels.js"
import { makeMetrics } from "../src/gateway/ops/prometheus.js"
import { Scrape } from "./support/metrics.js"

describe("metric labels", () => {
  it("keeps MCP methods and folds any other into 'other'", () => {
    expect(methodLabel("tools/call")).toBe("tools/call")
    expect(methodLabel("initialize")).toBe("initialize")
    expect(methodLabel("x/made-up-1")).toBe("other")
  })

  it("gives the tool label to named calls that reached a server, within a budget", () => {
    const budget = new LabelBudget(2)
    expect(toolLabel(budget, "mini", "tools/call", "mini__echo")).toBe("mini__echo")
    expect(toolLabel(budget, undefined, "tools/call", "unknown")).toBe("")
    expect(toolLabel(budget, "mini", "resources/read", "file:///etc")).toBe("")
    expect(toolLabel(budget, "mini", "prompts/get", "mini__p")).toBe("mini__p")
    expect(toolLabel(budget, "mini", "tools/call", "mini__third")).toBe("other")
    expect(toolLabel(budget, "mini", "tools/call", "mini__echo")).toBe("mini__echo")
  })

  it("reduces the audit outcome to ok, error or cancelled", () => {
    expect(outcomeLabel("ok")).toBe("ok")
    expect(outcomeLabel("cancelled")).toBe("cancelled")
    expect(outcomeLabel("error -32601")).toBe("error")
  })

  it("names a key API route only when the API defines it", () => {
    const known = new Set(["/health", "/register"])
    expect(routeLabel(known, "/health")).toBe("/health")
    expect(routeLabel(known, "/register?x=1")).toBe("/register")
    expect(routeLabel(known, "/wp-admin/login.php")).toBe("other")
  })

  it("reads VmRSS from /proc/PID/status", () => {
    expect(residentBytes("Name:\tnode\nVmRSS:\t   51200 kB\nVmSwap:\t0 kB\n")).toBe(51200 * 1024)
    expect(residentBytes("Name:\tkthreadd\n")).toBeUndefined()
  })
})

describe("login refusals as metric reasons", () => {
  it("folds the login decision's codes into a few bounded reasons", () => {
    const cases: ReadonlyArray<readonly [string, string]> = [
      ["not authorized", "unknown_key"],
      ["bad signature", "bad_signature"],
      ["algorithm", "algorithm"],
      ["certificate algorithm mismatch", "algorithm"],
      ["revoked", "revoked"],
      ["certificate revoked", "revoked"],
      ["revoked keys unusable", "revoked"],
      ["key line expired", "key_options"],
      ["certificate expired", "certificate"],
      ["certificate untrusted CA", "certificate"],
      ["anything new", "unknown_key"],
    ]
    for (const [code, reason] of cases) expect(authFailureReason(code), code).toBe(reason)
  })
})

describe("metrics settings", () => {
  it("are off by default, on loopback", () => {
    const settings = Either.getOrThrow(decodeSettings({}))
    expect(settings.metricsPort).toBeUndefined()
    expect(settings.metricsHost).toBe("127.0.0.1")
    expect(settings.metricsToolLabels).toBe(false)
  })

  it("take a port from a variable's text, and a wrong one names the variable or the JSON key", () => {
    const from = (value: unknown, source: string) => decodeSettings({ metricsPort: { value, source } })
    expect(Either.getOrThrow(from("9464", "MCP_SSH_METRICS_PORT")).metricsPort).toBe(9464)
    const labels = decodeSettings({
      metricsToolLabels: { value: "yes", source: "MCP_SSH_METRICS_TOOL_LABELS" },
    })
    expect(Either.getOrThrow(labels).metricsToolLabels).toBe(true)
    expect(from("abc", "MCP_SSH_METRICS_PORT")).toEqual(
      Either.left('MCP_SSH_METRICS_PORT: Expected number, actual "abc" (got "abc")'),
    )
    expect(from(70000, "servers_config.json: gateway.metricsPort")).toEqual(
      Either.left(expect.stringContaining("gateway.metricsPort: must be a port number")),
    )
  })
})

describe("the Metrics service", () => {
  it("is the no-op unless provided", () => {
    expect(Effect.runSync(Metrics)).toBe(noMetrics)
    expect(noMetrics.callStarted()).toBe(0)
  })

  it("renders what it was told in the Prometheus text format", async () => {
    const metrics = makeMetrics({ toolLabels: false })
    const started = metrics.callStarted()
    const inFlight = new Scrape((await Effect.runPromise(metrics.scrape)).text)
    expect(inFlight.value("mcp_ssh_calls_in_flight")).toBe(1)
    metrics.callEnded(started, "mini", "tools/call", "mini__echo", "ok")
    metrics.callEnded(metrics.callStarted(), undefined, "no/such-method", undefined, "error -32601")
    metrics.callEnded(metrics.callStarted(), "mini", "tools/call", "mini__echo", "cancelled")
    const closeSession = metrics.sessionOpened()
    closeSession()
    closeSession()
    const socket = { bytesRead: 10, bytesWritten: 20 }
    const closeConnection = metrics.connectionOpened(socket)
    metrics.connectionOutcome("authenticated")
    metrics.authFailed("bad_signature")
    metrics.reloaded("applied")
    metrics.keyApiRequest("/health", 200)
    const childGone = metrics.childStarted("mini", "session", undefined)

    const { contentType, text } = await Effect.runPromise(metrics.scrape)
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/)
    const now = new Scrape(text)
    expect(now.value("mcp_ssh_calls_in_flight")).toBe(0)
    expect(now.value("mcp_ssh_calls_total", { server: "mini", method: "tools/call", outcome: "ok" })).toBe(1)
    expect(now.value("mcp_ssh_calls_total", { server: "gateway", method: "other", outcome: "error" })).toBe(1)
    expect(now.value("mcp_ssh_calls_total", { outcome: "cancelled" })).toBe(1)
    expect(now.value("mcp_ssh_call_duration_seconds")).toBe(3)
    expect(now.value("mcp_ssh_sessions_total")).toBe(1)
    expect(now.value("mcp_ssh_sessions_open")).toBe(0)
    expect(now.value("mcp_ssh_connections_open")).toBe(1)
    expect(now.value("mcp_ssh_bytes_total", { direction: "out" })).toBe(20)
    expect(now.value("mcp_ssh_auth_failures_total", { reason: "bad_signature" })).toBe(1)
    expect(now.value("mcp_ssh_config_reloads_total", { outcome: "applied" })).toBe(1)
    expect(now.value("mcp_ssh_config_reloads_total", { outcome: "failed" })).toBe(0)
    expect(now.value("mcp_ssh_key_api_requests_total", { route: "/health", status: "200" })).toBe(1)
    expect(now.value("mcp_ssh_children_running", { server: "mini", scope: "session" })).toBe(1)

    // Bytes of closed connections stay counted.
    socket.bytesRead = 15
    closeConnection()
    childGone()
    const later = new Scrape((await Effect.runPromise(metrics.scrape)).text)
    expect(later.value("mcp_ssh_bytes_total", { direction: "in" })).toBe(15)
    expect(later.value("mcp_ssh_connections_open")).toBe(0)
    expect(later.value("mcp_ssh_children_running", { server: "mini", scope: "session" })).toBe(0)
    metrics.registry.clear()
  })
})
