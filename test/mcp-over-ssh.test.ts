/**
 * The MCP SDK's client reaches the reference server through the gateway: over OpenSSH `ssh -T`
 * (as an MCP host would run it), and over ssh2 on the `mcp` subsystem and on `exec`.
 */
import { Client } from "@modelcontextprotocol/client"
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { disposeGateway, type RunningGateway, startGateway } from "./support/gateway.js"
import { type ChannelKind, ChannelTransport, connect, openChannel, opensshArgs } from "./support/ssh.js"

let gateway: RunningGateway

beforeAll(async () => {
  gateway = await startGateway()
})
afterAll(async () => {
  await disposeGateway(gateway)
})

const exerciseReferenceServer = async (client: Client) => {
  expect(client.getServerVersion()?.name).toBe("mcp-ssh")
  expect(client.getInstructions()).toMatch(/^## everything\n/)

  const { tools } = await client.listTools()
  expect(tools.map((tool) => tool.name)).toContain("everything__echo")

  const echoed = await client.callTool({ name: "everything__echo", arguments: { message: "through ssh" } })
  expect(echoed.content).toEqual([{ type: "text", text: "Echo: through ssh" }])

  const prompt = await client.getPrompt({
    name: "everything__args-prompt",
    arguments: { city: "Lisbon", state: "LX" },
  })
  expect(JSON.stringify(prompt.messages)).toContain("Lisbon")

  const { resources } = await client.listResources()
  const first = resources[0]
  expect(first).toBeDefined()
  const read = await client.readResource({ uri: first?.uri ?? "" })
  expect(read.contents[0]?.uri).toBe(first?.uri)

  const templated = await client.readResource({ uri: "demo://resource/dynamic/text/7" })
  expect(JSON.stringify(templated.contents)).toContain("7")
}

describe("MCP SDK client through the gateway", () => {
  it("works over OpenSSH ssh -T", async () => {
    const transport = new StdioClientTransport({ command: "ssh", args: opensshArgs(gateway), stderr: "pipe" })
    const client = new Client({ name: "openssh-test", version: "1" })
    await client.connect(transport)
    try {
      await exerciseReferenceServer(client)
    } finally {
      await client.close()
    }
  })

  it.each<[string, ChannelKind]>([
    ["the mcp subsystem", { subsystem: "mcp" }],
    ["exec with no command", { exec: "" }],
    ["exec naming the server", { exec: "everything" }],
    ["a shell request", { shell: true }],
  ])("works over ssh2 on %s", async (_name, kind) => {
    const connection = await connect(gateway)
    try {
      const client = new Client({ name: "ssh2-test", version: "1" })
      await client.connect(new ChannelTransport(await openChannel(connection, kind)))
      await exerciseReferenceServer(client)
      await client.close()
    } finally {
      connection.end()
    }
  })
})
