/**
 * A session keeps only the current life of each child reachable: every restart is a new connection,
 * and nothing the session holds (routing, waiting calls, requests in progress) may keep the earlier
 * ones, or a child that crashes often grows the session's memory for as long as it lasts.
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { describe, expect, it } from "@effect/vitest"
import { Effect, TestClock } from "effect"
import {
  advanceUntil,
  modernEnvelope,
  startGateway,
  type TestClient,
  type ToolCall,
} from "../support/inprocess/index.js"

setFlagsFromString("--expose-gc")
const collectGarbage = runInNewContext("gc") as () => void

/** Collect twice, a turn of the event loop apart: WeakRefs read in a turn hold their target until it ends. */
const collect = Effect.promise(async () => {
  for (let round = 0; round < 2; round++) {
    collectGarbage()
    await new Promise((resolve) => setImmediate(resolve))
  }
})

const servers = { flaky: { tools: [{ name: "boom", run: (call: ToolCall) => call.crash(3) }] } }
const restarts = 50

/** Call the crashing tool once its child is up again (the restart backoff runs on the TestClock). */
const crashOnce = (client: TestClient, id: number, modern: boolean) =>
  advanceUntil(
    client.request(id, "tools/call", {
      name: "flaky__boom",
      arguments: {},
      ...(modern ? { _meta: modernEnvelope() } : {}),
    }),
    { step: "250 millis", limit: "120 seconds" },
  )

const liveLives = (lives: ReadonlyArray<WeakRef<object>>) =>
  lives.filter((life) => life.deref() !== undefined).length

describe("a child restarted many times in one session", () => {
  for (const modern of [false, true]) {
    it.scoped(`keeps only its current life reachable (${modern ? "2026-07-28" : "2025"} client)`, () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({ servers })
        const client = yield* gateway.connect()
        if (!modern) yield* client.initialize()
        let id = 0
        for (let life = 0; life < restarts; life++) {
          const response = yield* crashOnce(client, ++id, modern)
          expect(response).toMatchObject({ error: { code: -32000 } })
          // A call that finds the child still down is answered at once: let its backoff (at most
          // 30 s) pass and call again; it is the crashes we count.
          if (JSON.stringify(response).includes("is not running")) {
            yield* TestClock.adjust("30 seconds")
            life--
          }
        }
        const child = gateway.child("flaky")
        expect(child.lives().length).toBeGreaterThanOrEqual(restarts)
        yield* collect
        // The probe's life and the one running now may still be held; none of the crashed ones.
        expect(liveLives(child.lives())).toBeLessThanOrEqual(2)
      }),
    )
  }
})
