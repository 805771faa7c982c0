/**
 * Label values for the metrics, without IO. Clients choose methods and tool names, so every label a
 * client can influence is bounded here: an attacker must not be able to grow the series (and the
 * gateway's memory) without end.
 */
import type { AuthFailureReason } from "./Metrics.js"

/** The client-to-server requests of MCP (2025-06-18 to 2026-07-28); any other method is "other". */
export const knownCallMethods: ReadonlySet<string> = new Set([
  "initialize",
  "ping",
  "server/discover",
  "subscriptions/listen",
  "tools/list",
  "tools/call",
  "prompts/list",
  "prompts/get",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "resources/subscribe",
  "resources/unsubscribe",
  "completion/complete",
  "logging/setLevel",
  "tasks/get",
  "tasks/list",
  "tasks/result",
  "tasks/cancel",
])

export const methodLabel = (method: string): string => (knownCallMethods.has(method) ? method : "other")

/** Methods whose target is a tool or prompt name (the only targets that may become a label). */
const namedMethods: ReadonlySet<string> = new Set(["tools/call", "prompts/get"])

/**
 * A label that takes at most `limit` distinct values; later new values share "other". Tool names a
 * server lists are few, but a name under a stopped server's prefix is echoed back as the target.
 */
export class LabelBudget {
  private readonly seen = new Set<string>()

  constructor(private readonly limit: number) {}

  label(value: string): string {
    if (this.seen.has(value)) return value
    if (this.seen.size >= this.limit) return "other"
    this.seen.add(value)
    return value
  }
}

/** The tool label of a call: its tool or prompt name when it reached a server, else "". */
export const toolLabel = (
  budget: LabelBudget,
  server: string | undefined,
  method: string,
  target: string | undefined,
): string =>
  server === undefined || target === undefined || !namedMethods.has(method) ? "" : budget.label(target)

/** A call's outcome as a label: the audit line's "error -32601" is just "error" here. */
export const outcomeLabel = (outcome: string): "ok" | "error" | "cancelled" =>
  outcome === "ok" || outcome === "cancelled" ? outcome : "error"

/** The key API's route label: a path the API defines, else "other" (unknown paths are unbounded). */
export const routeLabel = (knownPaths: ReadonlySet<string>, url: string): string => {
  const path = url.split("?")[0] ?? ""
  return knownPaths.has(path) ? path : "other"
}

/** Bytes of VmRSS in a /proc/PID/status text (given in kB there), or undefined. */
export const residentBytes = (status: string): number | undefined => {
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status)
  return match?.[1] === undefined ? undefined : Number(match[1]) * 1024
}

/** A login refusal's fixed code (loginDecision.ts) as the few reasons the metrics count. */
export const authFailureReason = (code: string): AuthFailureReason => {
  if (code === "bad signature") return "bad_signature"
  if (code === "algorithm" || code === "certificate algorithm mismatch") return "algorithm"
  if (code === "revoked" || code === "certificate revoked" || code === "revoked keys unusable")
    return "revoked"
  if (code.startsWith("key line")) return "key_options"
  if (code.startsWith("certificate")) return "certificate"
  return "unknown_key"
}
