/**
 * What a reconnecting bridge must tell a new gateway session so that the host can go on as if
 * nothing happened: the host's own `initialize` and `notifications/initialized`, its log level and
 * its resource subscriptions. Learnt from the host's lines as they pass (only the few lines that
 * matter are parsed), replayed under the bridge's own ids so that no answer reaches the host twice.
 * A 2026-07-28 host sends no `initialize`: it keeps no session state, and nothing is replayed.
 */
import { isObject, type JsonObject } from "../shared/jsonRpc.js"

const NEWLINE = 0x0a
/** A line longer than this is no initialize, setLevel or subscribe worth keeping. */
const maxRecordedLineBytes = 64 * 1024
const replayedMethods = [
  "initialize",
  "notifications/initialized",
  "logging/setLevel",
  "resources/subscribe",
  "resources/unsubscribe",
] as const
const markers = replayedMethods.map((method) => Buffer.from(`"${method}"`))

/** The prefix of the ids the bridge uses for its own requests; the host never sees their answers. */
export const replayIdPrefix = "mcp-ssh-client/replay/"

export class HostSessionState {
  initialize: JsonObject | undefined
  initialized = false
  logLevel: string | undefined
  readonly subscriptions = new Set<string>()

  private line: Array<Uint8Array> = []
  private lineBytes = 0
  private tooLong = false

  /** Watch a chunk of what the host sends; complete lines that matter are parsed and remembered. */
  push(chunk: Uint8Array): void {
    let start = 0
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start)
      const end = newline === -1 ? chunk.length : newline
      if (!this.tooLong) {
        if (this.lineBytes + (end - start) > maxRecordedLineBytes) {
          this.tooLong = true
          this.line = []
        } else {
          this.line.push(chunk.subarray(start, end))
          this.lineBytes += end - start
        }
      }
      if (newline === -1) return
      if (!this.tooLong) this.record(Buffer.concat(this.line))
      this.line = []
      this.lineBytes = 0
      this.tooLong = false
      start = newline + 1
    }
  }

  /** Whether the host started a 2025-era session the gateway must be told of again. */
  get hasSession(): boolean {
    return this.initialize !== undefined
  }

  private record(line: Buffer): void {
    if (!markers.some((marker) => line.includes(marker))) return
    let message: unknown
    try {
      message = JSON.parse(line.toString("utf8"))
    } catch {
      return
    }
    if (!isObject(message) || typeof message.method !== "string") return
    const params = isObject(message.params) ? message.params : {}
    switch (message.method) {
      case "initialize":
        this.initialize = params
        this.initialized = false
        this.logLevel = undefined
        this.subscriptions.clear()
        return
      case "notifications/initialized":
        this.initialized = true
        return
      case "logging/setLevel":
        if (typeof params.level === "string") this.logLevel = params.level
        return
      case "resources/subscribe":
        if (typeof params.uri === "string") this.subscriptions.add(params.uri)
        return
      case "resources/unsubscribe":
        if (typeof params.uri === "string") this.subscriptions.delete(params.uri)
        return
    }
  }
}

export interface ReplayStep {
  /** The line to send to the gateway. */
  readonly line: string
  /** The id its answer comes back with (a notification has none). */
  readonly id: string | undefined
}

/** The lines that bring a new session to where the host's last one was, in order. */
export const replaySteps = (state: HostSessionState): ReadonlyArray<ReplayStep> => {
  if (state.initialize === undefined) return []
  let next = 0
  const request = (method: string, params: JsonObject): ReplayStep => {
    const id = `${replayIdPrefix}${++next}`
    return { id, line: `${JSON.stringify({ jsonrpc: "2.0", id, method, params })}\n` }
  }
  const steps: Array<ReplayStep> = [request("initialize", state.initialize)]
  if (state.initialized) {
    steps.push({ id: undefined, line: '{"jsonrpc":"2.0","method":"notifications/initialized"}\n' })
  }
  if (state.logLevel !== undefined) steps.push(request("logging/setLevel", { level: state.logLevel }))
  for (const uri of state.subscriptions) steps.push(request("resources/subscribe", { uri }))
  return steps
}

/**
 * What the host is told once the new session is up: its lists may differ (another replica, a
 * reloaded config), so it lists again. Only the kinds the new session's server declares.
 */
export const listChangedLines = (initializeResult: unknown): string => {
  const capabilities =
    isObject(initializeResult) && isObject(initializeResult.capabilities) ? initializeResult.capabilities : {}
  return (["tools", "prompts", "resources"] as const)
    .filter((kind) => capabilities[kind] !== undefined)
    .map((kind) => `{"jsonrpc":"2.0","method":"notifications/${kind}/list_changed"}\n`)
    .join("")
}
