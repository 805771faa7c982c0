/**
 * Attacks on the SSH layer, against the real gateway (`node dist/main.js`): raw TCP sockets that break
 * the protocol before and after key exchange, weak client keys, requests and channels the gateway never
 * grants, and clients that go silent. Each case checks what the attacker sees, the one log line that
 * names the peer and the reason, that an honest session opened before the attack goes on, and that the
 * gateway's file descriptors go back to where they were.
 */
import { execFileSync, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { readFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { type Socket, connect as tcpConnect } from "node:net"
import { join } from "node:path"
import ssh2, { type Algorithms, type ClientChannel, type Client as Ssh2Connection } from "ssh2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { maxIdentificationBytes } from "../src/gateway/ssh/SshServer.js"
import {
  type ClientKey,
  disposeGateway,
  type GatewayOptions,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import {
  childrenOf,
  memoryKiB,
  openDescriptorCount,
  waitForDescriptorsBackTo,
  waitUntil,
} from "./support/processes.js"
import { connect, LineChannel, openLineChannel, opensshArgs } from "./support/ssh.js"

const { Client } = ssh2

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

const mini = node("mini-server.mjs")
/** A server that starts in a few milliseconds and never answers: cheap children for channel churn. */
const sink = { command: "/bin/sh", args: ["-c", "exec cat >/dev/null"] }

// ---------------------------------------------------------------------------------------------
// The gateway under attack, and an honest client beside the attacker

interface Target {
  readonly gateway: RunningGateway
  /** Calls mini's echo tool through a session opened before any attack. */
  readonly honestCall: () => Promise<void>
  /** The gateway's open descriptors with the honest session in place. */
  readonly baseline: number
  readonly close: () => Promise<void>
}

const startTarget = async (options: GatewayOptions): Promise<Target> => {
  const gateway = await startGateway({ servers: { mini }, ...options })
  const connection = await connect(gateway)
  const channel = await openLineChannel(connection, { exec: "mini" })
  await channel.initialize()
  let calls = 0
  const honestCall = async () => {
    const id = `honest-${++calls}`
    channel.send({
      jsonrpc: "2.0",
      id,
      method: "tools/call",
      params: { name: "mini__echo", arguments: { message: id } },
    })
    expect(await channel.response(id)).toMatchObject({ result: { content: [{ type: "text", text: id }] } })
  }
  await honestCall()
  return {
    gateway,
    honestCall,
    baseline: openDescriptorCount(gateway.pid),
    close: async () => {
      connection.end()
      await disposeGateway(gateway)
    },
  }
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

/** The gateway's log line whose message is `message` (or starts so) about the peer at `port`. */
const logAbout = (message: string | { readonly startsWith: string }, port: number) => {
  // logfmt quotes a message as JSON does.
  const quoted =
    typeof message === "string" ? JSON.stringify(message) : JSON.stringify(message.startsWith).slice(0, -1)
  return new RegExp(`message=${escapeRegExp(quoted)}.*remote=127\\.0\\.0\\.1:${port}(\\s|$)`)
}

// ---------------------------------------------------------------------------------------------
// Raw TCP peers

interface RawPeer {
  readonly socket: Socket
  /** The peer's own port, as the gateway's log names it. */
  readonly port: number
  /** Everything the gateway sent so far. */
  readonly received: () => Buffer
  /** Resolves, with the milliseconds since connecting, when the gateway ends or resets the connection. */
  readonly disconnected: Promise<number>
}

/** A TCP connection that keeps its own side open when the gateway ends its side, as an attacker would. */
const openRaw = (port: number) =>
  new Promise<RawPeer>((resolve, reject) => {
    const socket = tcpConnect({ host: "127.0.0.1", port, allowHalfOpen: true })
    const chunks: Array<Buffer> = []
    socket.on("data", (chunk: Buffer) => chunks.push(chunk))
    socket.once("error", reject)
    socket.once("connect", () => {
      const start = Date.now()
      // Writes that meet a closed connection fail with EPIPE or ECONNRESET: that is the point.
      socket.off("error", reject).on("error", () => {})
      const disconnected = new Promise<number>((done) => {
        socket.once("end", () => done(Date.now() - start))
        socket.once("close", () => done(Date.now() - start))
      })
      resolve({ socket, port: socket.localPort ?? 0, received: () => Buffer.concat(chunks), disconnected })
    })
  })

const gone = (socket: Socket) => socket.destroyed || !socket.writable

/** Write `chunk` until `total` bytes or until the connection is cut; returns the bytes the socket took. */
const flood = async (socket: Socket, chunk: Buffer, total: number): Promise<number> => {
  let written = 0
  while (written < total && !gone(socket)) {
    written += chunk.length
    if (!socket.write(chunk)) {
      await new Promise<void>((resume) => {
        const done = () => {
          socket.off("drain", done).off("close", done)
          resume()
        }
        socket.once("drain", done).once("close", done)
      })
    }
  }
  return written
}

/** Write `chunk` every `everyMs` until `total` bytes or until the connection is cut. */
const trickle = async (socket: Socket, chunk: Buffer, everyMs: number, total: number): Promise<number> => {
  let written = 0
  while (written < total && !gone(socket)) {
    socket.write(chunk)
    written += chunk.length
    await sleep(everyMs)
  }
  return written
}

/** An ssh2 client over a socket of our own, to know its port and to write on it behind ssh2's back. */
const connectFrom = async (gateway: RunningGateway, config: Parameters<typeof connect>[1] = {}) => {
  const sock = await new Promise<Socket>((resolve, reject) => {
    const socket = tcpConnect({ host: "127.0.0.1", port: gateway.port }, () => resolve(socket))
    socket.once("error", reject)
  })
  const connection = await connect(gateway, { sock, ...config })
  return { connection, sock, port: sock.localPort ?? 0 }
}

/** Resolves with the error a callback-style ssh2 request ends with (and fails if it succeeds). */
const refusal = (request: (done: (error: Error | undefined) => void) => void) =>
  new Promise<Error & { reason?: number }>((resolve, reject) =>
    request((error) => (error ? resolve(error) : reject(new Error("the gateway granted the request")))),
  )

// ---------------------------------------------------------------------------------------------

describe("the identification exchange", () => {
  let target: Target
  beforeAll(async () => {
    // A long grace time: every attack below must be cut well before it.
    target = await startTarget({ flags: ["--login-grace-time", "60"] })
  })
  afterAll(() => target.close())

  it(`cuts an identification line longer than ${maxIdentificationBytes} bytes sent at once`, async () => {
    const peer = await openRaw(target.gateway.port)
    peer.socket.write(`SSH-2.0-${"x".repeat(20_000)}`)
    expect(await peer.disconnected).toBeLessThan(5000)
    expect(peer.received().toString("latin1")).toMatch(/^SSH-2\.0-mcp-ssh\r\n/)
    await target.gateway.waitForLog(
      logAbout(`closed: identification line longer than ${maxIdentificationBytes} bytes`, peer.port),
    )
    await target.honestCall()
    // The gateway let go of its socket, although the attacker keeps its own side open.
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
    peer.socket.destroy()
  })

  it("cuts an identification line that trickles in without end, once it passes the limit", async () => {
    const peer = await openRaw(target.gateway.port)
    peer.socket.write("SSH-2.0-")
    // ssh2 alone measures the line per read, so small reads never reach its limit.
    const sent = trickle(peer.socket, Buffer.alloc(512, "y"), 10, 4 * 1024 * 1024)
    await target.honestCall()
    expect(await peer.disconnected).toBeLessThan(10_000)
    expect(await sent).toBeLessThan(64 * 1024)
    await target.gateway.waitForLog(
      logAbout(`closed: identification line longer than ${maxIdentificationBytes} bytes`, peer.port),
    )
    await target.honestCall()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
    peer.socket.destroy()
  })

  it.each([
    ["lines before the identification, without end", "hello\r\n"],
    ["an HTTP request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n"],
    ["an SSH-1 identification", "SSH-1.5-OpenSSH_1.2.3\r\n"],
  ])("cuts %s at the first line, with a sample in the log", async (_what, line) => {
    const peer = await openRaw(target.gateway.port)
    const sent = trickle(peer.socket, Buffer.from(line), 10, 1024 * 1024)
    expect(await peer.disconnected).toBeLessThan(5000)
    expect(await sent).toBeLessThan(64 * 1024)
    await target.gateway.waitForLog(
      // The sample is what came first (the line, maybe followed by more of the same).
      logAbout(
        { startsWith: `closed: invalid identification line ${JSON.stringify(line).slice(0, -1)}` },
        peer.port,
      ),
    )
    await target.honestCall()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
    peer.socket.destroy()
  })

  it("refuses a packet length of 2 GiB before key exchange without reading the packet", async () => {
    const peer = await openRaw(target.gateway.port)
    const rssBefore = memoryKiB(target.gateway.pid, "VmRSS")
    const length = Buffer.alloc(4)
    length.writeUInt32BE(0x7fffffff)
    peer.socket.write(Buffer.concat([Buffer.from("SSH-2.0-attacker\r\n"), length]))
    // ssh2 keeps that length after refusing it: whatever came next went into a buffer of 2 GiB.
    const sent = await flood(peer.socket, Buffer.alloc(64 * 1024, 1), 64 * 1024 * 1024)
    expect(await peer.disconnected).toBeLessThan(5000)
    expect(sent).toBeLessThan(16 * 1024 * 1024)
    expect(memoryKiB(target.gateway.pid, "VmRSS") - rssBefore).toBeLessThan(24 * 1024)
    await target.gateway.waitForLog(logAbout("closed: protocol error: Bad packet length", peer.port))
    await target.honestCall()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
    peer.socket.destroy()
  })

  it("offers only the modern algorithms in its key exchange", async () => {
    const peer = await openRaw(target.gateway.port)
    // ssh2 sends its offer once it has the client's identification.
    peer.socket.write("SSH-2.0-curious\r\n")
    // After the identification line: uint32 length, byte padding, byte 20 (KEXINIT), 16-byte cookie,
    // then ten name-lists.
    const packetStart = () => peer.received().indexOf("\r\n") + 2
    await waitUntil(
      () => {
        const bytes = peer.received()
        const start = packetStart()
        return start > 1 && bytes.length >= start + 4 && bytes.length >= start + 4 + bytes.readUInt32BE(start)
      },
      5000,
      "the gateway's KEXINIT",
    )
    const bytes = peer.received()
    let offset = packetStart() + 4 + 1
    expect(bytes[offset]).toBe(20)
    offset += 1 + 16
    const lists: Array<Array<string>> = []
    for (let n = 0; n < 10; n++) {
      const size = bytes.readUInt32BE(offset)
      lists.push(bytes.toString("latin1", offset + 4, offset + 4 + size).split(","))
      offset += 4 + size
    }
    const [kex, hostKeys, cipherIn, cipherOut, macIn, macOut, compressIn, compressOut] = lists
    expect(kex?.filter((name) => !name.startsWith("kex-strict-") && name !== "ext-info-s")).toEqual([
      "curve25519-sha256",
      "curve25519-sha256@libssh.org",
    ])
    expect(hostKeys).toEqual(["ssh-ed25519"])
    for (const ciphers of [cipherIn, cipherOut]) {
      expect(ciphers).toEqual([
        "aes256-gcm@openssh.com",
        "aes128-gcm@openssh.com",
        "aes256-ctr",
        "aes192-ctr",
        "aes128-ctr",
      ])
    }
    for (const macs of [macIn, macOut]) {
      expect(macs).toEqual(["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"])
    }
    expect([compressIn, compressOut]).toEqual([["none"], ["none"]])
    peer.socket.destroy()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  })

  it.each([
    ["cipher", "Ciphers=aes128-cbc", "no matching cipher found", "no matching C->S cipher"],
    [
      "key exchange",
      "KexAlgorithms=diffie-hellman-group14-sha1",
      "no matching key exchange method found",
      "no matching key exchange algorithm",
    ],
    ["MAC", "MACs=hmac-sha1", "no matching MAC found", "no matching C->S MAC"],
    [
      "host key",
      "HostKeyAlgorithms=ssh-rsa",
      "no matching host key type found",
      "no matching host key format",
    ],
  ])("refuses an OpenSSH client that only speaks an old %s", async (_what, option, complaint, reason) => {
    // OpenSSH takes the first value given: this LogLevel wins over the ERROR in opensshArgs.
    const ssh = spawn("ssh", ["-o", "LogLevel=INFO", "-o", option, ...opensshArgs(target.gateway)], {
      stdio: ["ignore", "pipe", "pipe"],
    })
    let stderr = ""
    ssh.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    expect(await new Promise((resolve) => ssh.once("close", resolve))).toBe(255)
    expect(stderr).toContain(`Unable to negotiate with 127.0.0.1 port ${target.gateway.port}: ${complaint}`)
    await target.gateway.waitForLog(
      new RegExp(
        `message=${escapeRegExp(JSON.stringify(`closed: protocol error: Handshake failed: ${reason}`))}`,
      ),
    )
    await target.honestCall()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  })
})

describe("a client that sends its identification and goes silent", () => {
  let target: Target
  beforeAll(async () => {
    target = await startTarget({ flags: ["--login-grace-time", "2"] })
  })
  afterAll(() => target.close())

  it("is closed at the login grace time, while others go on", async () => {
    const peer = await openRaw(target.gateway.port)
    peer.socket.write("SSH-2.0-silent\r\n")
    await target.honestCall()
    const elapsed = await peer.disconnected
    expect(elapsed).toBeGreaterThanOrEqual(1800)
    expect(elapsed).toBeLessThan(8000)
    // It saw the gateway's identification, then the close.
    expect(peer.received().toString("latin1")).toMatch(/^SSH-2\.0-mcp-ssh\r\n/)
    await target.gateway.waitForLog(logAbout("closed: not authenticated within 2s", peer.port))
    await target.honestCall()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
    peer.socket.destroy()
  })
})

describe("the transport after key exchange", () => {
  let target: Target
  beforeAll(async () => {
    target = await startTarget({ flags: ["--login-grace-time", "60"] })
  })
  afterAll(() => target.close())

  it("refuses a packet length of 2 GiB right after key exchange, before authentication", async () => {
    const sock = await new Promise<Socket>((resolve, reject) => {
      const socket = tcpConnect({ host: "127.0.0.1", port: target.gateway.port }, () => resolve(socket))
      socket.once("error", reject)
    })
    const port = sock.localPort ?? 0
    const client = new Client()
    client.on("error", () => {})
    const closed = new Promise<number>((resolve) => sock.once("close", () => resolve(Date.now())))
    const sent = new Promise<{ at: number; bytes: number }>((resolve) => {
      client.once("handshake", () => {
        const at = Date.now()
        // The length of an AES-GCM or ETM packet travels in the clear, so it can be forged.
        const length = Buffer.alloc(4)
        length.writeUInt32BE(0x7fffffff)
        sock.write(length)
        void flood(sock, Buffer.alloc(64 * 1024, 2), 32 * 1024 * 1024).then((bytes) => resolve({ at, bytes }))
      })
    })
    client.connect({
      sock,
      username: "mcp",
      privateKey: readFileSync(target.gateway.clientKey.privatePath),
      hostVerifier: () => true,
    })
    const { at, bytes } = await sent
    expect((await closed) - at).toBeLessThan(5000)
    expect(bytes).toBeLessThan(16 * 1024 * 1024)
    await target.gateway.waitForLog(logAbout("closed: protocol error: Bad packet length: 2147483647", port))
    await target.honestCall()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  })

  /** An authenticated client with a live MCP session (and its child), whose socket we then spoil. */
  const sessionToSpoil = async (algorithms?: Algorithms) => {
    const childrenBefore = childrenOf(target.gateway.pid).length
    const { connection, sock, port } = await connectFrom(
      target.gateway,
      algorithms === undefined ? {} : { algorithms },
    )
    connection.on("error", () => {})
    const channel = await openLineChannel(connection, { exec: "mini" })
    await channel.initialize()
    await waitUntil(() => childrenOf(target.gateway.pid).length === childrenBefore + 1, 10_000, "the child")
    const closed = new Promise<number>((resolve) => connection.once("close", () => resolve(Date.now())))
    return { sock, port, closed, childrenBefore, channel }
  }

  const endsCleanly = async (spoiled: Awaited<ReturnType<typeof sessionToSpoil>>, at: number) => {
    expect((await spoiled.closed) - at).toBeLessThan(5000)
    // The session's child goes with the connection.
    await waitUntil(
      () => childrenOf(target.gateway.pid).length === spoiled.childrenBefore,
      10_000,
      "the spoiled session's child to stop",
    )
    await target.honestCall()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  }

  it("disconnects a session whose stream turns into random bytes", async () => {
    const spoiled = await sessionToSpoil()
    await target.honestCall()
    const at = Date.now()
    spoiled.sock.write(randomBytes(4096))
    await target.gateway.waitForLog(logAbout({ startsWith: "closed: protocol error: " }, spoiled.port))
    await endsCleanly(spoiled, at)
  })

  it.each<[string, Algorithms, string]>([
    ["AES-GCM", { cipher: ["aes128-gcm@openssh.com"] }, "closed: protocol error: packet failed to decrypt ("],
    [
      "AES-CTR with an ETM MAC",
      { cipher: ["aes128-ctr"], hmac: ["hmac-sha2-256-etm@openssh.com"] },
      "closed: protocol error: Invalid MAC",
    ],
  ])("disconnects on a well-framed packet with a forged MAC (%s)", async (_suite, algorithms, message) => {
    const spoiled = await sessionToSpoil(algorithms)
    const length = Buffer.alloc(4)
    length.writeUInt32BE(32)
    const at = Date.now()
    // A plausible length, then 32 bytes and a 16- or 32-byte tag that no key made.
    spoiled.sock.write(Buffer.concat([length, randomBytes(32 + 32)]))
    await target.gateway.waitForLog(logAbout({ startsWith: message }, spoiled.port))
    await endsCleanly(spoiled, at)
  })
})

/** OpenSSH 9.8 and later are built without DSA: then only a hand-made public line can be tested. */
const opensshMakesDsaKeys = execFileSync("ssh", ["-Q", "key"]).toString().split("\n").includes("ssh-dss")

describe("weak client keys", () => {
  let target: Target
  let keys: string
  let authorizedBefore: string
  let rsa1024: ClientKey
  let dsa: ClientKey | undefined
  let rsa2048: ClientKey

  /** ssh-keygen with a size makeKey does not offer. */
  const weakKey = (type: "rsa" | "dsa"): ClientKey => {
    const privatePath = join(keys, `${type}-1024`)
    execFileSync("ssh-keygen", ["-q", "-t", type, "-b", "1024", "-N", "", "-C", "weak", "-f", privatePath])
    return {
      privatePath,
      publicLine: execFileSync("ssh-keygen", ["-y", "-f", privatePath]).toString().trim(),
    }
  }
  /** A DSA public line (string "ssh-dss", then p, q, g, y), for when no tool here makes DSA keys. */
  const handMadeDsaLine = () => {
    const field = (bytes: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, bytes.length]), bytes])
    const parts = [Buffer.from("ssh-dss"), ...[1, 2, 3, 4].map((n) => Buffer.alloc(20, n))]
    return `ssh-dss ${Buffer.concat(parts.map(field)).toString("base64")} weak`
  }

  beforeAll(async () => {
    keys = tempDir()
    rsa1024 = weakKey("rsa")
    dsa = opensshMakesDsaKeys ? weakKey("dsa") : undefined
    rsa2048 = makeKey(keys, "rsa-2048", "rsa")
    // Lines 2 and 3 are refused at load; line 4 is a good RSA key.
    target = await startTarget({
      authorizedLines: [rsa1024.publicLine, dsa?.publicLine ?? handMadeDsaLine(), rsa2048.publicLine],
      flags: ["--max-auth-tries", "10"],
    })
    authorizedBefore = readFileSync(target.gateway.authorizedKeysPath, "utf8")
  })
  afterAll(async () => {
    await target.close()
    await rm(keys, { recursive: true, force: true })
  })

  it("refuses RSA-1024 and DSA lines of the authorized keys file at load, saying why", async () => {
    const file = escapeRegExp(target.gateway.authorizedKeysPath)
    await target.gateway.waitForLog(
      new RegExp(`${file}:2: ignored: RSA key has 1024 bits; at least 2048 are required`),
    )
    await target.gateway.waitForLog(
      new RegExp(`${file}:3: ignored: DSA keys are not accepted \\(insecure\\); use ed25519`),
    )
    await target.gateway.waitForLog(/loaded 2 authorized key\(s\)/)
  })

  /** Offer the key with ssh2's client: refused, logged with its fingerprint, and the file untouched. */
  const refusedLogin = async (key: ClientKey, type: string) => {
    const fingerprint = execFileSync("ssh-keygen", ["-l", "-E", "sha256", "-f", key.privatePath])
      .toString()
      .split(" ")[1]
    await expect(connectFrom(target.gateway, { privateKey: readFileSync(key.privatePath) })).rejects.toThrow(
      /All configured authentication methods failed/,
    )
    await target.gateway.waitForLog(
      new RegExp(
        `authentication failed: key ${type} is not authorized \\(${escapeRegExp(fingerprint ?? "?")}\\)`,
      ),
    )
    await target.honestCall()
    expect(readFileSync(target.gateway.authorizedKeysPath, "utf8")).toBe(authorizedBefore)
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  }

  it("refuses a login with an RSA-1024 key, and keeps the file as it was", () =>
    refusedLogin(rsa1024, "ssh-rsa"))

  it.skipIf(!opensshMakesDsaKeys)("refuses a login with a DSA key, and keeps the file as it was", () =>
    refusedLogin(dsa as ClientKey, "ssh-dss"),
  )

  it("lets an RSA-2048 key in with a SHA-2 signature", async () => {
    const { connection } = await connectFrom(target.gateway, {
      privateKey: readFileSync(rsa2048.privatePath),
    })
    const channel = await openLineChannel(connection, { exec: "mini" })
    expect(await channel.request(1, "ping")).toMatchObject({ result: {} })
    connection.end()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  })

  it("refuses an RSA-2048 key signing with SHA-1 (ssh-rsa), as OpenSSH's sshd does", async () => {
    const ssh = spawn(
      "ssh",
      ["-o", "PubkeyAcceptedAlgorithms=ssh-rsa", ...opensshArgs(target.gateway, rsa2048.privatePath)],
      { stdio: ["ignore", "pipe", "pipe"] },
    )
    let stderr = ""
    ssh.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
    })
    const code = await new Promise<number | null>((resolve) => ssh.once("close", resolve))
    expect(code).toBe(255)
    expect(stderr).toMatch(/Permission denied \(publickey\)/)
    await target.gateway.waitForLog(
      /authentication failed: signature algorithm ssh-rsa \(SHA-1\) is not accepted; sign with rsa-sha2-256 or rsa-sha2-512/,
    )
    await target.honestCall()
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  })
})

describe("requests the gateway never grants", () => {
  let target: Target
  beforeAll(async () => {
    target = await startTarget({})
  })
  afterAll(() => target.close())

  /** An agent with no keys, only so ssh2 asks for agent forwarding. */
  class EmptyAgent extends ssh2.BaseAgent {
    getIdentities(callback: (error: Error | undefined, keys?: Array<Buffer>) => void): void {
      callback(undefined, [])
    }
    sign(_key: unknown, _data: Buffer, ...rest: Array<unknown>): void {
      const callback = rest.find((arg) => typeof arg === "function") as (error: Error | undefined) => void
      callback(new Error("no keys"))
    }
  }

  const execWith =
    // ssh2 reads agentForward from exec options, though its types do not list it.
      (connection: Ssh2Connection, options: ssh2.ExecOptions & { agentForward?: boolean }) =>
      (done: (error?: Error) => void) =>
        connection.exec("mini", options, (error, channel: ClientChannel) => {
          channel?.close()
          done(error)
        })

  it.each([
    [
      "a pty",
      {},
      (c: Ssh2Connection) => execWith(c, { pty: true }),
      /Unable to request a pseudo-terminal/,
      "refused pty request",
    ],
    [
      "X11 forwarding",
      {},
      (c: Ssh2Connection) => execWith(c, { x11: true }),
      /Unable to request X11/,
      "refused x11 request",
    ],
    [
      "agent forwarding",
      // Asked for on one channel only (agentForward in the connect config would ask on every one).
      { agent: new EmptyAgent() },
      (c: Ssh2Connection) => execWith(c, { agentForward: true }),
      /Unable to request agent forwarding/,
      "refused agent forwarding request",
    ],
    [
      "an unknown subsystem",
      {},
      (c: Ssh2Connection) => (done: (error?: Error) => void) => c.subsys("sftp", (error) => done(error)),
      /Unable to start subsystem: sftp/,
      "refused subsystem 'sftp' request",
    ],
    [
      "a remote port forward (tcpip-forward)",
      {},
      (c: Ssh2Connection) => (done: (error?: Error) => void) =>
        c.forwardIn("127.0.0.1", 0, (error) => done(error)),
      /Unable to bind to 127\.0\.0\.1:0/,
      "refused global request tcpip-forward",
    ],
    [
      "a local port forward (direct-tcpip)",
      {},
      (c: Ssh2Connection) => (done: (error?: Error) => void) =>
        c.forwardOut("127.0.0.1", 1, "127.0.0.1", 22, (error) => done(error)),
      /Channel open failure/,
      "refused direct-tcpip channel to 127.0.0.1:22",
    ],
    [
      "a remote socket forward (streamlocal-forward)",
      { strictVendor: false },
      (c: Ssh2Connection) => (done: (error?: Error) => void) =>
        c.openssh_forwardInStreamLocal("/tmp/mcp-ssh-attack.sock", (error) => done(error ?? undefined)),
      /Unable to bind to \/tmp\/mcp-ssh-attack\.sock/,
      "refused global request streamlocal-forward@openssh.com",
    ],
    [
      "a local socket forward (direct-streamlocal)",
      { strictVendor: false },
      (c: Ssh2Connection) => (done: (error?: Error) => void) =>
        c.openssh_forwardOutStreamLocal("/run/docker.sock", (error) => done(error)),
      /Channel open failure/,
      'refused direct-streamlocal channel to "/run/docker.sock"',
    ],
  ] as const)(
    "refuses %s, logs it, and the connection goes on",
    async (_what, config, request, error, log) => {
      const { connection, port } = await connectFrom(target.gateway, config)
      try {
        expect((await refusal(request(connection))).message).toMatch(error)
        await target.gateway.waitForLog(logAbout(log, port))
        const channel = await openLineChannel(connection, { exec: "mini" })
        expect(await channel.request(1, "ping")).toMatchObject({ result: {} })
        await target.honestCall()
      } finally {
        connection.end()
      }
      await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
    },
  )

  it("refuses environment variables: none reaches the child", async () => {
    const { connection, port } = await connectFrom(target.gateway)
    try {
      const channel = await new Promise<LineChannel>((resolve, reject) =>
        connection.exec("mini", { env: { MCP_SSH_INJECTED: "from-the-client" } }, (error, opened) =>
          error ? reject(error) : resolve(new LineChannel(opened)),
        ),
      )
      await channel.initialize()
      const answer = JSON.stringify(
        await channel.request("env", "tools/call", { name: "mini__env", arguments: {} }),
      )
      expect(answer).toContain("PATH")
      expect(answer).not.toContain("MCP_SSH_INJECTED")
      await target.gateway.waitForLog(logAbout("refused env request", port))
    } finally {
      connection.end()
    }
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  })
})

describe("session channels", () => {
  let target: Target
  beforeAll(async () => {
    // The sink never answers: the gateway's probe of it at start gives up after --startup-timeout.
    target = await startTarget({
      servers: { mini, sink },
      flags: ["--max-sessions", "2", "--startup-timeout", "1"],
    })
  })
  afterAll(() => target.close())

  const openSession = (connection: Ssh2Connection, command: string) =>
    new Promise<ClientChannel>((resolve, reject) =>
      connection.exec(command, (error, channel) => (error ? reject(error) : resolve(channel))),
    )

  it("answers a channel beyond --max-sessions with a channel-open failure; the first ones go on", async () => {
    const { connection, port } = await connectFrom(target.gateway)
    try {
      const first = await openLineChannel(connection, { exec: "mini" })
      const second = await openLineChannel(connection, { exec: "mini" })
      const extra = await refusal((done) => connection.exec("mini", (error) => done(error)))
      expect(extra.message).toBe("(SSH) Channel open failure: ")
      // ssh2's server answers a refused session with CONNECT_FAILED (2); it takes no other reason.
      expect(extra.reason).toBe(2)
      await target.gateway.waitForLog(logAbout("refused session: 2 already open", port))
      expect(await first.request(1, "ping")).toMatchObject({ result: {} })
      expect(await second.request(1, "ping")).toMatchObject({ result: {} })
      // A closed channel frees its place.
      first.channel.close()
      await first.exit
      const third = await openLineChannel(connection, { exec: "mini" })
      expect(await third.request(1, "ping")).toMatchObject({ result: {} })
      await target.honestCall()
    } finally {
      connection.end()
    }
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
  })

  it("opens and closes 500 channels, each with its child, and keeps none of them", async () => {
    const childrenBefore = childrenOf(target.gateway.pid).length
    const { connection } = await connectFrom(target.gateway)
    try {
      for (let round = 0; round < 500; round++) {
        const channel = await openSession(connection, "sink")
        // A channel's 'close' waits until what it received has been read.
        channel.resume()
        channel.stderr.resume()
        const closed = new Promise((resolve) => channel.once("close", resolve))
        if (round % 100 === 0) {
          await waitUntil(() => childrenOf(target.gateway.pid).length > childrenBefore, 10_000, "a child")
          await target.honestCall()
        }
        channel.close()
        await closed
      }
      await target.honestCall()
    } finally {
      connection.end()
    }
    await waitUntil(
      () => childrenOf(target.gateway.pid).length === childrenBefore,
      30_000,
      "every channel's child to stop",
    )
    await waitForDescriptorsBackTo(target.gateway.pid, target.baseline, 30_000)
  }, 180_000)
})

describe("an authenticated client that goes silent", () => {
  let target: Target
  beforeAll(async () => {
    target = await startTarget({ flags: ["--keepalive-interval", "1", "--keepalive-count-max", "2"] })
  })
  afterAll(() => target.close())

  it("is dropped after the keepalive probes go unanswered, and its session's child with it", async () => {
    const childrenBefore = childrenOf(target.gateway.pid).length
    const ssh = spawn("ssh", opensshArgs(target.gateway), { stdio: ["pipe", "pipe", "pipe"] })
    try {
      let output = ""
      ssh.stdout.on("data", (chunk: Buffer) => {
        output += chunk.toString()
      })
      ssh.stdin.write(
        `${JSON.stringify({
          jsonrpc: "2.0",
          id: 1,
          method: "initialize",
          params: {
            protocolVersion: "2025-06-18",
            capabilities: {},
            clientInfo: { name: "stopped", version: "1" },
          },
        })}\n`,
      )
      await waitUntil(() => output.includes('"id":1'), 15_000, "the initialize answer")
      await waitUntil(
        () => childrenOf(target.gateway.pid).length > childrenBefore,
        10_000,
        "the session's child",
      )
      const logged = target.gateway.log().length
      // Stopped, the client's kernel still acknowledges every byte, but nothing answers a probe.
      ssh.kill("SIGSTOP")
      const stopped = Date.now()
      const line = await target.gateway.waitForLog(
        /message="closed: no answer to 2 keepalive probes 1s apart" remote=127\.0\.0\.1:\d+/,
        20_000,
      )
      const elapsed = Date.now() - stopped
      expect(target.gateway.log().indexOf(line)).toBeGreaterThanOrEqual(logged)
      // Three intervals without a packet: two probes, then the cut.
      expect(elapsed).toBeGreaterThanOrEqual(1500)
      expect(elapsed).toBeLessThan(12_000)
      await target.honestCall()
      await waitUntil(
        () => childrenOf(target.gateway.pid).length === childrenBefore,
        10_000,
        "the silent session's child to stop",
      )
      await waitForDescriptorsBackTo(target.gateway.pid, target.baseline)
    } finally {
      ssh.kill("SIGKILL")
      ssh.kill("SIGCONT")
    }
  })
})
