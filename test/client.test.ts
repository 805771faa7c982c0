/**
 * mcp-ssh-client, the bridge an MCP host starts: the MCP SDK's client drives `node dist/client.js`
 * over stdio against a real gateway; enrollment from nothing; host-key refusals; exit codes when
 * the host closes stdin and when the gateway is lost. Real processes, real files, no mocks.
 */
import { execFileSync, spawn } from "node:child_process"
import { chmodSync, copyFileSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { join } from "node:path"
import { Client } from "@modelcontextprotocol/client"
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { clientScript, initializeRequest, startClient } from "./support/client.js"
import {
  disposeGateway,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { checkedPid, childrenOf } from "./support/processes.js"
import { hostPublicKey, opensshArgs } from "./support/ssh.js"

const enrollmentToken = "test-enrollment-token-0123456789"

/** `SHA256:...` of a public key line, as ssh-keygen computes it (independently of our code). */
const fingerprintOf = (dir: string, publicLine: string): string => {
  const file = join(dir, `fp-${Math.random().toString(36).slice(2)}.pub`)
  writeFileSync(file, `${publicLine}\n`)
  return execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", file]).toString().split(" ")[1] ?? ""
}

const modeOf = (path: string) => statSync(path).mode & 0o777

let gateway: RunningGateway
let home: string
let knownHosts: string

beforeAll(async () => {
  gateway = await startGateway({ keyApi: true, flags: ["--enrollment-token", enrollmentToken] })
  home = tempDir("mcp-ssh-client-home-")
  knownHosts = join(gateway.dir, "client_known_hosts")
  writeFileSync(knownHosts, `[127.0.0.1]:${gateway.port} ${hostPublicKey(gateway)}\n`)
})
afterAll(async () => {
  await disposeGateway(gateway)
  await rm(home, { recursive: true, force: true })
})

/** Arguments for a client that knows the gateway and is authorized, unless told otherwise. */
const trustedArgs = (
  extra: ReadonlyArray<string> = [],
  files: { readonly clientKey?: string; readonly knownHosts?: string } = {},
) => [
  "--host",
  "127.0.0.1",
  "--port",
  String(gateway.port),
  "--client-key",
  files.clientKey ?? gateway.clientKey.privatePath,
  "--known-hosts",
  files.knownHosts ?? knownHosts,
  ...extra,
]

const keyServerPort = () => new URL(gateway.keyApiUrl ?? "").port

describe("the MCP SDK client through mcp-ssh-client", () => {
  it("uses tools, prompts, resources, progress and sampling", async () => {
    const transport = new StdioClientTransport({
      command: process.execPath,
      args: [clientScript, ...trustedArgs()],
      env: { HOME: home },
      stderr: "pipe",
    })
    let stderr = ""
    transport.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString("utf8")
    })
    const client = new Client({ name: "bridge-test", version: "1" }, { capabilities: { sampling: {} } })
    client.setRequestHandler("sampling/createMessage", async () => ({
      model: "test-model",
      role: "assistant",
      content: { type: "text", text: "sampled through the bridge" },
    }))
    await client.connect(transport)
    try {
      expect(client.getServerVersion()?.name).toBe("mcp-ssh")

      const echoed = await client.callTool({ name: "everything__echo", arguments: { message: "bridged" } })
      expect(echoed.content).toEqual([{ type: "text", text: "Echo: bridged" }])

      const prompt = await client.getPrompt({ name: "everything__args-prompt", arguments: { city: "Porto" } })
      expect(JSON.stringify(prompt.messages)).toContain("Porto")

      const read = await client.readResource({ uri: "demo://resource/dynamic/text/7" })
      expect(read.contents[0]?.uri).toBe("demo://resource/dynamic/text/7")

      const progress: Array<number> = []
      await client.callTool(
        { name: "everything__trigger-long-running-operation", arguments: { duration: 0.2, steps: 2 } },
        { onprogress: (update) => progress.push(update.progress) },
      )
      for (let waited = 0; progress.length < 2 && waited < 1000; waited += 20) {
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      // The SDK dispatches progress asynchronously and drops one that shares a read with the result
      // (the order on the wire is checked in hub.test.ts); at least the first must come through.
      expect(progress[0]).toBe(1)
      expect(progress.every((value, index) => index === 0 || value > (progress[index - 1] ?? 0))).toBe(true)

      const sampled = await client.callTool({
        name: "everything__trigger-sampling-request",
        arguments: { prompt: "hello", maxTokens: 5 },
      })
      expect(JSON.stringify(sampled.content)).toContain("sampled through the bridge")
    } finally {
      const pid = transport.pid
      await client.close()
      // Closing stdin ended the bridge at once (the SDK would have sent SIGTERM after 2 s).
      expect(pid === null || !isAlive(pid)).toBe(true)
    }
    expect(stderr).not.toMatch(/mcp-ssh-client: /)
  })
})

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe("the relay", () => {
  it("gives the host exactly the bytes OpenSSH's ssh -T gives, and exits 0 when stdin closes", async () => {
    // Odd spacing and a unicode escape: the gateway sees exactly these bytes.
    const script = [
      `${JSON.stringify(initializeRequest(1))}\n`,
      '{"jsonrpc":"2.0","method":"notifications/initialized"}\n',
      '{ "jsonrpc" : "2.0", "id" : "p\\u00e9", "method" : "ping" }\n',
      '{"jsonrpc":"2.0","id":3,"method":"tools/list"}\n',
      '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"everything__echo","arguments":{"message":"ümlaut ✓"}}}\n',
    ].join("")
    const answersOf = (output: Buffer) =>
      output
        .toString("utf8")
        .split("\n")
        .filter((line) => /"id":/.test(line) && !/"method":/.test(line))
        .sort()

    const openssh = spawn("ssh", opensshArgs(gateway), { stdio: ["pipe", "pipe", "pipe"] })
    const viaSsh: Array<Buffer> = []
    openssh.stdout.on("data", (chunk: Buffer) => viaSsh.push(chunk))
    const sshDone = new Promise<number | null>((resolve) => openssh.once("close", resolve))

    const bridge = startClient(trustedArgs(), home)
    // Fed in small pieces, split anywhere, the way a pipe may deliver them.
    const bytes = Buffer.from(script)
    for (let offset = 0; offset < bytes.length; offset += 7) {
      bridge.process.stdin.write(bytes.subarray(offset, offset + 7))
    }
    openssh.stdin.end(script)
    await bridge.waitFor((message) => message.id === 4)
    bridge.process.stdin.end()
    expect(await bridge.exited).toEqual({ code: 0, signal: null })
    expect(await sshDone).toBe(0)

    const ours = answersOf(bridge.stdout())
    expect(ours).toHaveLength(4)
    expect(ours).toEqual(answersOf(Buffer.concat(viaSsh)))
    // stdout is MCP only: every line is a JSON-RPC message.
    for (const message of bridge.messages()) expect(message.jsonrpc).toBe("2.0")
    expect(bridge.stderr()).not.toMatch(/mcp-ssh-client: /)
  })

  it("lets the gateway answer what is in flight when stdin closes, then exits 0", async () => {
    const bridge = startClient(trustedArgs(), home)
    bridge.send(initializeRequest())
    bridge.send({ jsonrpc: "2.0", method: "notifications/initialized" })
    bridge.send({
      jsonrpc: "2.0",
      id: "slow",
      method: "tools/call",
      params: { name: "everything__trigger-long-running-operation", arguments: { duration: 0.4, steps: 1 } },
    })
    await bridge.waitFor((message) => message.id === "init")
    bridge.process.stdin.end()
    expect(await bridge.exited).toEqual({ code: 0, signal: null })
    expect(bridge.messages().find((message) => message.id === "slow")).toHaveProperty("result")
  })

  it("selects servers with --servers (the exec command), and passes on the gateway's refusal", async () => {
    const selected = startClient(trustedArgs(["--servers", "everything"]), home)
    selected.send(initializeRequest())
    await selected.waitFor((message) => message.id === "init")
    selected.send({ jsonrpc: "2.0", method: "notifications/initialized" })
    selected.send({ jsonrpc: "2.0", id: 1, method: "tools/list" })
    const listed = await selected.waitFor((message) => message.id === 1)
    expect(JSON.stringify(listed.result)).toContain("everything__echo")
    selected.process.stdin.end()
    expect((await selected.exited).code).toBe(0)

    const unknown = startClient(trustedArgs(["--servers", "nosuchserver"]), home)
    unknown.send(initializeRequest())
    expect((await unknown.exited).code).toBe(1)
    // The gateway's own words come through on stderr, then the client's one line.
    expect(unknown.stderr()).toMatch(/unknown server\(s\): nosuchserver/)
    expect(unknown.stderr().trim().split("\n").at(-1)).toMatch(
      /^mcp-ssh-client: connection to the gateway lost: the gateway ended the session \(exit status 1\)/,
    )
    // The request it will never answer is answered by the bridge.
    expect(unknown.messages()).toEqual([
      {
        jsonrpc: "2.0",
        id: "init",
        error: {
          code: -32000,
          message: "connection to the gateway lost: the gateway ended the session (exit status 1)",
        },
      },
    ])
  })
})

describe("keys and host keys", () => {
  it("enrolls from scratch with a token: makes the key, pins the host key, registers, connects", async () => {
    const freshHome = tempDir("mcp-ssh-client-fresh-")
    try {
      const args = [
        "--host",
        "127.0.0.1",
        "--port",
        String(gateway.port),
        "--use-key-server",
        "--key-server-port",
        keyServerPort(),
        "--enroll-token",
        enrollmentToken,
      ]
      const transport = new StdioClientTransport({
        command: process.execPath,
        args: [clientScript, ...args],
        env: { HOME: freshHome },
        stderr: "pipe",
      })
      let stderr = ""
      transport.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString("utf8")
      })
      const client = new Client({ name: "enroll-test", version: "1" })
      await client.connect(transport)
      const echoed = await client.callTool({ name: "everything__echo", arguments: { message: "enrolled" } })
      expect(echoed.content).toEqual([{ type: "text", text: "Echo: enrolled" }])
      await client.close()

      const keyPath = join(freshHome, ".ssh", "mcp_ssh_client_ed25519")
      expect(modeOf(join(freshHome, ".ssh"))).toBe(0o700)
      expect(modeOf(keyPath)).toBe(0o600)
      expect(modeOf(`${keyPath}.pub`)).toBe(0o644)
      const publicLine = readFileSync(`${keyPath}.pub`, "utf8").trim()
      expect(publicLine).toMatch(/^ssh-ed25519 AAAA\S+ mcp-ssh-client@/)
      // OpenSSH reads the generated key.
      const derived = execFileSync("ssh-keygen", ["-y", "-f", keyPath]).toString().trim()
      expect(derived.split(" ").slice(0, 2)).toEqual(publicLine.split(" ").slice(0, 2))
      // The host key is pinned, in plain form.
      expect(readFileSync(join(freshHome, ".ssh", "known_hosts"), "utf8")).toBe(
        `[127.0.0.1]:${gateway.port} ${hostPublicKey(gateway)}\n`,
      )
      expect(readFileSync(gateway.authorizedKeysPath, "utf8")).toContain(publicLine.split(" ")[1])
      expect(stderr).toMatch(/generated a new ed25519 client key/)
      expect(stderr).toMatch(/the gateway added the client key/)

      // Next time: no token needed, nothing to pin, nothing registered again.
      const again = startClient(["--host", "127.0.0.1", "--port", String(gateway.port)], freshHome)
      again.send({ jsonrpc: "2.0", id: 1, method: "ping" })
      await again.waitFor((message) => message.id === 1)
      again.process.stdin.end()
      expect((await again.exited).code).toBe(0)
    } finally {
      await rm(freshHome, { recursive: true, force: true })
    }
  })

  it("refuses a host key that differs from the one in known_hosts, showing both fingerprints", async () => {
    const other = makeKey(gateway.dir, `other-host-${Date.now()}`)
    const staleKnownHosts = join(gateway.dir, "stale_known_hosts")
    writeFileSync(staleKnownHosts, `[127.0.0.1]:${gateway.port} ${other.publicLine}\n`)
    const oldFingerprint = fingerprintOf(gateway.dir, other.publicLine)
    const newFingerprint = fingerprintOf(gateway.dir, hostPublicKey(gateway))
    const authorizedBefore = readFileSync(gateway.authorizedKeysPath, "utf8")

    // Seen in the SSH handshake, and in what the key API serves.
    const withKeyServer = ["--key-server-port", keyServerPort(), "--enroll-token", enrollmentToken]
    for (const extra of [[], withKeyServer]) {
      const bridge = startClient(
        trustedArgs(extra, { clientKey: join(home, "unregistered_key"), knownHosts: staleKnownHosts }),
        home,
      )
      bridge.send(initializeRequest())
      expect((await bridge.exited).code).toBe(1)
      const lastLine = bridge.stderr().trim().split("\n").at(-1) ?? ""
      expect(lastLine).toMatch(/^mcp-ssh-client: HOST KEY CHANGED/)
      expect(lastLine).toContain(oldFingerprint)
      expect(lastLine).toContain(newFingerprint)
      expect(bridge.stdout().length).toBe(0)
    }
    // Nothing was pinned or registered on the way.
    expect(readFileSync(staleKnownHosts, "utf8")).toBe(`[127.0.0.1]:${gateway.port} ${other.publicLine}\n`)
    expect(readFileSync(gateway.authorizedKeysPath, "utf8")).toBe(authorizedBefore)
  })

  it("refuses an unknown host with the exact line to add, which then works", async () => {
    const emptyKnownHosts = join(gateway.dir, "empty_known_hosts")
    const args = trustedArgs([], { knownHosts: emptyKnownHosts })
    const refused = startClient(args, home)
    expect((await refused.exited).code).toBe(1)
    expect(refused.stdout().length).toBe(0)
    const line = `[127.0.0.1]:${gateway.port} ${hostPublicKey(gateway)}`
    const message = refused.stderr().trim().split("\n").at(-1) ?? ""
    expect(message).toMatch(/^mcp-ssh-client: the host key of \[127\.0\.0\.1\]:\d+ is unknown/)
    expect(message).toContain(fingerprintOf(gateway.dir, hostPublicKey(gateway)))
    expect(message.endsWith(`${emptyKnownHosts}: ${line}`)).toBe(true)
    expect(existsSync(emptyKnownHosts)).toBe(false)

    // Checking disabled: it connects, and says loudly what that means.
    const unchecked = startClient(
      trustedArgs(["--disable-host-key-checking"], { knownHosts: emptyKnownHosts }),
      home,
    )
    unchecked.send({ jsonrpc: "2.0", id: 1, method: "ping" })
    await unchecked.waitFor((reply) => reply.id === 1)
    unchecked.process.stdin.end()
    expect((await unchecked.exited).code).toBe(0)
    expect(unchecked.stderr()).toMatch(/WARNING .*host key checking is DISABLED/)
    expect(unchecked.stderr()).toMatch(/HOST KEY NOT VERIFIED/)
    expect(existsSync(emptyKnownHosts)).toBe(false)

    writeFileSync(emptyKnownHosts, `${line}\n`)
    const accepted = startClient(args, home)
    accepted.send({ jsonrpc: "2.0", id: 1, method: "ping" })
    await accepted.waitFor((reply) => reply.id === 1)
    accepted.process.stdin.end()
    expect((await accepted.exited).code).toBe(0)
  })

  it("reads hashed known_hosts entries (ssh-keygen -H) and honours @revoked", async () => {
    const hashed = join(gateway.dir, "hashed_known_hosts")
    writeFileSync(hashed, `[127.0.0.1]:${gateway.port} ${hostPublicKey(gateway)}\n`)
    execFileSync("ssh-keygen", ["-H", "-f", hashed], { stdio: "ignore" })
    expect(readFileSync(hashed, "utf8")).toMatch(/^\|1\|/)
    const bridge = startClient(trustedArgs([], { knownHosts: hashed }), home)
    bridge.send({ jsonrpc: "2.0", id: 1, method: "ping" })
    await bridge.waitFor((reply) => reply.id === 1)
    bridge.process.stdin.end()
    expect((await bridge.exited).code).toBe(0)

    writeFileSync(hashed, `@revoked * ${hostPublicKey(gateway)}\n`, { flag: "a" })
    const revoked = startClient(trustedArgs([], { knownHosts: hashed }), home)
    expect((await revoked.exited).code).toBe(1)
    expect(revoked.stderr()).toMatch(/is marked @revoked in .*hashed_known_hosts:2/)
  })

  it("refuses a private key that others can read, and says how to fix it", async () => {
    const loose = join(home, "loose_key")
    copyFileSync(gateway.clientKey.privatePath, loose)
    chmodSync(loose, 0o644)
    const bridge = startClient(trustedArgs([], { clientKey: loose }), home)
    expect((await bridge.exited).code).toBe(1)
    expect(bridge.stderr().trim()).toBe(
      `mcp-ssh-client: client key ${loose}: permissions 0644 are too open: a private key must not be accessible by others (chmod 600 ${loose})`,
    )
  })

  it("answers --help and --version, and refuses a bad flag with status 2", async () => {
    const help = startClient(["--help"], home)
    expect((await help.exited).code).toBe(0)
    for (const flag of [
      "--host",
      "--port",
      "--username",
      "--client-key",
      "--known-hosts",
      "--disable-host-key-checking",
      "--use-key-server",
      "--key-server-port",
      "--key-server-url",
      "--enroll-token",
      "--passphrase",
      "--servers",
      "--log-level",
    ]) {
      expect(help.stdout().toString()).toContain(flag)
    }
    const version = startClient(["--version"], home)
    expect((await version.exited).code).toBe(0)
    expect(version.stdout().toString().trim()).toMatch(/^\d+\.\d+\.\d+/)
    const bad = startClient(["--key-server-url", "ftp://example.com"], home)
    expect((await bad.exited).code).toBe(2)
    expect(bad.stderr()).toMatch(/scheme must be https or http/)
    expect(bad.stdout().length).toBe(0)
  })
})

describe("losing the gateway", () => {
  it.each(["SIGKILL", "SIGTERM"] as const)(
    "answers the pending request with an error and exits 1 when the gateway gets %s",
    async (signal) => {
      const lost = await startGateway({ servers: { mini: node("mini-server.mjs") } })
      const lostKnownHosts = join(lost.dir, "client_known_hosts")
      writeFileSync(lostKnownHosts, `[127.0.0.1]:${lost.port} ${hostPublicKey(lost)}\n`)
      const children: Array<number> = []
      try {
        const bridge = startClient(
          [
            "--host",
            "127.0.0.1",
            "--port",
            String(lost.port),
            "--client-key",
            lost.clientKey.privatePath,
            "--known-hosts",
            lostKnownHosts,
            // The original client's exit at the first loss (reconnecting is tested on its own).
            "--no-reconnect",
          ],
          home,
        )
        bridge.send(initializeRequest())
        bridge.send({ jsonrpc: "2.0", method: "notifications/initialized" })
        bridge.send({
          jsonrpc: "2.0",
          id: "slow",
          method: "tools/call",
          params: { name: "mini__sleep", arguments: { ms: 30_000 } },
        })
        bridge.send({ jsonrpc: "2.0", id: 2, method: "ping" })
        await bridge.waitFor((message) => message.id === 2)
        children.push(...childrenOf(lost.pid))
        lost.process.kill(signal)

        const answer = await bridge.waitFor((message) => message.id === "slow")
        expect(answer.error).toMatchObject({ code: expect.any(Number), message: expect.any(String) })
        const { code } = await bridge.exited
        expect(code).toBe(1)
        expect(bridge.stderr().trim().split("\n").at(-1)).toMatch(
          /^mcp-ssh-client: connection to the gateway lost: \S/,
        )
        if (signal === "SIGKILL") {
          // Nobody else could answer it: the bridge did.
          expect(answer.error).toMatchObject({
            code: -32000,
            message: expect.stringMatching(/^connection to the gateway lost: /),
          })
        }
        // Nothing but whole JSON-RPC lines on stdout.
        expect(bridge.stdout().toString().endsWith("\n")).toBe(true)
        for (const message of bridge.messages()) expect(message.jsonrpc).toBe("2.0")
      } finally {
        // A gateway killed outright leaves its children to us.
        for (const child of children) {
          try {
            process.kill(-checkedPid(child), "SIGKILL")
          } catch {}
        }
        await disposeGateway(lost)
      }
    },
  )
})
