/** What /ready and /health say in each state: the pure rules (ops/readiness.ts) and GatewayStatus. */
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect, Either, Layer } from "effect"
import { describe, expect, it } from "vitest"
import { GatewayConfig } from "../src/gateway/config/GatewayConfig.js"
import { decodeSettings } from "../src/gateway/config/settings.js"
import { Drain, DrainLive } from "../src/gateway/ops/Drain.js"
import { GatewayStatus, GatewayStatusLive, readyResponse } from "../src/gateway/ops/GatewayStatus.js"
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

describe("GatewayStatus", () => {
  const settings = Either.getOrThrow(decodeSettings({}))
  const server = {
    name: "a",
    command: "a",
    args: [],
    env: {},
    cwd: undefined,
    prefix: undefined,
    requestTimeout: 60,
  }
  const layer = GatewayStatusLive.pipe(
    Layer.provideMerge(DrainLive),
    Layer.provide(Layer.succeed(GatewayConfig, { configPath: "", settings, servers: [server] })),
  )
  const bodyOf = (response: HttpServerResponse.HttpServerResponse) =>
    response.body._tag === "Uint8Array" ? JSON.parse(new TextDecoder().decode(response.body.body)) : undefined

  it("goes from starting to ready to draining, and serves /ready to any listener", () =>
    Effect.runPromise(
      Effect.gen(function* () {
        const status = yield* GatewayStatus
        const starting = yield* readyResponse
        expect(starting.status).toBe(503)
        expect(bodyOf(starting)).toMatchObject({ state: "starting" })
        expect((yield* status.snapshot).servers).toEqual([["a", { state: "starting" }]])

        yield* status.serving({ address: "::1", family: "IPv6", port: 8022 }, () => [["a", { state: "up" }]])
        const ready = yield* status.snapshot
        expect(ready).toEqual({
          state: "ready",
          ssh: { listening: true, address: "[::1]:8022" },
          servers: [["a", { state: "up" }]],
        })
        expect((yield* readyResponse).status).toBe(200)

        yield* (yield* Drain).run(Effect.never)
        expect(yield* status.snapshot).toMatchObject({ state: "draining", ssh: { listening: false } })
        expect(bodyOf(yield* readyResponse)).toEqual({
          error: "the gateway is shutting down",
          state: "draining",
        })
      }).pipe(Effect.provide(layer)),
    ))
})
