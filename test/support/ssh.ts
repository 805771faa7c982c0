/** Real SSH clients against the gateway: ssh2 connections and channels, and OpenSSH's `ssh`. */
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import type { JSONRPCMessage, Transport } from "@modelcontextprotocol/client"
import type { ClientChannel, ConnectConfig, Client as Ssh2Connection } from "ssh2"
import ssh2 from "ssh2"
import type { RunningGateway } from "./gateway.js"
import { type Watchers, waitForMatch } from "./waiting.js"

const { Client } = ssh2

export const hostPublicKey = (gateway: RunningGateway): string =>
  readFileSync(`${gateway.hostKeyPath}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ")

/** Connect and authenticate; rejects with ssh2's error (e.g. "All configured authentication methods failed"). */
export const connect = (
  gateway: RunningGateway,
  /** Overrides; `privateKey: undefined` drops the default key (to test other methods). */
  config: { readonly [K in keyof ConnectConfig]?: ConnectConfig[K] | undefined } = {},
): Promise<Ssh2Connection> =>
  new Promise((resolve, reject) => {
    const client = new Client()
    const expected = Buffer.from(hostPublicKey(gateway).split(" ")[1] ?? "", "base64")
    client
      .once("ready", () => resolve(client))
      .on("error", reject)
      // A server that disconnects during authentication ends the connection without an error.
      .once("close", () => reject(new Error("connection closed before authentication completed")))
      .connect({
        host: "127.0.0.1",
        port: gateway.port,
        username: "mcp",
        privateKey: readFileSync(gateway.clientKey.privatePath),
        hostVerifier: (key: Buffer) => key.equals(expected),
        readyTimeout: 10_000,
        ...(config as ConnectConfig),
      })
  })

export type ChannelKind = { exec: string } | { subsystem: string } | { shell: true }

export const openChannel = async (client: Ssh2Connection, kind: ChannelKind): Promise<ClientChannel> =>
  (await openLineChannel(client, kind)).channel

/** Newline-delimited JSON over a channel, with helpers to wait for particular messages. */
export class LineChannel {
  readonly messages: Array<Record<string, unknown>> = []
  stderr = ""
  readonly exit: Promise<number | null>
  private buffer = ""
  private readonly waiters: Watchers = new Set()

  constructor(readonly channel: ClientChannel) {
    channel.on("data", (chunk: Buffer) => {
      this.buffer += chunk.toString("utf8")
      let newline = this.buffer.indexOf("\n")
      while (newline !== -1) {
        const line = this.buffer.slice(0, newline)
        this.buffer = this.buffer.slice(newline + 1)
        if (line.trim() !== "") this.messages.push(JSON.parse(line) as Record<string, unknown>)
        newline = this.buffer.indexOf("\n")
      }
      for (const waiter of this.waiters) waiter()
    })
    channel.stderr.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString("utf8")
    })
    this.exit = new Promise((resolve) => {
      let code: number | null = null
      channel.on("exit", (exitCode: number | null) => {
        code = exitCode
      })
      channel.on("close", () => {
        resolve(code)
        for (const waiter of this.waiters) waiter()
      })
    })
  }

  sendRaw(text: string | Buffer): void {
    this.channel.write(text)
  }

  send(message: Record<string, unknown>): void {
    this.channel.write(`${JSON.stringify(message)}\n`)
  }

  /** The first message (seen so far or to come) that matches. */
  waitFor(
    match: (message: Record<string, unknown>) => boolean,
    timeoutMs = 10_000,
  ): Promise<Record<string, unknown>> {
    return waitForMatch({
      watchers: this.waiters,
      find: () => this.messages.find(match),
      timeoutMs,
      timedOut: () => `no matching message within ${timeoutMs} ms; got ${JSON.stringify(this.messages)}`,
    })
  }

  /** Resolves once `count` messages match (for notifications that repeat). */
  async waitForCount(
    match: (message: Record<string, unknown>) => boolean,
    count: number,
    timeoutMs = 10_000,
  ) {
    const until = Date.now() + timeoutMs
    while (this.messages.filter(match).length < count) {
      if (Date.now() > until) throw new Error(`fewer than ${count} matching messages within ${timeoutMs} ms`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }

  response(id: unknown, timeoutMs?: number) {
    return this.waitFor(
      (message) => message.id === id && ("result" in message || "error" in message),
      timeoutMs,
    )
  }

  async request(id: number | string, method: string, params?: Record<string, unknown>) {
    this.send({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) })
    return this.response(id)
  }

  /** initialize + notifications/initialized, as an MCP client starts a session. */
  async initialize(protocolVersion = "2025-06-18") {
    const result = await this.request("init", "initialize", {
      protocolVersion,
      capabilities: {},
      clientInfo: { name: "mcp-ssh-tests", version: "1" },
    })
    this.send({ jsonrpc: "2.0", method: "notifications/initialized" })
    return result
  }
}

/** Wraps the channel in its open callback: an exit status sent at once must not be missed. */
export const openLineChannel = (client: Ssh2Connection, kind: ChannelKind = { subsystem: "mcp" }) =>
  new Promise<LineChannel>((resolve, reject) => {
    const done = (error: Error | undefined, channel: ClientChannel) =>
      error ? reject(error) : resolve(new LineChannel(channel))
    if ("exec" in kind) client.exec(kind.exec, done)
    else if ("subsystem" in kind) client.subsys(kind.subsystem, done)
    else client.shell(false, done)
  })

/**
 * A new connection with one exec channel serving `servers` (empty: every server); the connection
 * ends when the channel closes.
 */
export const openSession = async (
  gateway: RunningGateway,
  servers: string,
  config: Parameters<typeof connect>[1] = {},
): Promise<LineChannel> => {
  const connection = await connect(gateway, config)
  const channel = await openLineChannel(connection, { exec: servers })
  channel.exit.finally(() => connection.end())
  return channel
}

/** Every merged tool name, sorted, following the cursor (a page holds one child's tools). */
export const toolNames = async (channel: LineChannel, id: string): Promise<Array<string>> => {
  const names: Array<string> = []
  let cursor: string | undefined
  for (let page = 0; page < 10; page++) {
    const response = await channel.request(
      `${id}-${page}`,
      "tools/list",
      cursor === undefined ? {} : { cursor },
    )
    const result = response.result as { tools?: Array<{ name: string }>; nextCursor?: string }
    names.push(...(result.tools ?? []).map((tool) => tool.name))
    cursor = result.nextCursor
    if (cursor === undefined) break
  }
  return names.sort()
}

/** tools/call of `name` with `args`, and its answer. */
export const callTool = (
  channel: LineChannel,
  id: number | string,
  name: string,
  args: Record<string, unknown> = {},
) => channel.request(id, "tools/call", { name, arguments: args })

/** An MCP SDK transport over an ssh2 channel, so the SDK's Client can talk through ssh2. */
export class ChannelTransport implements Transport {
  onclose?: () => void
  onerror?: (error: Error) => void
  onmessage?: <T extends JSONRPCMessage>(message: T) => void
  private buffer = ""

  constructor(private readonly channel: ClientChannel) {}

  async start(): Promise<void> {
    this.channel.on("data", (chunk: Buffer) => {
      this.buffer += chunk.toString("utf8")
      let newline = this.buffer.indexOf("\n")
      while (newline !== -1) {
        const line = this.buffer.slice(0, newline)
        this.buffer = this.buffer.slice(newline + 1)
        if (line.trim() !== "") this.onmessage?.(JSON.parse(line) as JSONRPCMessage)
        newline = this.buffer.indexOf("\n")
      }
    })
    this.channel.on("close", () => this.onclose?.())
  }

  async send(message: JSONRPCMessage): Promise<void> {
    this.channel.write(`${JSON.stringify(message)}\n`)
  }

  async close(): Promise<void> {
    this.channel.end()
  }
}

/** Arguments for OpenSSH `ssh` that trust exactly the gateway's host key and offer only the test key. */
export const opensshArgs = (
  gateway: RunningGateway,
  keyPath = gateway.clientKey.privatePath,
  /** Another port in front of the gateway (a load balancer), and the local address to connect from. */
  via: { readonly port?: number; readonly source?: string } = {},
): Array<string> => {
  const port = via.port ?? gateway.port
  const knownHosts = join(gateway.dir, port === gateway.port ? "known_hosts" : `known_hosts_${port}`)
  writeFileSync(knownHosts, `[127.0.0.1]:${port} ${hostPublicKey(gateway)}\n`)
  return [
    "-T",
    ...(via.source === undefined ? [] : ["-b", via.source]),
    "-p",
    String(port),
    "-i",
    keyPath,
    "-F",
    "/dev/null",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "IdentityAgent=none",
    "-o",
    "BatchMode=yes",
    "-o",
    `UserKnownHostsFile=${knownHosts}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "LogLevel=ERROR",
    "mcp@127.0.0.1",
  ]
}
