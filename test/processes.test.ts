/**
 * No child outlives its session or the gateway, and children see only the environment the config
 * gives them. Checked in the real process table.
 */
import { spawn } from "node:child_process"
import { afterEach, describe, expect, it } from "vitest"
import { disposeGateway, node, type RunningGateway, startGateway } from "./support/gateway.js"
import {
  childrenOf,
  isRunning,
  membersOfGroups,
  onlyChildOf,
  signalProcess,
  waitUntil,
} from "./support/processes.js"
import { connect, openLineChannel, opensshArgs } from "./support/ssh.js"

let gateway: RunningGateway | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
})

const openSession = async (running: RunningGateway, server: string) => {
  const connection = await connect(running)
  const channel = await openLineChannel(connection, { exec: server })
  await channel.initialize()
  return { connection, channel }
}

describe("child processes", () => {
  it("ends the child when its session closes", async () => {
    gateway = await startGateway({ servers: { mini: node("mini-server.mjs") } })
    const { connection, channel } = await openSession(gateway, "mini")
    const child = onlyChildOf(gateway.pid)
    channel.channel.end()
    expect(await channel.exit).toBe(0)
    await waitUntil(() => !isRunning(child), 5000, "the child to end")
    connection.end()
  })

  it("ends every child when the gateway gets SIGTERM in the middle of calls, and exits 0", async () => {
    gateway = await startGateway({ servers: { mini: node("mini-server.mjs") } })
    const sessions = await Promise.all([openSession(gateway, "mini"), openSession(gateway, "mini")])
    for (const { channel } of sessions) {
      channel.send({
        jsonrpc: "2.0",
        id: "slow",
        method: "tools/call",
        params: { name: "mini__sleep", arguments: { ms: 30_000 } },
      })
    }
    const children = childrenOf(gateway.pid)
    expect(children).toHaveLength(2)
    // The children read requests in order: once a later echo is answered, the slow calls are under way.
    for (const { channel } of sessions) {
      await channel.request("after", "tools/call", { name: "mini__echo", arguments: { message: "hi" } })
    }
    const exit = await gateway.stop()
    expect(exit).toEqual({ code: 0, signal: null })
    for (const { channel } of sessions) {
      // The call in progress gets an error rather than silence, then the channel closes.
      expect(await channel.response("slow", 1000)).toMatchObject({ error: { code: -32000 } })
      await channel.exit
    }
    for (const child of children) expect(isRunning(child)).toBe(false)
    // Each child led its own process group; nothing of those groups is left either.
    expect(membersOfGroups(children)).toEqual([])
  })

  it("kills a child that ignores SIGTERM once the stop timeout has passed", async () => {
    gateway = await startGateway({ servers: { stubborn: node("mini-server.mjs", "ignore-term") } })
    const { connection, channel } = await openSession(gateway, "stubborn")
    const child = onlyChildOf(gateway.pid)
    channel.channel.end()
    await channel.exit
    await waitUntil(() => !isRunning(child), 6000, "the stubborn child to be killed")
    await gateway.waitForLog(/did not stop after SIGTERM: killed its process group/)
    connection.end()
  })

  it("restarts a child killed from outside, and leaves nothing behind", async () => {
    const running = await startGateway({ servers: { mini: node("mini-server.mjs") } })
    gateway = running
    const { connection, channel } = await openSession(running, "mini")
    const child = onlyChildOf(running.pid)
    signalProcess(child, "SIGKILL")
    await running.waitForLog(/server 'mini' exited on SIGKILL; restarting in/)
    await waitUntil(() => childrenOf(running.pid).some((pid) => pid !== child), 5000, "a new child")
    await waitUntil(
      () => (running.log().match(/server 'mini' is up/g) ?? []).length >= 2,
      5000,
      "the restart",
    )
    expect(
      await channel.request(1, "tools/call", { name: "mini__echo", arguments: { message: "again" } }),
    ).toMatchObject({
      result: { content: [{ text: "again" }] },
    })
    channel.channel.end()
    await channel.exit
    await waitUntil(() => childrenOf(running.pid).length === 0, 5000, "no child left")
    connection.end()
  })
})

describe("when the gateway is killed outright", () => {
  it("no child survives a SIGKILL of the gateway, even one that ignores SIGTERM", async () => {
    gateway = await startGateway({
      servers: { stubborn: node("mini-server.mjs", "ignore-term"), mini: node("mini-server.mjs") },
    })
    const { connection, channel } = await openSession(gateway, "")
    await channel.request("tools", "tools/list")
    const children = childrenOf(gateway.pid)
    expect(children).toHaveLength(2)
    signalProcess(gateway.pid, "SIGKILL")
    await gateway.exited
    await waitUntil(() => children.every((pid) => !isRunning(pid)), 8000, "the children to be reaped")
    expect(membersOfGroups(children)).toEqual([])
    connection.end()
  })
})

describe("child environment", () => {
  it("gives the child the safe set and its configured env, not the gateway's secrets or the client's", async () => {
    gateway = await startGateway({
      servers: {
        mini: { ...node("mini-server.mjs"), env: { API_TOKEN: "${TOKEN_SOURCE}", PLAIN: "value $$5" } },
      },
      env: { TOKEN_SOURCE: "from-gateway-env", GATEWAY_SECRET: "must-not-leak" },
    })
    const ssh = spawn("ssh", [...opensshArgs(gateway), "-o", "SetEnv=INJECTED_BY_CLIENT=1", "mini"], {
      stdio: ["pipe", "pipe", "pipe"],
    })
    let output = ""
    ssh.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString()
    })
    ssh.stdin.write(
      `${JSON.stringify({ jsonrpc: "2.0", id: 0, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "env-test", version: "1" } } })}\n`,
    )
    ssh.stdin.write(
      `${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "mini__env", arguments: {} } })}\n`,
    )
    // The first complete line answering id 1 (the initialize answer comes before it).
    const answer = () =>
      output
        .split("\n")
        .slice(0, -1)
        .find((line) => line.includes('"id":1,'))
    await waitUntil(() => answer() !== undefined, 10_000, "the env tool's answer")
    ssh.stdin.end()
    const line = answer()
    const response = JSON.parse(line ?? "") as {
      result: { content: Array<{ text: string }> }
    }
    const env = JSON.parse(response.result.content[0]?.text ?? "{}") as Record<string, string>
    expect(env.API_TOKEN).toBe("from-gateway-env")
    expect(env.PLAIN).toBe("value $5")
    expect(env.PATH).toBeDefined()
    expect(env.GATEWAY_SECRET).toBeUndefined()
    expect(env.TOKEN_SOURCE).toBeUndefined()
    expect(env.INJECTED_BY_CLIENT).toBeUndefined()
    await gateway.waitForLog(/refused env request/)
  })
})
