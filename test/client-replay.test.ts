/** The pure parts of reconnecting: what is replayed, whole lines only, durations and backoff. */
import { describe, expect, it } from "vitest"
import { LineGate } from "../src/client/lineGate.js"
import { reconnectDelayMs } from "../src/client/reconnect.js"
import { HostSessionState, listChangedLines, replayIdPrefix, replaySteps } from "../src/client/replay.js"
import { isProblem, parseDuration } from "../src/client/settings.js"

const line = (message: object) => `${JSON.stringify(message)}\n`
const initialize = {
  jsonrpc: "2.0",
  id: 0,
  method: "initialize",
  params: {
    protocolVersion: "2025-06-18",
    capabilities: { roots: {} },
    clientInfo: { name: "host", version: "1" },
  },
}

describe("the host's session, as the bridge remembers it", () => {
  it("replays initialize, initialized, the log level and the subscriptions, under its own ids", () => {
    const state = new HostSessionState()
    const text = [
      line(initialize),
      line({ jsonrpc: "2.0", method: "notifications/initialized" }),
      line({ jsonrpc: "2.0", id: 1, method: "logging/setLevel", params: { level: "info" } }),
      line({ jsonrpc: "2.0", id: 2, method: "resources/subscribe", params: { uri: "file:///a" } }),
      line({ jsonrpc: "2.0", id: 3, method: "resources/subscribe", params: { uri: "file:///b" } }),
      line({ jsonrpc: "2.0", id: 4, method: "resources/unsubscribe", params: { uri: "file:///a" } }),
      line({ jsonrpc: "2.0", id: 5, method: "logging/setLevel", params: { level: "debug" } }),
      line({
        jsonrpc: "2.0",
        id: 6,
        method: "tools/call",
        params: { name: "x", arguments: { note: '"initialize"' } },
      }),
    ].join("")
    // Split anywhere: lines over several chunks are put together first.
    const bytes = Buffer.from(text)
    for (let at = 0; at < bytes.length; at += 7) state.push(bytes.subarray(at, at + 7))

    const steps = replaySteps(state)
    expect(steps.map((step) => JSON.parse(step.line))).toEqual([
      { jsonrpc: "2.0", id: `${replayIdPrefix}1`, method: "initialize", params: initialize.params },
      { jsonrpc: "2.0", method: "notifications/initialized" },
      { jsonrpc: "2.0", id: `${replayIdPrefix}2`, method: "logging/setLevel", params: { level: "debug" } },
      {
        jsonrpc: "2.0",
        id: `${replayIdPrefix}3`,
        method: "resources/subscribe",
        params: { uri: "file:///b" },
      },
    ])
    expect(steps.every((step) => step.line.endsWith("\n") && !step.line.slice(0, -1).includes("\n"))).toBe(
      true,
    )
  })

  it("replays nothing for a 2026-07-28 host, which sends no initialize", () => {
    const state = new HostSessionState()
    state.push(
      Buffer.from(
        line({
          jsonrpc: "2.0",
          id: 1,
          method: "tools/list",
          params: { _meta: { "io.modelcontextprotocol/protocolVersion": "2026-07-28" } },
        }),
      ),
    )
    expect(state.hasSession).toBe(false)
    expect(replaySteps(state)).toEqual([])
  })

  it("starts over at a new initialize, and ignores lines that are not JSON or too long", () => {
    const state = new HostSessionState()
    state.push(
      Buffer.from(line({ jsonrpc: "2.0", id: 1, method: "logging/setLevel", params: { level: "info" } })),
    )
    state.push(Buffer.from('{"method":"initialize", broken\n'))
    state.push(Buffer.from(`${"x".repeat(70_000)}"initialize"\n`))
    expect(state.hasSession).toBe(false)
    state.push(Buffer.from(line(initialize)))
    expect(replaySteps(state).map((step) => JSON.parse(step.line).method)).toEqual(["initialize"])
  })

  it("tells the host to list again what the new session's server offers", () => {
    expect(listChangedLines({ capabilities: { tools: {}, resources: { subscribe: true } } })).toBe(
      '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n' +
        '{"jsonrpc":"2.0","method":"notifications/resources/list_changed"}\n',
    )
    expect(listChangedLines(undefined)).toBe("")
  })
})

describe("whole lines towards the host", () => {
  it("passes chunks that end a line as they are, and holds back a line split over chunks", () => {
    const gate = new LineGate()
    const whole = Buffer.from('{"a":1}\n{"b":2}\n')
    expect(gate.push(whole)).toBe(whole)
    expect(gate.push(Buffer.from('{"c":'))).toBeUndefined()
    expect(gate.midLine).toBe(true)
    expect(Buffer.from(gate.push(Buffer.from('3}\n{"d"')) ?? []).toString()).toBe('{"c":3}\n')
    expect(gate.midLine).toBe(true)
    expect(Buffer.from(gate.push(Buffer.from(":4}\n")) ?? []).toString()).toBe('{"d":4}\n')
    expect(gate.midLine).toBe(false)
  })
})

describe("reconnect settings", () => {
  it("reads durations in seconds, or with s, m or h", () => {
    expect(parseDuration("reconnect-timeout", "300")).toBe(300_000)
    expect(parseDuration("reconnect-timeout", "90s")).toBe(90_000)
    expect(parseDuration("reconnect-timeout", "5m")).toBe(300_000)
    expect(parseDuration("reconnect-timeout", "1h")).toBe(3_600_000)
    for (const bad of ["", "0", "-1", "5 min", "1.5m", "m"]) {
      const parsed = parseDuration("reconnect-timeout", bad)
      expect(isProblem(parsed) && parsed.problem.startsWith("--reconnect-timeout:"), bad).toBe(true)
    }
  })

  it("waits 250 ms, doubling, at most 10 s between attempts", () => {
    expect([0, 1, 2, 3, 4, 5, 6, 20].map(reconnectDelayMs)).toEqual([
      250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000,
    ])
  })
})
