/**
 * Clients of MCP 2026-07-28 (no initialize; an envelope on every request; input_required instead of
 * server-to-client requests; notifications through subscriptions/listen) against 2025-era children,
 * end to end through SSH with the MCP SDK. The raw protocol and input_required rounds in detail are
 * tested in process (test/inprocess/modern-client.test.ts).
 */
import { Client } from "@modelcontextprotocol/client"
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { disposeGateway, everything, node, type RunningGateway, startGateway } from "./support/gateway.js"
import { ChannelTransport, connect, openChannel, opensshArgs } from "./support/ssh.js"

let gateway: RunningGateway

beforeAll(async () => {
  gateway = await startGateway({
    servers: { everything, mini: node("mini-server.mjs"), v2: node("v2-server.mjs") },
  })
})
afterAll(() => disposeGateway(gateway))

describe("the MCP SDK client pinned to 2026-07-28, through OpenSSH ssh -T", () => {
  let client: Client
  beforeAll(async () => {
    client = new Client(
      { name: "modern-test", version: "1" },
      {
        capabilities: { sampling: {}, elicitation: { form: {} }, roots: {} },
        versionNegotiation: { mode: { pin: "2026-07-28" } },
      },
    )
    client.setRequestHandler("sampling/createMessage", async () => ({
      model: "test-model",
      role: "assistant",
      content: { type: "text", text: "sampled through input_required" },
    }))
    client.setRequestHandler("roots/list", async () => ({
      roots: [{ uri: "file:///srv/modern", name: "modern" }],
    }))
    await client.connect(
      new StdioClientTransport({ command: "ssh", args: opensshArgs(gateway), stderr: "pipe" }),
    )
    installConfirmAnswer(client)
  })
  afterAll(async () => {
    await client?.close()
  })

  it("discovers the merged server", () => {
    expect(client.getNegotiatedProtocolVersion()).toBe("2026-07-28")
    expect(client.getServerVersion()).toMatchObject({ name: "mcp-ssh" })
    expect(client.getServerCapabilities()).toMatchObject({ tools: { listChanged: true } })
    expect(client.getServerCapabilities()).not.toHaveProperty("tasks")
  })

  it("lists and calls tools, gets prompts and reads resources", async () => {
    const { tools } = await client.listTools()
    expect(tools.map((tool) => tool.name)).toEqual(expect.arrayContaining(["everything__echo", "mini__echo"]))
    const echoed = await client.callTool({ name: "everything__echo", arguments: { message: "modern" } })
    expect(echoed.content).toEqual([{ type: "text", text: "Echo: modern" }])
    const prompt = await client.getPrompt({ name: "everything__args-prompt", arguments: { city: "Faro" } })
    expect(JSON.stringify(prompt.messages)).toContain("Faro")
    const read = await client.readResource({ uri: "mini://a" })
    expect(read.contents).toEqual([{ uri: "mini://a", mimeType: "text/plain", text: "content of mini://a" }])
  })

  it("turns a child's sampling, elicitation and roots requests into input_required rounds", async () => {
    const sampled = await client.callTool({
      name: "everything__trigger-sampling-request",
      arguments: { prompt: "hello", maxTokens: 5 },
    })
    expect(JSON.stringify(sampled.content)).toContain("sampled through input_required")
    const elicited = await client.callTool({ name: "everything__trigger-elicitation-request", arguments: {} })
    expect(JSON.stringify(elicited.content)).toContain("Grace")
    const roots = await client.callTool({ name: "everything__get-roots-list", arguments: {} })
    expect(JSON.stringify(roots.content)).toContain("file:///srv/modern")
  })

  it("serves a child of the 2026 generation, its input rounds included", async () => {
    const shouted = await client.callTool({ name: "v2__shout", arguments: { text: "new" } })
    expect(shouted.content).toEqual([{ type: "text", text: "NEW" }])
    const confirmed = await client.callTool({ name: "v2__confirm", arguments: {} })
    expect(JSON.stringify(confirmed.content), JSON.stringify(confirmed)).toContain("file:///srv/modern")
  })

  it("brings progress back", async () => {
    const progress: Array<number> = []
    await client.callTool(
      { name: "everything__trigger-long-running-operation", arguments: { duration: 0.2, steps: 2 } },
      { onprogress: (update) => progress.push(update.progress) },
    )
    for (let waited = 0; progress.length < 2 && waited < 1000; waited += 20) {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    // The SDK may drop a last progress that shares a read with the result; the first always comes.
    expect(progress[0]).toBe(1)
  })
})

/** The v2 fixture asks for `{ok: true}`; the reference server's elicitation wants a form of its own. */
const installConfirmAnswer = (client: Client) => {
  client.setRequestHandler("elicitation/create", async (request) =>
    JSON.stringify(request.params).includes("Proceed?")
      ? { action: "accept", content: { ok: true } }
      : {
          action: "accept",
          content: {
            name: "Grace",
            check: true,
            color: "red",
            email: "g@example.com",
            integer: 3,
            untitledSingleSelectEnum: "option1",
          },
        },
  )
}

describe("a 2025-era client and a child of the 2026 generation", () => {
  it("gets the child's input requests as ordinary requests", async () => {
    const connection = await connect(gateway)
    const client = new Client(
      { name: "legacy-test", version: "1" },
      { capabilities: { elicitation: { form: {} }, roots: {} } },
    )
    installConfirmAnswer(client)
    client.setRequestHandler("roots/list", async () => ({
      roots: [{ uri: "file:///srv/legacy", name: "legacy" }],
    }))
    await client.connect(new ChannelTransport(await openChannel(connection, { subsystem: "mcp" })))
    expect(client.getNegotiatedProtocolVersion()).toBe("2025-11-25")
    const confirmed = await client.callTool({ name: "v2__confirm", arguments: {} })
    expect(JSON.stringify(confirmed.content)).toContain("file:///srv/legacy")
    await client.close()
    connection.end()
  })
})
