/**
 * The merged server: two instances of the reference server and a fixture of ours behind one
 * session, used through the MCP SDK's client over real SSH, end to end. How each request is routed
 * and each list paged is tested in process (test/inprocess), against scripted children.
 */
import { Client } from "@modelcontextprotocol/client"
import type { Client as Ssh2Connection } from "ssh2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { disposeGateway, everything, node, type RunningGateway, startGateway } from "./support/gateway.js"
import { ChannelTransport, connect, openChannel } from "./support/ssh.js"

let gateway: RunningGateway
let connection: Ssh2Connection
let client: Client

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
  await client.connect(new ChannelTransport(await openChannel(connection, { subsystem: "mcp" })))
})

afterAll(async () => {
  await client?.close()
  connection?.end()
  await disposeGateway(gateway)
})

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

  it("lets the SDK client follow the merged cursors to every tool of every child, each once", async () => {
    const names = (await allToolPages()).flat()
    expect(new Set(names).size).toBe(names.length)
    expect(names).toEqual(
      expect.arrayContaining(["alpha__echo", "beta__echo", "paged__echo", "paged__sleep"]),
    )
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

  it("brings progress to the SDK client's onprogress", async () => {
    const progress: Array<number> = []
    const result = await client.callTool(
      { name: "beta__trigger-long-running-operation", arguments: { duration: 0.3, steps: 3 } },
      { onprogress: (update) => progress.push(update.progress) },
    )
    expect(result.isError).not.toBe(true)
    // The SDK dispatches progress asynchronously and may drop one that shares a read with the result.
    expect(progress.length).toBeGreaterThanOrEqual(2)
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
})
