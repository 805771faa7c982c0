/**
 * The merged server: two instances of the reference server and a fixture of ours behind one
 * session, used through the MCP SDK's client over real SSH, with every feature forwarded both ways.
 */
import { Client } from "@modelcontextprotocol/client"
import type { Client as Ssh2Connection } from "ssh2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { disposeGateway, everything, node, type RunningGateway, startGateway } from "./support/gateway.js"
import { ChannelTransport, connect, openChannel, openLineChannel } from "./support/ssh.js"

let gateway: RunningGateway
let connection: Ssh2Connection
let client: Client
const notifications: Array<{ method: string; params?: Record<string, unknown> }> = []

const rootUri = "file:///srv/projects/demo"

beforeAll(async () => {
  gateway = await startGateway({
    servers: { alpha: everything, beta: everything, paged: node("mini-server.mjs", "paged") },
  })
  connection = await connect(gateway)
  client = new Client(
    { name: "hub-test", version: "1" },
    { capabilities: { sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } } },
  )
  client.setRequestHandler("sampling/createMessage", async (request) => ({
    model: "test-model",
    role: "assistant",
    content: { type: "text", text: `sampled: ${JSON.stringify(request.params.messages[0]?.content)}` },
  }))
  client.setRequestHandler("elicitation/create", async () => ({
    action: "accept",
    content: {
      name: "Ada",
      check: true,
      color: "blue",
      email: "ada@example.com",
      integer: 7,
      untitledSingleSelectEnum: "option1",
    },
  }))
  client.setRequestHandler("roots/list", async () => ({ roots: [{ uri: rootUri, name: "demo" }] }))
  for (const method of [
    "notifications/message",
    "notifications/resources/updated",
    "notifications/tools/list_changed",
  ] as const) {
    client.setNotificationHandler(method, (notification) => {
      notifications.push(notification as { method: string; params?: Record<string, unknown> })
    })
  }
  await client.connect(new ChannelTransport(await openChannel(connection, { subsystem: "mcp" })))
})

afterAll(async () => {
  await client?.close()
  connection?.end()
  await disposeGateway(gateway)
})

const waitForNotification = async (
  match: (n: { method: string; params?: Record<string, unknown> }) => boolean,
  ms = 10_000,
) => {
  const until = Date.now() + ms
  while (Date.now() < until) {
    const found = notifications.find(match)
    if (found !== undefined) return found
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error(`no matching notification; got ${JSON.stringify(notifications.map((n) => n.method))}`)
}

/** Every page of tools/list, as the client sees them. */
const allToolPages = async () => {
  const pages: Array<Array<string>> = []
  let cursor: string | undefined
  do {
    const page = await client.listTools(cursor === undefined ? {} : { cursor })
    pages.push(page.tools.map((tool) => tool.name))
    cursor = page.nextCursor
  } while (cursor !== undefined)
  return pages
}

describe("the merged server", () => {
  it("introduces itself as the gateway, with the union of capabilities and each server's instructions", () => {
    expect(client.getServerVersion()).toMatchObject({ name: "mcp-ssh" })
    const capabilities = client.getServerCapabilities()
    expect(capabilities).toMatchObject({
      tools: { listChanged: true },
      prompts: { listChanged: true },
      resources: { listChanged: true, subscribe: true },
      logging: {},
      completions: {},
    })
    const instructions = client.getInstructions() ?? ""
    expect(instructions).toMatch(/^## alpha\n/)
    expect(instructions).toMatch(/\n## beta\n/)
  })

  it("pages tools across children with one cursor, every tool exactly once", async () => {
    const channel = await openLineChannel(connection)
    await channel.initialize()
    const pages: Array<Array<string>> = []
    let cursor: unknown
    for (let id = 1; id < 50; id++) {
      const page = await channel.request(id, "tools/list", cursor === undefined ? {} : { cursor })
      const result = page.result as { tools: Array<{ name: string }>; nextCursor?: string }
      pages.push(result.tools.map((tool) => tool.name))
      cursor = result.nextCursor
      if (cursor === undefined) break
    }
    channel.channel.end()
    const names = pages.flat()
    expect(new Set(names).size).toBe(names.length)
    // alpha's page, beta's page, then the paged fixture one tool at a time.
    expect(pages.length).toBeGreaterThanOrEqual(6)
    expect(names).toEqual(
      expect.arrayContaining(["alpha__echo", "beta__echo", "paged__echo", "paged__sleep"]),
    )
    const alpha = names.filter((name) => name.startsWith("alpha__")).map((name) => name.slice(7))
    const beta = names.filter((name) => name.startsWith("beta__")).map((name) => name.slice(6))
    expect(alpha.sort()).toEqual(beta.sort())
    // The SDK client follows the same cursors (its session also sees the tools that need sampling).
    expect((await allToolPages()).flat()).toEqual(expect.arrayContaining(names))
  })

  it("refuses a cursor it did not make", async () => {
    await expect(client.listTools({ cursor: "not-a-cursor" })).rejects.toThrow(/cursor/)
  })

  it("calls a tool of each child by its merged name, passing results through untouched", async () => {
    for (const server of ["alpha", "beta"]) {
      const echoed = await client.callTool({ name: `${server}__echo`, arguments: { message: server } })
      expect(echoed.content).toEqual([{ type: "text", text: `Echo: ${server}` }])
      const sum = await client.callTool({ name: `${server}__get-sum`, arguments: { a: 2, b: 3 } })
      expect(JSON.stringify(sum.content)).toContain("5")
      const structured = await client.callTool({
        name: `${server}__get-structured-content`,
        arguments: { location: "New York" },
      })
      expect(structured.structuredContent).toBeDefined()
    }
    const paged = await client.callTool({ name: "paged__echo", arguments: { message: "mini" } })
    expect(paged.content).toEqual([{ type: "text", text: "mini" }])
  })

  it("calls every tool of both reference servers that needs no network", async () => {
    const { tools } = await client.listTools()
    const argumentsFor: Record<string, Record<string, unknown>> = {
      echo: { message: "x" },
      "get-sum": { a: 1, b: 2 },
      "get-annotated-message": { messageType: "error", includeImage: false },
      "get-resource-links": { count: 2 },
      "get-resource-reference": { resourceType: "Text", resourceId: 1 },
      "get-structured-content": { location: "Chicago" },
      "trigger-long-running-operation": { duration: 0.2, steps: 2 },
      "trigger-sampling-request": { prompt: "hi", maxTokens: 10 },
    }
    // gzip fetches from the network; the research query runs only as a task (tested below).
    const skip = new Set(["gzip-file-as-resource", "trigger-url-elicitation", "simulate-research-query"])
    for (const server of ["alpha", "beta"]) {
      const prefix = `${server}__`
      const bare = tools
        .map((tool) => tool.name)
        .filter((name) => name.startsWith(prefix))
        .map((name) => name.slice(prefix.length))
        .filter((name) => !skip.has(name))
      expect(bare.length).toBeGreaterThanOrEqual(12)
      for (const tool of bare) {
        const result = await client.callTool({
          name: `${prefix}${tool}`,
          arguments: argumentsFor[tool] ?? {},
        })
        expect(result.isError, `${prefix}${tool}: ${JSON.stringify(result.content)}`).not.toBe(true)
      }
    }
  })

  it("gets prompts with arguments from the right child", async () => {
    const prompt = await client.getPrompt({
      name: "beta__args-prompt",
      arguments: { city: "Porto", state: "PT" },
    })
    expect(JSON.stringify(prompt.messages)).toContain("Porto")
    await expect(client.getPrompt({ name: "nobody__args-prompt", arguments: {} })).rejects.toThrow(
      /Unknown prompt/,
    )
  })

  it("reads listed and templated resources under their own URIs, and refuses unknown ones", async () => {
    const { resources } = await client.listResources()
    const listed = resources.find((resource) => resource.uri.startsWith("demo://"))
    expect(listed).toBeDefined()
    const read = await client.readResource({ uri: listed?.uri ?? "" })
    expect(read.contents[0]?.uri).toBe(listed?.uri)
    const { resourceTemplates } = await client.listResourceTemplates()
    expect(resourceTemplates.map((template) => template.uriTemplate)).toContain(
      "demo://resource/dynamic/text/{resourceId}",
    )
    const templated = await client.readResource({ uri: "demo://resource/dynamic/text/42" })
    expect(JSON.stringify(templated.contents)).toContain("42")
    const mini = await client.readResource({ uri: "mini://b" })
    expect(mini.contents).toEqual([{ uri: "mini://b", mimeType: "text/plain", text: "content of mini://b" }])
    await expect(client.readResource({ uri: "nowhere://at/all" })).rejects.toThrow(/Resource not found/)
  })

  it("delivers resources/updated for subscribed URIs only", async () => {
    await client.subscribeResource({ uri: "mini://a" })
    await client.callTool({ name: "paged__updated", arguments: {} })
    await waitForNotification(
      (n) => n.method === "notifications/resources/updated" && n.params?.uri === "mini://a",
    )
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(notifications.some((n) => n.params?.uri === "mini://b")).toBe(false)
    await client.unsubscribeResource({ uri: "mini://a" })
  })

  it("completes prompt arguments through the prompt's owner", async () => {
    const completion = await client.complete({
      ref: { type: "ref/prompt", name: "alpha__completable-prompt" },
      argument: { name: "department", value: "Eng" },
    })
    expect(completion.completion.values).toContain("Engineering")
  })

  it("fans logging/setLevel out and tags log messages with the server's name", async () => {
    await client.setLoggingLevel("debug")
    await client.subscribeResource({ uri: "demo://resource/dynamic/text/1" })
    const message = await waitForNotification(
      (n) =>
        n.method === "notifications/message" && String(n.params?.data).includes("Subscribe Resource request"),
    )
    expect(message.params?.logger).toMatch(/^alpha/)
    await client.unsubscribeResource({ uri: "demo://resource/dynamic/text/1" })
  })

  it("brings progress back to the caller with its own token, before the result", async () => {
    const progress: Array<number> = []
    const result = await client.callTool(
      { name: "beta__trigger-long-running-operation", arguments: { duration: 0.3, steps: 3 } },
      { onprogress: (update) => progress.push(update.progress) },
    )
    expect(result.isError).not.toBe(true)
    // The SDK dispatches progress asynchronously and may drop one that shares a read with the result.
    expect(progress.length).toBeGreaterThanOrEqual(2)
    // On the wire every step comes, in order, with the caller's token, and before the result.
    const channel = await openLineChannel(connection)
    await channel.initialize()
    await channel.request(1, "tools/list")
    await channel.request(2, "tools/call", {
      name: "beta__trigger-long-running-operation",
      arguments: { duration: 0.3, steps: 3 },
      _meta: { progressToken: "my-token" },
    })
    const seen = channel.messages
      .filter((m) => m.method === "notifications/progress" || m.id === 2)
      .map((m) =>
        m.id === 2
          ? "result"
          : `${(m.params as { progressToken: string; progress: number }).progressToken}:${(m.params as { progress: number }).progress}`,
      )
    expect(seen).toEqual(["my-token:1", "my-token:2", "my-token:3", "result"])
    channel.channel.end()
  })

  it("round-trips sampling, elicitation and roots between a child and the client", async () => {
    const sampled = await client.callTool({
      name: "beta__trigger-sampling-request",
      arguments: { prompt: "what is mcp-ssh", maxTokens: 20 },
    })
    expect(JSON.stringify(sampled.content)).toContain("sampled:")
    const elicited = await client.callTool({ name: "alpha__trigger-elicitation-request", arguments: {} })
    expect(JSON.stringify(elicited.content)).toContain("Ada")
    const roots = await client.callTool({ name: "beta__get-roots-list", arguments: {} })
    expect(JSON.stringify(roots.content)).toContain(rootUri)
  })

  it("cancels a long call at the child and goes on", async () => {
    const abort = new AbortController()
    const call = client.callTool(
      { name: "alpha__trigger-long-running-operation", arguments: { duration: 20, steps: 20 } },
      { signal: abort.signal },
    )
    setTimeout(() => abort.abort("enough"), 300)
    await expect(call).rejects.toThrow()
    await gateway.waitForLog(/message=call .*method=tools\/call .*outcome=cancelled/)
    const echoed = await client.callTool({ name: "alpha__echo", arguments: { message: "after" } })
    expect(echoed.content).toEqual([{ type: "text", text: "Echo: after" }])
  })

  it("writes one audit line per call: who, server, method, target, duration, outcome, never arguments", async () => {
    await client.callTool({ name: "beta__echo", arguments: { message: "secret-argument" } })
    const line = await gateway.waitForLog(/message=call .*target=beta__echo/)
    for (const field of [
      /audit=true/,
      /client=SHA256:\S+/,
      /server=beta/,
      /method=tools\/call/,
      /ms=\d+/,
      /outcome=ok/,
    ]) {
      expect(line).toMatch(field)
    }
    expect(gateway.log()).not.toContain("secret-argument")
  })

  it("routes a task to the child that created it", async () => {
    const channel = await openLineChannel(connection)
    await channel.initialize()
    const created = await channel.request(1, "tools/call", {
      name: "alpha__simulate-research-query",
      arguments: { topic: "gateways", ambiguous: false },
      task: { ttl: 60_000 },
    })
    const taskId = (created.result as { task: { taskId: string } }).task.taskId
    expect(typeof taskId).toBe("string")
    expect(await channel.request(2, "tasks/get", { taskId })).toMatchObject({ result: { taskId } })
    const final = await channel.request(3, "tasks/result", { taskId })
    expect(JSON.stringify(final.result)).toContain("gateways")
    expect(await channel.request(4, "tasks/get", { taskId: "no-such-task" })).toMatchObject({
      error: { code: -32602 },
    })
    channel.channel.end()
  })

  it("serves only the servers an exec command names", async () => {
    const channel = await openLineChannel(connection, { exec: "paged" })
    await channel.initialize()
    const listed = await channel.request(2, "tools/list")
    const names = JSON.stringify(listed)
    expect(names).toContain("paged__echo")
    expect(names).not.toContain("alpha__")
    channel.channel.end()
  })
})
