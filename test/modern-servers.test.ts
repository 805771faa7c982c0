/**
 * Children that speak only MCP 2026-07-28 (the v2 SDK with legacy refused), end to end through SSH,
 * for clients of both generations: each gets from the modern-only server what it gets from the same
 * server speaking the initialize handshake (`both`, pinned to 2025-11-25). Per session and shared.
 * Next to them in one session: a 2025-era server, one that exits on server/discover, and one that
 * speaks only a future version (left out).
 */
import { Client } from "@modelcontextprotocol/client"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  disposeGateway,
  node,
  type RunningGateway,
  type ServerEntry,
  startGateway,
} from "./support/gateway.js"
import { ChannelTransport, connect, openChannel, openSession } from "./support/ssh.js"

type Generation = "2025-11-25" | "2026-07-28"

const modernOnly = node("modern-only-server.mjs")
const speaksBoth: ServerEntry = { ...node("modern-only-server.mjs", "both"), protocol: "2025-11-25" }

const gateways: Record<string, RunningGateway> = {}

beforeAll(async () => {
  // One after the other: each starts its servers at once, and the machine may be busy.
  gateways.session = await startGateway({
    servers: {
      // Sessions take a warm spare of it: spares are probed and wrapped as a session's child is.
      modern: { ...modernOnly, spares: 1 },
      both: speaksBoth,
      mini: node("mini-server.mjs"),
      dies: node("mini-server.mjs", "exit-before-initialize"),
      future: node("modern-only-server.mjs", "future"),
      pinned: { ...node("mini-server.mjs"), protocol: "2026-07-28" },
    },
  })
  gateways.shared = await startGateway({
    servers: {
      modern: { ...modernOnly, scope: "shared" },
      both: { ...speaksBoth, scope: "shared" },
    },
  })
})
afterAll(async () => {
  await Promise.all(Object.values(gateways).map((gateway) => disposeGateway(gateway)))
})

interface Session {
  readonly client: Client
  readonly notifications: Array<{ method: string; params?: Record<string, unknown> }>
  readonly close: () => Promise<void>
}

const openClient = async (gateway: RunningGateway, generation: Generation): Promise<Session> => {
  const connection = await connect(gateway)
  const client = new Client(
    { name: `test-${generation}`, version: "1" },
    {
      capabilities: { sampling: {}, elicitation: { form: {} }, roots: {} },
      ...(generation === "2026-07-28" ? { versionNegotiation: { mode: { pin: "2026-07-28" } } } : {}),
    },
  )
  client.setRequestHandler("elicitation/create", async () => ({ action: "accept", content: { name: "Ann" } }))
  client.setRequestHandler("sampling/createMessage", async () => ({
    model: "test-model",
    role: "assistant",
    content: { type: "text", text: "forty-two" },
  }))
  client.setRequestHandler("roots/list", async () => ({ roots: [{ uri: "file:///srv/test", name: "test" }] }))
  const notifications: Session["notifications"] = []
  client.fallbackNotificationHandler = async (notification) => {
    notifications.push(notification as Session["notifications"][number])
  }
  for (const method of ["notifications/message", "notifications/resources/updated"] as const) {
    client.setNotificationHandler(method, async (notification) => {
      notifications.push(notification as Session["notifications"][number])
    })
  }
  await client.connect(new ChannelTransport(await openChannel(connection, { subsystem: "mcp" })))
  expect(client.getNegotiatedProtocolVersion()).toBe(generation)
  return {
    client,
    notifications,
    close: async () => {
      await client.close()
      connection.end()
    },
  }
}

const eventually = async (check: () => boolean, what: string) => {
  for (let waited = 0; waited < 10_000; waited += 25) {
    if (check()) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`timed out waiting for ${what}`)
}

const text = (result: unknown) => JSON.stringify((result as { content?: unknown }).content)

/** A listing without the servers' prefixes, to compare the two servers' entries. */
const unprefixed = <T extends { name: string }>(entries: ReadonlyArray<T>, server: string) =>
  entries
    .filter((entry) => entry.name.startsWith(`${server}__`))
    .map((entry) => ({ ...entry, name: entry.name.slice(server.length + 2) }))

describe.each([
  ["session", "2025-11-25"],
  ["session", "2026-07-28"],
  ["shared", "2025-11-25"],
  ["shared", "2026-07-28"],
] as const)("a modern-only server, scope %s, to a %s client", (scope, generation) => {
  let session: Session
  beforeAll(async () => {
    const gateway = gateways[scope]
    if (gateway === undefined) throw new Error("no gateway")
    session = await openClient(gateway, generation)
  })
  afterAll(async () => {
    await session?.close()
  })

  it("lists the same tools and prompts as the server that speaks both", async () => {
    const { tools } = await session.client.listTools()
    const modern = unprefixed(tools, "modern")
    expect(modern.map((tool) => tool.name)).toEqual(
      expect.arrayContaining(["echo", "progress", "slow", "log", "touch", "ask", "sample", "roots"]),
    )
    expect(modern).toEqual(unprefixed(tools, "both"))
    const { prompts } = await session.client.listPrompts()
    expect(unprefixed(prompts, "modern")).toEqual(unprefixed(prompts, "both"))
    expect(unprefixed(prompts, "modern").map((prompt) => prompt.name)).toEqual(["greet"])
  })

  it("calls tools, gets prompts and reads resources with the same results", async () => {
    for (const server of ["modern", "both"]) {
      const echoed = await session.client.callTool({ name: `${server}__echo`, arguments: { text: "hi" } })
      expect(echoed.content).toEqual([{ type: "text", text: "hi" }])
      expect(echoed.isError).toBeFalsy()
      const prompt = await session.client.getPrompt({ name: `${server}__greet`, arguments: { name: "Bo" } })
      expect(prompt.messages).toEqual([{ role: "user", content: { type: "text", text: "Greet Bo" } }])
    }
    for (const scheme of ["note", "both-note"]) {
      const read = await session.client.readResource({ uri: `${scheme}://first` })
      expect(read.contents).toEqual([
        { uri: `${scheme}://first`, mimeType: "text/plain", text: "the first note" },
      ])
      const templated = await session.client.readResource({ uri: `${scheme}-number://7` })
      expect(templated.contents).toEqual([{ uri: `${scheme}-number://7`, text: "number 7" }])
    }
  })

  it("sampling, elicitation and roots reach the client and the call gives one result", async () => {
    for (const server of ["modern", "both"]) {
      const asked = await session.client.callTool({ name: `${server}__ask`, arguments: {} })
      expect(text(asked)).toContain("hello Ann")
      const sampled = await session.client.callTool({
        name: `${server}__sample`,
        arguments: { prompt: "6x7?" },
      })
      expect(text(sampled)).toContain("model said: forty-two")
    }
    // A modern child's question names its call, so even a shared one asks the right client for roots.
    const roots = await session.client.callTool({ name: "modern__roots", arguments: {} })
    expect(text(roots)).toContain("file:///srv/test")
  })

  it("brings progress back", async () => {
    const progress: Array<number> = []
    const result = await session.client.callTool(
      { name: "modern__progress", arguments: { steps: 3 } },
      { onprogress: (update) => progress.push(update.progress) },
    )
    expect(text(result)).toContain("did 3 steps")
    await eventually(() => progress.length >= 1, "progress")
    expect(progress[0]).toBe(1)
  })

  it("cancels a call at the child", async () => {
    const count = async () =>
      Number(
        JSON.parse(text(await session.client.callTool({ name: "modern__cancelled", arguments: {} })))[0].text,
      )
    const before = await count()
    const abort = new AbortController()
    const slow = session.client.callTool(
      { name: "modern__slow", arguments: { seconds: 30 } },
      { signal: abort.signal },
    )
    await new Promise((resolve) => setTimeout(resolve, 300))
    abort.abort("changed my mind")
    await expect(slow).rejects.toThrow()
    let after = before
    for (let tries = 0; tries < 40 && after <= before; tries++) {
      after = await count()
      if (after <= before) await new Promise((resolve) => setTimeout(resolve, 50))
    }
    expect(after).toBe(before + 1)
  })

  it("relays log messages at the level asked", async () => {
    // A 2026 client says its level on each request; a 2025 one once.
    if (generation === "2025-11-25") await session.client.setLoggingLevel("info")
    await session.client.callTool({
      name: "modern__log",
      arguments: { level: "warning", text: "careful" },
      ...(generation === "2026-07-28" ? { _meta: { "io.modelcontextprotocol/logLevel": "info" } } : {}),
    })
    await eventually(
      () =>
        session.notifications.some(
          (n) => n.method === "notifications/message" && n.params?.data === "careful",
        ),
      "the log message",
    )
    const message = session.notifications.find((n) => n.params?.data === "careful")
    expect(message?.params).toMatchObject({ level: "warning", logger: "modern/fixture" })
  })

  it("tells of a changed resource the client subscribed to", async () => {
    const subscription =
      generation === "2026-07-28"
        ? await session.client.listen({ resourceSubscriptions: ["note://second"] })
        : await session.client.subscribeResource({ uri: "note://second" })
    await session.client.callTool({ name: "modern__touch", arguments: { uri: "note://second" } })
    await eventually(
      () =>
        session.notifications.some(
          (n) => n.method === "notifications/resources/updated" && n.params?.uri === "note://second",
        ),
      "resources/updated",
    )
    if ("close" in subscription && typeof subscription.close === "function") await subscription.close()
  })
})

describe("one session with a modern-only server and others", () => {
  it("serves the 2025-era server beside it, and one that exits on server/discover", async () => {
    const gateway = gateways.session
    if (gateway === undefined) throw new Error("no gateway")
    const session = await openClient(gateway, "2025-11-25")
    const { tools } = await session.client.listTools()
    const names = tools.map((tool) => tool.name)
    expect(names).toEqual(expect.arrayContaining(["modern__echo", "mini__echo", "dies__echo"]))
    const mini = await session.client.callTool({ name: "mini__echo", arguments: { message: "old" } })
    expect(text(mini)).toContain("old")
    const dies = await session.client.callTool({ name: "dies__echo", arguments: { message: "still here" } })
    expect(text(dies)).toContain("still here")
    await session.close()
    await gateway.waitForLog(/server 'dies' exited on server\/discover/)
  })

  it("leaves out a server that speaks no version the gateway speaks, with a clear log line", async () => {
    const gateway = gateways.session
    if (gateway === undefined) throw new Error("no gateway")
    const session = await openClient(gateway, "2026-07-28")
    const { tools } = await session.client.listTools()
    expect(tools.some((tool) => tool.name.startsWith("future__"))).toBe(false)
    expect(tools.some((tool) => tool.name.startsWith("modern__"))).toBe(true)
    await session.close()
    const line = await gateway.waitForLog(/server 'future' is left out/)
    expect(line).toContain("2099-01-01")
  })
})

describe("a 2026 client's input_required from a modern server, on the wire", () => {
  const envelope = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": { elicitation: { form: {} } },
    "io.modelcontextprotocol/clientInfo": { name: "raw", version: "1" },
  }

  it("comes as the server gave it, its requestState prefixed with the server's name", async () => {
    const gateway = gateways.session
    if (gateway === undefined) throw new Error("no gateway")
    const channel = await openSession(gateway, "modern,both")
    const first = await channel.request(1, "tools/call", {
      name: "modern__ask",
      arguments: {},
      _meta: envelope,
    })
    expect(first.result).toMatchObject({
      resultType: "input_required",
      requestState: "modern:ask-1",
      inputRequests: { name: { method: "elicitation/create" } },
    })
    const retried = await channel.request(2, "tools/call", {
      name: "modern__ask",
      arguments: {},
      requestState: "modern:ask-1",
      inputResponses: { name: { action: "accept", content: { name: "Cy" } } },
      _meta: envelope,
    })
    expect(retried.result).toMatchObject({
      resultType: "complete",
      content: [{ type: "text", text: "hello Cy (ask-1)" }],
    })
    // A requestState another server gave is not this one's to take.
    const foreign = await channel.request(3, "tools/call", {
      name: "modern__ask",
      arguments: {},
      requestState: "both:ask-1",
      inputResponses: {},
      _meta: envelope,
    })
    expect(foreign.error).toMatchObject({
      code: -32602,
      message: expect.stringContaining("not given by server 'modern'"),
    })
    channel.channel.end()
  })

  it("a server pinned to 2026-07-28 that does not speak it is down, with the reason", async () => {
    const gateway = gateways.session
    if (gateway === undefined) throw new Error("no gateway")
    const channel = await openSession(gateway, "pinned")
    await channel.initialize("2025-11-25")
    const call = await channel.request(2, "tools/call", { name: "pinned__echo", arguments: { message: "x" } })
    expect(JSON.stringify(call.error)).toMatch(/does not speak MCP 2026-07-28/)
    channel.channel.end()
  })
})
