/**
 * Audit lines are batched off the call's path; a gateway stopped by SIGTERM must still write the line
 * of every call it answered: the layer's finalizer in-process, then the real process's log.
 */
import { Context, Effect, Either, Exit, Layer, Scope } from "effect"
import { afterEach, describe, expect, it, vi } from "vitest"
import { GatewayConfig } from "../src/gateway/config/GatewayConfig.js"
import { decodeSettings } from "../src/gateway/config/settings.js"
import { Audit, AuditLive } from "../src/gateway/session/Audit.js"
import { disposeGateway, node, type RunningGateway, startGateway } from "./support/gateway.js"
import { openSession } from "./support/ssh.js"

let gateway: RunningGateway | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
})

const auditLines = (log: string) => log.split("\n").filter((line) => /(^|\s)audit=true(\s|$)/.test(line))

/** How many audit lines say `target` was called with outcome ok. */
const okCalls = (lines: ReadonlyArray<string>, target: string) =>
  lines.filter(
    (line) =>
      line.includes(" method=tools/call ") &&
      line.includes(` target=${target} `) &&
      / outcome=ok$/.test(line),
  ).length

describe("audit lines at stop", () => {
  it("writes the lines still buffered when the audit layer's scope closes, in the same turn", () => {
    const settings = Either.getOrThrow(decodeSettings({}))
    const written: Array<string> = []
    const spy = vi.spyOn(process.stderr, "write").mockImplementation((chunk: string | Uint8Array) => {
      written.push(String(chunk))
      return true
    })
    try {
      // All synchronous: a stopping gateway may exit before another turn of the event loop.
      Effect.runSync(
        Effect.gen(function* () {
          const scope = yield* Scope.make()
          const context = yield* Layer.buildWithScope(
            AuditLive.pipe(
              Layer.provide(Layer.succeed(GatewayConfig, { configPath: "", settings, servers: [] })),
            ),
            scope,
          )
          const audit = Context.get(context, Audit)
          for (const target of ["a", "b"]) {
            audit.record({
              client: { fingerprint: "SHA256:x", username: "u", address: "a", identity: "x", groups: [] },
              server: "s",
              method: "tools/call",
              target,
              millis: 1,
              outcome: "ok",
            })
          }
          expect(written).toEqual([])
          yield* Scope.close(scope, Exit.void)
          expect(written.join("")).toMatch(/target=a .*\n.*target=b .*\n$/)
          // Recorded after the close (a call ending last): written at once.
          audit.record({
            client: { fingerprint: "SHA256:x", username: "u", address: "a", identity: "x", groups: [] },
            server: "s",
            method: "tools/call",
            target: "c",
            millis: 1,
            outcome: "ok",
          })
          expect(written.join("")).toMatch(/target=c .*\n$/)
        }),
      )
    } finally {
      spy.mockRestore()
    }
  })

  it("writes the audit line of every answered call when SIGTERM follows a burst at once", async () => {
    gateway = await startGateway({ servers: { mini: node("mini-server.mjs") } })
    const channel = await openSession(gateway, "mini")
    await channel.initialize()
    // Two targets, so the lines are matched to the calls they record, not only counted.
    const calls = Array.from({ length: 200 }, (_, index) => ({
      id: index,
      name: index % 2 === 0 ? "mini__echo" : "mini__sleep",
      arguments: index % 2 === 0 ? { message: `m${index}` } : { ms: 0 },
    }))
    // Pipelined: every request is written before any answer is awaited.
    for (const call of calls) {
      channel.send({
        jsonrpc: "2.0",
        id: call.id,
        method: "tools/call",
        params: { name: call.name, arguments: call.arguments },
      })
    }
    const answers = await Promise.all(calls.map((call) => channel.response(call.id, 20_000)))
    const exit = await gateway.stop()
    expect(exit).toEqual({ code: 0, signal: null })
    for (const answer of answers) expect(answer).toHaveProperty("result")

    const lines = auditLines(gateway.log())
    expect(okCalls(lines, "mini__echo")).toBe(100)
    expect(okCalls(lines, "mini__sleep")).toBe(100)
    // Nothing else was called over this session but initialize.
    expect(lines.filter((line) => line.includes(" method=tools/call "))).toHaveLength(200)
    expect(gateway.log()).not.toContain("m198")
  })

  it("writes the audit lines of calls answered and cut short while the gateway stops", async () => {
    gateway = await startGateway({ servers: { mini: node("mini-server.mjs") } })
    const channel = await openSession(gateway, "mini")
    await channel.initialize()
    // Slow calls first: they are still running at the stop, and their errors are answered (and
    // recorded) while the gateway winds down, the last thing it does before it exits.
    for (let id = 0; id < 20; id++) {
      channel.send({
        jsonrpc: "2.0",
        id: `slow-${id}`,
        method: "tools/call",
        params: { name: "mini__sleep", arguments: { ms: 30_000 } },
      })
    }
    for (let id = 0; id < 200; id++) {
      channel.send({
        jsonrpc: "2.0",
        id,
        method: "tools/call",
        params: { name: "mini__echo", arguments: { message: String(id) } },
      })
    }
    await channel.response(0, 20_000)
    const exit = await gateway.stop()
    expect(exit).toEqual({ code: 0, signal: null })
    await channel.exit
    const answered = channel.messages.filter(
      (message) => message.id !== "init" && ("result" in message || "error" in message),
    )
    const echoed = answered.filter((message) => typeof message.id === "number" && "result" in message)
    const cutShort = answered.filter((message) => String(message.id).startsWith("slow-"))
    expect(cutShort).toHaveLength(20)
    for (const message of cutShort) expect(message).toHaveProperty("error")

    const lines = auditLines(gateway.log())
    const callLines = lines.filter((line) => line.includes(" method=tools/call "))
    expect(okCalls(lines, "mini__echo")).toBe(echoed.length)
    // A call cut short may not know its target any more (it is recorded as the gateway's), but it is
    // recorded, and not as ok.
    const failedLines = callLines.filter((line) => !/ outcome=ok$/.test(line))
    expect(failedLines.length).toBeGreaterThanOrEqual(answered.length - echoed.length)
    expect(callLines.length).toBeGreaterThanOrEqual(answered.length)
  })
})
