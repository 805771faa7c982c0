/**
 * mcp-ssh-client when its connection is lost: requests in flight get -32000, then it connects
 * again, replays the host's session (its initialize, log level and subscriptions) under its own ids,
 * tells the host to list again, and goes on; stdout never carries a duplicate or a partial message.
 * The connection is cut by a TCP relay between client and gateway, so the gateway itself stays up.
 */
import { writeFileSync } from "node:fs"
import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { initializeRequest, type RunningClient, startClient } from "./support/client.js"
import { disposeGateway, node, type RunningGateway, startGateway, tempDir } from "./support/gateway.js"
import { hostPublicKey } from "./support/ssh.js"

/** A TCP relay to the gateway that can cut every connection through it, or stop taking new ones. */
class CuttableRelay {
  private readonly sockets = new Set<Socket>()
  private server: Server | undefined
  port = 0

  constructor(private readonly target: number) {}

  async start(port = 0): Promise<void> {
    const server = createServer((client) => {
      const upstream = tcpConnect(this.target, "127.0.0.1")
      for (const socket of [client, upstream]) {
        this.sockets.add(socket)
        socket.on("error", () => {})
        socket.on("close", () => this.sockets.delete(socket))
      }
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve))
    const address = server.address()
    this.port = typeof address === "object" && address !== null ? address.port : 0
    this.server = server
  }

  /** Every connection through the relay ends at once, as when a gateway machine is lost. */
  cut(): void {
    for (const socket of this.sockets) socket.destroy()
  }

  async stop(): Promise<void> {
    this.cut()
    await new Promise<void>((resolve) =>
      this.server === undefined ? resolve() : this.server.close(() => resolve()),
    )
    this.server = undefined
  }
}

let gateway: RunningGateway | undefined
let relay: CuttableRelay | undefined
let home = ""

beforeAll(async () => {
  gateway = await startGateway({ servers: { mini: node("mini-server.mjs") } })
  home = tempDir("mcp-ssh-client-home-")
})

afterAll(async () => {
  await relay?.stop()
  await disposeGateway(gateway)
})

const startThroughRelay = async (extra: ReadonlyArray<string> = []): Promise<RunningClient> => {
  if (gateway === undefined) throw new Error("no gateway")
  relay = new CuttableRelay(gateway.port)
  await relay.start()
  const knownHosts = join(gateway.dir, `known_hosts_${relay.port}`)
  writeFileSync(knownHosts, `[127.0.0.1]:${relay.port} ${hostPublicKey(gateway)}\n`)
  return startClient(
    [
      "--host",
      "127.0.0.1",
      "--port",
      String(relay.port),
      "--client-key",
      gateway.clientKey.privatePath,
      "--known-hosts",
      knownHosts,
      ...extra,
    ],
    home,
  )
}

const wholeLines = (client: RunningClient) => {
  const text = client.stdout().toString("utf8")
  expect(text === "" || text.endsWith("\n")).toBe(true)
  for (const line of text.split("\n").filter((line) => line !== ""))
    expect(() => JSON.parse(line)).not.toThrow()
}

describe("mcp-ssh-client reconnecting", () => {
  it("fails the call in flight, reconnects, replays the session and goes on", async () => {
    const client = await startThroughRelay()
    try {
      client.send(initializeRequest("init"))
      client.send({ jsonrpc: "2.0", method: "notifications/initialized" })
      client.send({ jsonrpc: "2.0", id: "level", method: "logging/setLevel", params: { level: "debug" } })
      client.send({
        jsonrpc: "2.0",
        id: "slow",
        method: "tools/call",
        params: { name: "mini__sleep", arguments: { ms: 20_000 } },
      })
      client.send({
        jsonrpc: "2.0",
        id: "before",
        method: "tools/call",
        params: { name: "mini__echo", arguments: { message: "one" } },
      })
      expect(await client.waitFor((message) => message.id === "before")).toMatchObject({
        result: { content: [{ text: "one" }] },
      })

      relay?.cut()
      expect(await client.waitFor((message) => message.id === "slow")).toMatchObject({
        error: { code: -32000, message: expect.stringMatching(/^connection to the gateway lost: /) },
      })
      await client.waitFor((message) => message.method === "notifications/tools/list_changed", 20_000)

      // A tools/call before initialize is refused by the gateway: this one works because the
      // bridge replayed the host's initialize on the new session.
      client.send({
        jsonrpc: "2.0",
        id: "after",
        method: "tools/call",
        params: { name: "mini__echo", arguments: { message: "two" } },
      })
      expect(await client.waitFor((message) => message.id === "after")).toMatchObject({
        result: { content: [{ text: "two" }] },
      })
      // The replay's answers stayed with the bridge: the host saw its initialize answered once.
      expect(client.messages().filter((message) => message.id === "init")).toHaveLength(1)
      expect(client.messages().filter((message) => message.id === "level")).toHaveLength(1)
      expect(client.messages().some((message) => String(message.id).startsWith("mcp-ssh-client/"))).toBe(
        false,
      )
      expect(client.stderr()).toMatch(/connection to the gateway lost: .*; reconnecting/)
      wholeLines(client)
      expect(client.process.exitCode).toBe(null)
    } finally {
      client.process.kill("SIGTERM")
      await client.exited
      await relay?.stop()
    }
  }, 60_000)

  it("gives up after --reconnect-timeout with exit 1 and one line saying why", async () => {
    const client = await startThroughRelay(["--reconnect-timeout", "2s"])
    client.send({ jsonrpc: "2.0", id: 1, method: "ping" })
    await client.waitFor((message) => message.id === 1)
    await relay?.stop()
    const { code } = await client.exited
    expect(code).toBe(1)
    expect(client.stderr().trim().split("\n").at(-1)).toMatch(
      /^mcp-ssh-client: gave up reconnecting to the gateway after 2s: /,
    )
    wholeLines(client)
  }, 60_000)

  it("exits at the first loss with --no-reconnect, as the original client does", async () => {
    const client = await startThroughRelay(["--no-reconnect"])
    client.send({ jsonrpc: "2.0", id: 1, method: "ping" })
    await client.waitFor((message) => message.id === 1)
    relay?.cut()
    const { code } = await client.exited
    expect(code).toBe(1)
    expect(client.stderr().trim().split("\n").at(-1)).toMatch(
      /^mcp-ssh-client: connection to the gateway lost: /,
    )
    await relay?.stop()
  }, 60_000)
})
