/**
 * Children that hang, babble or collide: the merged session stays usable, and a configuration whose
 * names collide is refused before anyone connects.
 */
import { spawn } from "node:child_process"
import { rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  disposeGateway,
  everything,
  mainScript,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { connect, openLineChannel } from "./support/ssh.js"

describe("a session with a hanging and a noisy child", () => {
  let gateway: RunningGateway
  beforeAll(async () => {
    gateway = await startGateway({
      servers: { hangs: node("mini-server.mjs", "no-answer"), noisy: node("mini-server.mjs", "noisy") },
      flags: ["--startup-wait", "1", "--startup-timeout", "2"],
    })
  })
  afterAll(() => disposeGateway(gateway))

  it("answers initialize once the fast children are up, and serves them", async () => {
    const connection = await connect(gateway)
    const channel = await openLineChannel(connection)
    const started = Date.now()
    expect(await channel.initialize()).toMatchObject({ result: { serverInfo: { name: "mcp-ssh" } } })
    expect(Date.now() - started).toBeLessThan(2500)
    const listed = JSON.stringify(await channel.request(1, "tools/list"))
    expect(listed).toContain("noisy__echo")
    expect(listed).not.toContain("hangs__")
    expect(
      await channel.request(2, "tools/call", { name: "noisy__echo", arguments: { message: "ok" } }),
    ).toMatchObject({
      result: { content: [{ text: "ok" }] },
    })
    expect(await channel.request(3, "tools/call", { name: "hangs__echo", arguments: {} })).toMatchObject({
      error: { code: -32000, message: expect.stringMatching(/server 'hangs' is not running/) },
    })
    await gateway.waitForLog(/server 'hangs' did not answer initialize within 2s; restarting in/)
    await gateway.waitForLog(
      /ignored stdout line that is not JSON-RPC: mini-server: a log line on stdout by mistake/,
    )
    channel.channel.end()
    connection.end()
  })
})

describe("a server that takes too long", () => {
  it("answers the call with -32001 at the server's timeout and cancels it at the child", async () => {
    const gateway = await startGateway({
      servers: { slow: { ...node("mini-server.mjs"), timeout: 0.5 } },
    })
    try {
      const connection = await connect(gateway)
      const channel = await openLineChannel(connection)
      await channel.initialize()
      await channel.request(1, "tools/list")
      const started = Date.now()
      expect(
        await channel.request(2, "tools/call", { name: "slow__sleep", arguments: { ms: 5000 } }),
      ).toMatchObject({
        error: { code: -32001, message: expect.stringMatching(/did not answer request \d+ within/) },
      })
      expect(Date.now() - started).toBeLessThan(3000)
      await gateway.waitForLog(/mini-server: cancelled request \d+/)
      // Progress would have kept it alive; an answer in time is unaffected.
      expect(
        await channel.request(3, "tools/call", { name: "slow__sleep", arguments: { ms: 100 } }),
      ).toMatchObject({
        result: { content: [{ text: "slept" }] },
      })
      channel.channel.end()
      connection.end()
    } finally {
      await disposeGateway(gateway)
    }
  })
})

describe("names that collide", () => {
  it("refuse to start, naming both servers", async () => {
    const dir = tempDir()
    const configPath = join(dir, "servers_config.json")
    writeFileSync(
      configPath,
      JSON.stringify({
        mcpServers: {
          first: { ...everything, prefix: "" },
          second: { ...node("mini-server.mjs"), prefix: "" },
        },
      }),
    )
    const child = spawn(
      process.execPath,
      [
        mainScript,
        "--servers-config",
        configPath,
        "--port",
        "0",
        "--server-key",
        join(dir, "host"),
        "--authorized-clients",
        join(dir, "keys"),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    )
    let stderr = ""
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve))
    rmSync(dir, { recursive: true, force: true })
    expect(code).not.toBe(0)
    expect(stderr).toMatch(/merged names collide/)
    expect(stderr).toMatch(/'echo': tool 'echo' of server 'first' and tool 'echo' of server 'second'/)
    expect(stderr).not.toMatch(/SSH server listening/)
  })
})
