/**
 * The live metrics: prom-client instruments on a Registry of the gateway's own, behind the callbacks
 * of MetricsShape. Label values a client can choose are bounded (metricLabels.ts); what is cheaper
 * to read when scraped than to count as it happens (bytes, children's memory) is read then.
 */
import { readFileSync } from "node:fs"
import { Effect } from "effect"
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client"
import { version } from "../../shared/version.js"
import { descendantsOf } from "../children/processTree.js"
import { type ByteCounts, type MetricsShape, ScrapeError } from "./Metrics.js"
import { LabelBudget, methodLabel, outcomeLabel, residentBytes, toolLabel } from "./metricLabels.js"

/** Seconds; a call through the gateway takes a few hundred µs, a slow tool a minute. */
const callBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

/** Distinct tool names labelled, at most (--metrics-tool-labels). */
const toolLabelLimit = 1000

const rssOf = (pid: number): number => {
  try {
    return residentBytes(readFileSync(`/proc/${pid}/status`, "utf8")) ?? 0
  } catch {
    return 0
  }
}

export interface MetricsOptions {
  readonly toolLabels: boolean
}

/** The live metrics on a fresh registry. */
export const makeMetrics = (options: MetricsOptions): MetricsShape & { readonly registry: Registry } => {
  const registry = new Registry()
  const registers = [registry]
  collectDefaultMetrics({ register: registry })

  new Gauge({
    name: "mcp_ssh_build_info",
    help: "Version of the gateway and of Node.js; always 1",
    labelNames: ["version", "node_version"],
    registers,
  }).set({ version, node_version: process.version }, 1)

  // Connections: live sockets are read at scrape time, closed ones were added up when they closed.
  const live = new Set<ByteCounts>()
  const closedBytes = { in: 0, out: 0 }
  const connectionsOpen = new Gauge({
    name: "mcp_ssh_connections_open",
    help: "TCP connections to the SSH port open now, authenticated or not",
    registers,
  })
  const connections = new Counter({
    name: "mcp_ssh_connections_total",
    help: "SSH connections by how their login ended: authenticated, refused (never authenticated), limited (over --max-startups)",
    labelNames: ["outcome"],
    registers,
  })
  for (const outcome of ["authenticated", "refused", "limited"]) connections.inc({ outcome }, 0)
  const authFailures = new Counter({
    name: "mcp_ssh_auth_failures_total",
    help: "Failed authentication attempts by reason: method (not publickey), unknown_key, algorithm, bad_signature",
    labelNames: ["reason"],
    registers,
  })
  for (const reason of ["method", "unknown_key", "algorithm", "bad_signature"])
    authFailures.inc({ reason }, 0)
  new Counter({
    name: "mcp_ssh_bytes_total",
    help: "Bytes on the SSH connections (encrypted, as on the wire), by direction: in (received), out (sent)",
    labelNames: ["direction"],
    registers,
    collect() {
      let bytesIn = closedBytes.in
      let bytesOut = closedBytes.out
      for (const socket of live) {
        bytesIn += socket.bytesRead
        bytesOut += socket.bytesWritten
      }
      this.reset()
      this.inc({ direction: "in" }, bytesIn)
      this.inc({ direction: "out" }, bytesOut)
    },
  })

  const sessionsOpen = new Gauge({ name: "mcp_ssh_sessions_open", help: "MCP sessions open now", registers })
  const sessions = new Counter({ name: "mcp_ssh_sessions_total", help: "MCP sessions opened", registers })

  const callLabels = options.toolLabels
    ? ["server", "method", "outcome", "tool"]
    : ["server", "method", "outcome"]
  const calls = new Counter({
    name: "mcp_ssh_calls_total",
    help: "Requests answered or cancelled, by server (gateway: answered by the gateway itself), method and outcome (ok, error, cancelled)",
    labelNames: callLabels,
    registers,
  })
  const callSeconds = new Histogram({
    name: "mcp_ssh_call_duration_seconds",
    help: "Time from a request to its answer or cancellation, by server, method and outcome",
    labelNames: callLabels,
    buckets: callBuckets,
    registers,
  })
  const callsInFlight = new Gauge({
    name: "mcp_ssh_calls_in_flight",
    help: "Requests in progress now",
    registers,
  })
  const callsLimited = new Counter({
    name: "mcp_ssh_calls_limited_total",
    help: "Requests refused because their session already had the most requests in progress allowed",
    registers,
  })
  /** One labels object per series, made once: the call path only looks it up. */
  const seriesLabels = new Map<string, Record<string, string>>()
  const tools = new LabelBudget(toolLabelLimit)

  // Children: the pids the gateway started, read from /proc at scrape time.
  const children = new Map<number, { readonly server: string; readonly scope: string }>()
  const childrenRunning = new Gauge({
    name: "mcp_ssh_children_running",
    help: "Child MCP server processes running now, by server and scope",
    labelNames: ["server", "scope"],
    registers,
  })
  const childStarts = new Counter({
    name: "mcp_ssh_child_starts_total",
    help: "Child MCP server processes started for sessions, by server",
    labelNames: ["server"],
    registers,
  })
  const childRestarts = new Counter({
    name: "mcp_ssh_child_restarts_total",
    help: "Restarts of a session's child after it stopped or failed to start, by server",
    labelNames: ["server"],
    registers,
  })
  const childCrashes = new Counter({
    name: "mcp_ssh_child_crashes_total",
    help: "Children that exited while up without being asked to, by server",
    labelNames: ["server"],
    registers,
  })
  new Gauge({
    name: "mcp_ssh_child_rss_bytes",
    help: "Resident memory of the running children and the processes below them, by server and scope",
    labelNames: ["server", "scope"],
    registers,
    collect() {
      this.reset()
      for (const [pid, { server, scope }] of children) {
        const below = descendantsOf(pid).reduce((sum, found) => sum + rssOf(found.pid), 0)
        this.inc({ server, scope }, rssOf(pid) + below)
      }
    },
  })

  const keyApiRequests = new Counter({
    name: "mcp_ssh_key_api_requests_total",
    help: "Key API requests by route (other: a path the API does not define) and status",
    labelNames: ["route", "status"],
    registers,
  })
  const reloads = new Counter({
    name: "mcp_ssh_config_reloads_total",
    help: "Configuration reloads by outcome: applied, unchanged, failed",
    labelNames: ["outcome"],
    registers,
  })
  for (const outcome of ["applied", "unchanged", "failed"]) reloads.inc({ outcome }, 0)

  return {
    enabled: true,
    registry,
    scrape: Effect.tryPromise({
      try: () => registry.metrics(),
      catch: (error) => new ScrapeError({ reason: error instanceof Error ? error.message : String(error) }),
    }).pipe(Effect.map((text) => ({ contentType: registry.contentType, text }))),
    connectionOpened: (socket) => {
      live.add(socket)
      connectionsOpen.inc()
      let open = true
      return () => {
        if (!open) return
        open = false
        live.delete(socket)
        closedBytes.in += socket.bytesRead
        closedBytes.out += socket.bytesWritten
        connectionsOpen.dec()
      }
    },
    connectionOutcome: (outcome) => connections.inc({ outcome }),
    authFailed: (reason) => authFailures.inc({ reason }),
    sessionOpened: () => {
      sessions.inc()
      sessionsOpen.inc()
      let open = true
      return () => {
        if (!open) return
        open = false
        sessionsOpen.dec()
      }
    },
    callStarted: () => {
      callsInFlight.inc()
      return performance.now()
    },
    callEnded: (started, server, method, target, outcome) => {
      callsInFlight.dec()
      const methodName = methodLabel(method)
      const result = outcomeLabel(outcome)
      const tool = options.toolLabels ? toolLabel(tools, server, method, target) : ""
      const key = `${server ?? "gateway"}\n${methodName}\n${result}\n${tool}`
      let labels = seriesLabels.get(key)
      if (labels === undefined) {
        labels = { server: server ?? "gateway", method: methodName, outcome: result }
        if (options.toolLabels) labels.tool = tool
        seriesLabels.set(key, labels)
      }
      calls.inc(labels)
      callSeconds.observe(labels, (performance.now() - started) / 1000)
    },
    callLimited: () => callsLimited.inc(),
    childStarted: (server, scope, pid) => {
      if (pid !== undefined) children.set(pid, { server, scope })
      childStarts.inc({ server })
      childrenRunning.inc({ server, scope })
      let running = true
      return () => {
        if (!running) return
        running = false
        if (pid !== undefined) children.delete(pid)
        childrenRunning.dec({ server, scope })
      }
    },
    childRestarted: (server) => childRestarts.inc({ server }),
    childCrashed: (server) => childCrashes.inc({ server }),
    keyApiRequest: (route, status) => keyApiRequests.inc({ route, status: String(status) }),
    reloaded: (outcome) => reloads.inc({ outcome }),
  }
}
