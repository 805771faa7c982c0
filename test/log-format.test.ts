/**
 * --log-format json: every line the gateway writes is one JSON object, in the shape of Effect's JSON
 * logger (message, logLevel, timestamp, annotations), audit lines included, ready for log shippers.
 */
import { afterEach, describe, expect, it } from "vitest"
import { disposeGateway, node, type RunningGateway, startGateway } from "./support/gateway.js"
import { openSession } from "./support/ssh.js"

let gateway: RunningGateway | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
})

interface JsonLine {
  readonly message: unknown
  readonly logLevel: string
  readonly timestamp: string
  readonly annotations: Readonly<Record<string, unknown>>
}

const parseLines = (log: string): ReadonlyArray<JsonLine> =>
  log
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as JsonLine)

describe("--log-format json", () => {
  it("writes every line, audit lines included, as one JSON object", async () => {
    const running = await startGateway({
      servers: { mini: node("mini-server.mjs") },
      flags: ["--log-format", "json"],
    })
    gateway = running
    const channel = await openSession(running, "mini")
    await channel.initialize()
    expect(
      await channel.request("call", "tools/call", { name: "mini__echo", arguments: { message: "hi" } }),
    ).toMatchObject({ result: { content: [{ text: "hi" }] } })
    channel.channel.end()
    await channel.exit
    expect(await running.stop()).toEqual({ code: 0, signal: null })

    const lines = parseLines(running.log())
    for (const line of lines) {
      expect(typeof line.message === "string" || Array.isArray(line.message)).toBe(true)
      expect(line.logLevel).toMatch(/^(TRACE|DEBUG|INFO|WARN|ERROR|FATAL)$/)
      expect(Number.isNaN(Date.parse(line.timestamp))).toBe(false)
      expect(typeof line.annotations).toBe("object")
    }
    expect(lines.some((line) => String(line.message).startsWith("SSH server listening on"))).toBe(true)
    const audits = lines.filter((line) => line.annotations.audit === true)
    expect(audits).toContainEqual(
      expect.objectContaining({
        message: "call",
        logLevel: "INFO",
        annotations: expect.objectContaining({
          client: expect.stringMatching(/^SHA256:/),
          server: "mini",
          method: "tools/call",
          target: "mini__echo",
          ms: expect.any(Number),
          outcome: "ok",
        }),
      }),
    )
    // Arguments and results never reach the log.
    expect(JSON.stringify(audits)).not.toContain('"hi"')
  })

  it("is logfmt by default", async () => {
    gateway = await startGateway({ servers: { mini: node("mini-server.mjs") } })
    expect(gateway.log()).toMatch(/^timestamp=\S+ level=INFO /m)
    expect(() => JSON.parse(gateway?.log().split("\n")[0] ?? "")).toThrow()
  })
})
