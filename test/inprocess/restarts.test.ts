/**
 * A child that crashes or cannot start: its calls fail naming it, its entries vanish and come back
 * with list_changed, and it restarts after a backoff of 250 ms doubling up to 30 s (on the TestClock).
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, TestClock } from "effect"
import {
  type InProcessGateway,
  startGateway,
  type TestClient,
  type ToolCall,
  text,
  toolNames,
} from "../support/inprocess/index.js"

const servers = {
  crashing: {
    tools: [{ name: "echo" }, { name: "boom", run: (call: ToolCall) => call.crash(3) }],
  },
  steady: { tools: [{ name: "echo" }] },
}

const listChanged = (client: TestClient) => client.notification("notifications/tools/list_changed")

/** Move the clock to just before the restart (no new start), then to it (the child comes back). */
const restartAfter = (gateway: InProcessGateway, client: TestClient, delay: Duration.Duration) =>
  Effect.gen(function* () {
    const child = gateway.child("crashing")
    const startsBefore = child.starts()
    yield* TestClock.adjust(Duration.subtract(delay, Duration.millis(1)))
    expect(child.starts()).toBe(startsBefore)
    yield* TestClock.adjust(Duration.millis(1))
    yield* listChanged(client)
    expect(child.starts()).toBe(startsBefore + 1)
  })

describe("restarts", () => {
  it.scoped(
    "fails the call of a child that crashes mid-call, hides its entries, and restarts it after the backoff",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({ servers })
        const client = yield* gateway.connect()
        yield* client.initialize()
        expect(yield* toolNames(client, 1)).toEqual(["crashing__echo", "crashing__boom", "steady__echo"])
        expect(
          yield* client.request(2, "tools/call", { name: "crashing__boom", arguments: { message: "boom" } }),
        ).toMatchObject({
          error: { code: -32000, message: expect.stringMatching(/server 'crashing' exited with code 3/) },
        })
        // One list_changed when it goes down, one when it is back.
        yield* listChanged(client)
        expect(yield* toolNames(client, 3)).toEqual(["steady__echo"])
        expect(
          yield* client.request(4, "tools/call", { name: "crashing__echo", arguments: {} }),
        ).toMatchObject({
          error: {
            code: -32000,
            message: expect.stringMatching(
              /server 'crashing' is not running: server 'crashing' exited with code 3; restarting in 250ms/,
            ),
          },
        })
        expect(
          yield* client.request(5, "tools/call", { name: "steady__echo", arguments: { message: "on" } }),
        ).toMatchObject({ result: text("on") })
        yield* restartAfter(gateway, client, Duration.millis(250))
        expect(yield* toolNames(client, 6)).toEqual(["crashing__echo", "crashing__boom", "steady__echo"])
        expect(
          yield* client.request(7, "tools/call", { name: "crashing__echo", arguments: { message: "back" } }),
        ).toMatchObject({ result: text("back") })
        expect(client.messages.filter((m) => m.method === "notifications/tools/list_changed")).toHaveLength(2)
      }),
  )

  it.scoped(
    "restarts a child that crashes again and again, doubling the wait up to 30 s, and it still serves",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({ servers })
        const client = yield* gateway.connect()
        yield* client.initialize()
        const child = gateway.child("crashing")
        const delays = [250, 500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000]
        for (const [round, millis] of delays.entries()) {
          yield* child.crash(1)
          yield* listChanged(client)
          expect(
            yield* client.request(`down-${round}`, "tools/call", { name: "crashing__echo", arguments: {} }),
          ).toMatchObject({
            error: {
              message: expect.stringMatching(`restarting in ${Duration.format(Duration.millis(millis))}`),
            },
          })
          yield* restartAfter(gateway, client, Duration.millis(millis))
        }
        expect(
          yield* client.request("last", "tools/call", {
            name: "crashing__echo",
            arguments: { message: "still here" },
          }),
        ).toMatchObject({ result: text("still here") })
        // Each life was announced once going down and once coming up, and the child was initialized each time.
        expect(client.messages.filter((m) => m.method === "notifications/tools/list_changed")).toHaveLength(
          2 * delays.length,
        )
        const initializes = child.received.filter((m) => m.method === "initialize")
        // The probe at gateway start, the session's first start, and one per restart.
        expect(initializes).toHaveLength(2 + delays.length)
        expect(child.received.filter((m) => m.method === "notifications/initialized")).toHaveLength(
          2 + delays.length,
        )
      }),
  )

  it.scoped("serves the others while a child cannot start, and takes it in once it can", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({
        servers: { ...servers, crashing: { ...servers.crashing, failStart: "no such command" } },
      })
      const client = yield* gateway.connect()
      yield* client.initialize()
      expect(yield* toolNames(client, 1)).toEqual(["steady__echo"])
      expect(yield* client.request(2, "tools/call", { name: "crashing__echo", arguments: {} })).toMatchObject(
        {
          error: {
            code: -32000,
            message: expect.stringMatching(
              /server 'crashing' is not running: server 'crashing' could not start: no such command/,
            ),
          },
        },
      )
      // Nothing announced yet: the client never had its entries.
      expect(client.messages.filter((m) => m.method === "notifications/tools/list_changed")).toEqual([])
      yield* restartAfterFailure(gateway, Duration.millis(250))
      gateway.child("crashing").failStarts(undefined)
      yield* restartAfter(gateway, client, Duration.millis(500))
      expect(yield* toolNames(client, 3)).toEqual(["crashing__echo", "crashing__boom", "steady__echo"])
    }),
  )
})

/** The next start comes at the backoff and fails again. */
const restartAfterFailure = (gateway: InProcessGateway, delay: Duration.Duration) =>
  Effect.gen(function* () {
    const child = gateway.child("crashing")
    const startsBefore = child.starts()
    yield* TestClock.adjust(Duration.subtract(delay, Duration.millis(1)))
    expect(child.starts()).toBe(startsBefore)
    yield* TestClock.adjust(Duration.millis(1))
    yield* gateway.logs.waitFor((line) => line.includes("restarting in 500ms"))
    expect(child.starts()).toBe(startsBefore + 1)
  })
