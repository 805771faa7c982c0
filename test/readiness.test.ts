/** What /ready and /health say in each state, from the pure rules (ops/readiness.ts). */
import { describe, expect, it } from "vitest"
import {
  gatewayState,
  readyAnswer,
  type ServerStartState,
  shortReason,
} from "../src/gateway/ops/readiness.js"

const up: ServerStartState = { state: "up" }
const failed: ServerStartState = { state: "failed", reason: "exited with status 7" }

describe("the gateway's state", () => {
  it("is starting until it serves, ready once it does, draining above all", () => {
    const servers = [["a", up] as const]
    expect(gatewayState({ serving: false, draining: false, servers })).toBe("starting")
    expect(gatewayState({ serving: true, draining: false, servers })).toBe("ready")
    expect(gatewayState({ serving: true, draining: true, servers })).toBe("draining")
    expect(gatewayState({ serving: false, draining: true, servers })).toBe("draining")
  })

  it("is not ready when every server failed its probe; one up is enough", () => {
    expect(gatewayState({ serving: true, draining: false, servers: [["a", failed]] })).toBe(
      "no_server_can_start",
    )
    expect(
      gatewayState({
        serving: true,
        draining: false,
        servers: [
          ["a", failed],
          ["b", up],
        ],
      }),
    ).toBe("ready")
  })

  it("answers /ready with 200 only when ready, else 503 with the reason as `error`", () => {
    expect(readyAnswer("ready")).toEqual({ status: 200, body: { status: "ready" } })
    for (const state of ["starting", "draining", "no_server_can_start"] as const) {
      const answer = readyAnswer(state)
      expect(answer.status).toBe(503)
      expect(answer.body).toMatchObject({ state, error: expect.any(String) })
    }
  })

  it("shows a probe failure's first line, bounded", () => {
    expect(shortReason("spawn ENOENT\n    at stack")).toBe("spawn ENOENT")
    expect(shortReason("x".repeat(500))).toHaveLength(200)
  })
})
