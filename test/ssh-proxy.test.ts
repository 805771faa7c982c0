/**
 * The SSH listener behind a real HAProxy (TCP mode, `send-proxy-v2`, and `send-proxy` for v1): the
 * gateway trusts 127.0.0.1 (--trusted-proxies) and takes the client's address from the PROXY header.
 * Clients bind to other loopback addresses (127.0.0.2...) so the address the gateway uses can only
 * have come from the header: `from=`, the per-source startup cap, the log and the audit line see it.
 * A header from a peer the gateway does not trust, or no header from one it does, is refused.
 */
import { spawn } from "node:child_process"
import { createConnection, type Socket } from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { proxyV2Signature } from "../src/gateway/ssh/proxyProtocol.js"
import {
  type ClientKey,
  disposeGateway,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { type RunningHaproxy, startHaproxy } from "./support/haproxy.js"
import { removeDir } from "./support/openssh.js"
import { withoutHaproxy } from "./support/optionalServers.js"
import { connect, openLineChannel, opensshArgs } from "./support/ssh.js"

let dir = ""
let nearKey: ClientKey | undefined
let gateway: RunningGateway | undefined
let metricsPort = 0
let haproxyV2: RunningHaproxy | undefined
let haproxyV1: RunningHaproxy | undefined

beforeAll(async () => {
  if (withoutHaproxy) return
  dir = tempDir("mcp-ssh-proxy-")
  nearKey = makeKey(dir, "near")
  gateway = await startGateway({
    servers: { mini: node("mini-server.mjs") },
    // 127.0.0.1 is where HAProxy connects from; the clients bind to other loopback addresses.
    flags: ["--trusted-proxies", "127.0.0.1", "--max-startups-per-source", "2", "--metrics-port", "0"],
    authorizedLines: [`from="127.0.0.2" ${nearKey.publicLine}`],
    // Beside other suites on a busy machine, a start may take longer than the usual 15 s.
    readyTimeoutMs: 45_000,
  })
  const line = await gateway.waitForLog(/metrics listening on http:\/\//)
  metricsPort = Number(/:(\d+)\/metrics/.exec(line)?.[1])
  const backends = [{ name: "gateway", port: gateway.port, checkPort: metricsPort }]
  haproxyV2 = await startHaproxy({ backends, proxyProtocol: "v2" })
  haproxyV1 = await startHaproxy({ backends, proxyProtocol: "v1" })
}, 90_000)

afterAll(async () => {
  await haproxyV2?.stop()
  await haproxyV1?.stop()
  await disposeGateway(gateway)
  if (dir !== "") removeDir(dir)
}, 60_000)

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** One ping over OpenSSH's `ssh` bound to `source`, to `port`; its exit status and output. */
const opensshPing = (port: number, source: string, key: ClientKey) =>
  new Promise<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>(
    (resolve) => {
      if (gateway === undefined) throw new Error("no gateway")
      const ssh = spawn("ssh", [...opensshArgs(gateway, key.privatePath, { port, source }), "mini"], {
        stdio: ["pipe", "pipe", "pipe"],
      })
      let stdout = ""
      let stderr = ""
      ssh.stdout.on("data", (chunk: Buffer) => {
        stdout += chunk.toString()
        if (stdout.includes('"id":1')) ssh.stdin.end()
      })
      ssh.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString()
      })
      ssh.stdin.on("error", () => {})
      ssh.stdin.write(`${JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" })}\n`)
      ssh.once("close", (code) => resolve({ code, stdout, stderr }))
    },
  )

/** A raw TCP connection from `source`; resolves once connected. */
const rawSocket = (port: number, source: string) =>
  new Promise<Socket>((resolve, reject) => {
    const socket = createConnection({ host: "127.0.0.1", port, localAddress: source })
    socket.once("connect", () => resolve(socket))
    socket.once("error", reject)
  })

/** Everything the socket receives until it closes (or `timeoutMs` passes: then `timedOut`). */
const readUntilClosed = (socket: Socket, timeoutMs = 10_000) =>
  new Promise<{ readonly received: string; readonly timedOut: boolean }>((resolve) => {
    let received = ""
    socket.on("data", (chunk: Buffer) => {
      received += chunk.toString("latin1")
    })
    socket.on("error", () => {})
    const timer = setTimeout(() => {
      socket.destroy()
      resolve({ received, timedOut: true })
    }, timeoutMs)
    socket.once("close", () => {
      clearTimeout(timer)
      resolve({ received, timedOut: false })
    })
  })

/** Resolves with what the socket received once `text` is among it. */
const waitForText = (socket: Socket, text: string, timeoutMs = 10_000) =>
  new Promise<void>((resolve, reject) => {
    let received = ""
    const timer = setTimeout(
      () => reject(new Error(`no ${JSON.stringify(text)} within ${timeoutMs} ms`)),
      timeoutMs,
    )
    const onData = (chunk: Buffer) => {
      received += chunk.toString("latin1")
      if (!received.includes(text)) return
      clearTimeout(timer)
      socket.off("data", onData)
      resolve()
    }
    socket.on("data", onData)
  })

/** A v2 PROXY header (command PROXY, TCP over IPv4) claiming `source`. */
const v2Header = (source: [number, number, number, number], sourcePort: number) => {
  const block = Buffer.alloc(16)
  block[0] = 0x21
  block[1] = 0x11
  block.writeUInt16BE(12, 2)
  Buffer.from(source).copy(block, 4)
  Buffer.from([127, 0, 0, 1]).copy(block, 8)
  block.writeUInt16BE(sourcePort, 12)
  block.writeUInt16BE(8022, 14)
  return Buffer.concat([proxyV2Signature, block])
}

const v2Local = () => Buffer.concat([proxyV2Signature, Buffer.from([0x20, 0x00, 0x00, 0x00])])

describe.skipIf(withoutHaproxy)("the SSH listener behind HAProxy", () => {
  it("OpenSSH through HAProxy (PROXY v2): from=, the log and the audit see the client's own address", async () => {
    if (gateway === undefined || haproxyV2 === undefined || nearKey === undefined) throw new Error("no setup")
    const through = await opensshPing(haproxyV2.port, "127.0.0.2", nearKey)
    expect(through.code, through.stderr).toBe(0)
    expect(through.stdout).toContain('"id":1')
    const audit = await gateway.waitForLog(/audit=true .*method=ping .*remote=127\.0\.0\.2:\d+ /)
    expect(audit).not.toMatch(/remote=127\.0\.0\.1:/)
    const authenticated = await gateway.waitForLog(/message=authenticated .*remote=127\.0\.0\.2:/)
    expect(authenticated).toMatch(/proxy=127\.0\.0\.1:\d+/)

    // The same key from another address: from="127.0.0.2" does not let it in, as the header says.
    const elsewhere = await opensshPing(haproxyV2.port, "127.0.0.3", nearKey)
    expect(elsewhere.code).toBe(255)
    await gateway.waitForLog(/authentication failed: .*remote=127\.0\.0\.3:\d+/)
  })

  it("ssh2 through HAProxy (PROXY v1): the audit sees the client's address", async () => {
    if (gateway === undefined || haproxyV1 === undefined) throw new Error("no setup")
    const client = await connect(gateway, { port: haproxyV1.port, localAddress: "127.0.0.3" })
    try {
      const channel = await openLineChannel(client, { exec: "mini" })
      await channel.initialize()
      await channel.request("v1-echo", "tools/call", { name: "mini__echo", arguments: { message: "hi" } })
      await gateway.waitForLog(/audit=true .*target=mini__echo remote=127\.0\.0\.3:\d+ /)
    } finally {
      client.end()
    }
  })

  it("refuses a trusted proxy's connection that opens without a PROXY header", async () => {
    if (gateway === undefined) throw new Error("no setup")
    // ssh2 straight to the gateway from 127.0.0.1, which --trusted-proxies names.
    await expect(connect(gateway, { localAddress: "127.0.0.1" })).rejects.toThrow()
    await gateway.waitForLog(/refused connection: no PROXY protocol header from a trusted proxy/)
  })

  it("refuses a PROXY header (v2 or v1) from a peer that --trusted-proxies does not name", async () => {
    if (gateway === undefined) throw new Error("no setup")
    const refusal =
      /refused connection: a PROXY protocol header from 127\.0\.0\.2, which --trusted-proxies does not name/
    const before = gateway
      .log()
      .split("\n")
      .filter((line) => refusal.test(line)).length
    for (const header of [
      Buffer.concat([v2Header([127, 0, 0, 9], 40_000), Buffer.from("SSH-2.0-OpenSSH_9.2\r\n")]),
      Buffer.from("PROXY TCP4 127.0.0.9 127.0.0.1 40000 8022\r\nSSH-2.0-OpenSSH_9.2\r\n"),
    ]) {
      const socket = await rawSocket(gateway.port, "127.0.0.2")
      const closed = readUntilClosed(socket)
      socket.write(header)
      const { timedOut } = await closed
      expect(timedOut).toBe(false)
    }
    const log = gateway.log()
    expect(log.split("\n").filter((line) => refusal.test(line))).toHaveLength(before + 2)
    expect(log).not.toMatch(/remote=127\.0\.0\.9:/)
  })

  it("applies the per-source startup cap to the address in the header, not to the proxy's", async () => {
    if (gateway === undefined || haproxyV2 === undefined) throw new Error("no setup")
    // Two unauthenticated connections from 127.0.0.4 through HAProxy: the gateway's banner shows each
    // was admitted; a third from there is refused (--max-startups-per-source 2).
    const held: Array<Socket> = []
    try {
      for (let index = 0; index < 2; index++) {
        const socket = await rawSocket(haproxyV2.port, "127.0.0.4")
        held.push(socket)
        await waitForText(socket, "SSH-2.0-mcp-ssh")
      }
      const third = await rawSocket(haproxyV2.port, "127.0.0.4")
      const { received, timedOut } = await readUntilClosed(third)
      expect(timedOut).toBe(false)
      expect(received).not.toContain("SSH-2.0")
      await gateway.waitForLog(
        /refused connection: \d+ unauthenticated connections \(2 from this address\) at the limit.*remote=127\.0\.0\.4:/,
      )
      // Everyone else still gets in through the same proxy: the cap is not the proxy's.
      const client = await connect(gateway, { port: haproxyV2.port, localAddress: "127.0.0.5" })
      client.end()
      await gateway.waitForLog(/message=authenticated .*remote=127\.0\.0\.5:/)
    } finally {
      for (const socket of held) socket.destroy()
    }
  })

  it("reads a header that comes in pieces, and hands ssh2 the bytes that follow it in the same read", async () => {
    if (gateway === undefined) throw new Error("no setup")
    // In pieces, then an ssh2 login over the same socket: the address is the header's.
    const pieces = await rawSocket(gateway.port, "127.0.0.1")
    const header = v2Header([127, 0, 0, 7], 40_007)
    for (const [from, to] of [
      [0, 5],
      [5, 13],
      [13, header.length],
    ] as const) {
      pieces.write(header.subarray(from, to))
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const client = await connect(gateway, { sock: pieces })
    client.end()
    await gateway.waitForLog(/message=authenticated .*remote=127\.0\.0\.7:40007( |$)/)

    // The header and the client's identification line in one write: the gateway answers with its
    // key exchange, which ssh2 sends only once it has read the client's line.
    const together = await rawSocket(gateway.port, "127.0.0.1")
    let received = Buffer.alloc(0)
    const kexinit = new Promise<void>((resolve) => {
      together.on("data", (chunk: Buffer) => {
        received = Buffer.concat([received, chunk])
        const banner = received.indexOf("\r\n")
        if (banner !== -1 && received.length > banner + 2 + 5) resolve()
      })
    })
    together.write(Buffer.concat([v2Header([127, 0, 0, 8], 40_008), Buffer.from("SSH-2.0-OpenSSH_9.2\r\n")]))
    try {
      await kexinit
      expect(received.toString("latin1")).toMatch(/^SSH-2\.0-mcp-ssh\r\n/)
      // Message 20 (KEXINIT) in the first binary packet: 4 bytes of length, 1 of padding length.
      expect(received[received.indexOf("\r\n") + 2 + 5]).toBe(20)
    } finally {
      together.destroy()
    }
  })

  it("serves a trusted proxy's LOCAL connection (a health check) as the proxy's own", async () => {
    if (gateway === undefined) throw new Error("no setup")
    const socket = await rawSocket(gateway.port, "127.0.0.1")
    const localPort = socket.localPort
    socket.write(v2Local())
    const client = await connect(gateway, { sock: socket })
    client.end()
    const line = await gateway.waitForLog(
      new RegExp(`message=authenticated .*remote=127\\.0\\.0\\.1:${localPort}( |$)`),
    )
    expect(line).toMatch(new RegExp(escapeRegExp(`proxy=127.0.0.1:${localPort}`)))
  })
})
