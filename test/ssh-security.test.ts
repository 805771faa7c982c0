/**
 * Authentication and the sshd-like limits, against the real gateway with real ssh2 clients and
 * raw TCP sockets.
 */
import { randomBytes } from "node:crypto"
import { readFileSync, rmSync, writeFileSync } from "node:fs"
import { type Socket, connect as tcpConnect } from "node:net"
import ssh2, { type ParsedKey } from "ssh2"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { disposeGateway, makeKey, type RunningGateway, startGateway, tempDir } from "./support/gateway.js"
import { connect, openChannel, openLineChannel } from "./support/ssh.js"

const { utils, BaseAgent } = ssh2

const parsePrivate = (path: string): ParsedKey => {
  const parsed = utils.parseKey(readFileSync(path))
  if (parsed instanceof Error || Array.isArray(parsed)) throw new Error(`cannot parse ${path}`)
  return parsed
}

/** An agent that offers an authorized public key but signs with garbage: the signature must fail. */
class ForgingAgent extends BaseAgent<ParsedKey> {
  constructor(private readonly key: ParsedKey) {
    super()
  }
  getIdentities(callback: (error: Error | undefined, keys?: Array<ParsedKey>) => void): void {
    callback(undefined, [this.key])
  }
  sign(_key: ParsedKey, _data: Buffer, ...rest: Array<unknown>): void {
    const callback = rest.find((arg) => typeof arg === "function") as (
      error: Error | undefined,
      sig?: Buffer,
    ) => void
    callback(undefined, randomBytes(64))
  }
}

/** Resolves when the server closes the socket, with how long that took. */
const closedAfter = (socket: Socket): Promise<number> => {
  const start = Date.now()
  return new Promise((resolve) => socket.once("close", () => resolve(Date.now() - start)))
}

const openSocket = (port: number): Promise<Socket> =>
  new Promise((resolve, reject) => {
    const socket = tcpConnect({ host: "127.0.0.1", port }, () => resolve(socket))
    // Read (and drop) what the server sends, so its close is seen.
    socket.resume()
    socket.on("error", reject)
  })

describe("authentication", () => {
  let gateway: RunningGateway
  let keys: string
  beforeAll(async () => {
    keys = tempDir()
    const commentTwin = makeKey(keys, "twin", "ed25519", "shared-comment")
    gateway = await startGateway({
      // A different key carrying the comment the "impostor" key below will have.
      authorizedLines: [commentTwin.publicLine],
      flags: ["--max-auth-tries", "3"],
    })
  })
  afterAll(async () => {
    await disposeGateway(gateway)
    rmSync(keys, { recursive: true, force: true })
  })

  it("lets in the authorized key, whatever the username", async () => {
    const connection = await connect(gateway, { username: "anyone-at-all" })
    const channel = await openLineChannel(connection)
    expect(await channel.request(1, "ping")).toMatchObject({ id: 1, result: {} })
    connection.end()
  })

  it("refuses an unknown key", async () => {
    const stranger = makeKey(keys, "stranger")
    await expect(connect(gateway, { privateKey: readFileSync(stranger.privatePath) })).rejects.toThrow(
      /authentication methods failed/,
    )
    await gateway.waitForLog(/key ssh-ed25519 is not authorized/)
  })

  it("refuses an authorized key whose signature is forged", async () => {
    const agent = new ForgingAgent(parsePrivate(gateway.clientKey.privatePath))
    await expect(connect(gateway, { privateKey: undefined, agent })).rejects.toThrow(
      /authentication methods failed/,
    )
    await gateway.waitForLog(/bad signature for SHA256:/)
  })

  it("refuses a key that matches an authorized one by comment only", async () => {
    const impostor = makeKey(keys, "impostor", "ed25519", "shared-comment")
    await expect(connect(gateway, { privateKey: readFileSync(impostor.privatePath) })).rejects.toThrow(
      /authentication methods failed/,
    )
  })

  it("refuses password and keyboard-interactive logins", async () => {
    await expect(
      connect(gateway, { privateKey: undefined, password: "secret", tryKeyboard: true }),
    ).rejects.toThrow(/authentication methods failed/)
  })

  it("disconnects after --max-auth-tries failures", async () => {
    const strangers = [1, 2, 3, 4, 5].map((n) => makeKey(keys, `many-${n}`))
    const attempts = strangers.map((key) => ({
      type: "publickey" as const,
      username: "mcp",
      key: parsePrivate(key.privatePath),
    }))
    await expect(connect(gateway, { privateKey: undefined, authHandler: attempts })).rejects.toThrow()
    await gateway.waitForLog(/disconnected after 3 failed authentication attempts/)
  })

  it("picks up edits to the authorized keys file without a restart", async () => {
    const late = makeKey(keys, "late")
    await expect(connect(gateway, { privateKey: readFileSync(late.privatePath) })).rejects.toThrow()
    writeFileSync(
      gateway.authorizedKeysPath,
      `${readFileSync(gateway.authorizedKeysPath, "utf8")}${late.publicLine}\n`,
    )
    const connection = await connect(gateway, { privateKey: readFileSync(late.privatePath) })
    connection.end()
  })

  it("ends the session of a key removed by hand right after it logged in", async () => {
    // Added, used and removed well within the watcher's one-second period.
    const brief = makeKey(keys, "brief")
    const before = readFileSync(gateway.authorizedKeysPath, "utf8")
    writeFileSync(gateway.authorizedKeysPath, `${before}${brief.publicLine}\n`)
    const connection = await connect(gateway, { privateKey: readFileSync(brief.privatePath) })
    const closed = new Promise<void>((resolve) => connection.once("close", () => resolve()))
    writeFileSync(gateway.authorizedKeysPath, before)
    const removedAt = Date.now()
    await closed
    expect(Date.now() - removedAt).toBeLessThan(5000)
    await gateway.waitForLog(/is no longer in .*: treated as revoked/)
  })
})

describe("connection limits", () => {
  let gateway: RunningGateway
  beforeAll(async () => {
    gateway = await startGateway({
      flags: ["--login-grace-time", "1", "--max-sessions", "2", "--max-startups-per-source", "3"],
    })
  })
  afterAll(() => disposeGateway(gateway))

  it("closes a silent TCP connection at the login grace time", async () => {
    const socket = await openSocket(gateway.port)
    const elapsed = await closedAfter(socket)
    expect(elapsed).toBeGreaterThanOrEqual(900)
    expect(elapsed).toBeLessThan(5000)
    await gateway.waitForLog(/not authenticated within 1s/)
  })

  it("allows --max-sessions session channels per connection", async () => {
    const connection = await connect(gateway)
    const first = await openLineChannel(connection)
    const second = await openLineChannel(connection)
    await expect(openChannel(connection, { subsystem: "mcp" })).rejects.toThrow()
    expect(await first.request(1, "ping")).toMatchObject({ result: {} })
    expect(await second.request(1, "ping")).toMatchObject({ result: {} })
    connection.end()
  })

  it("refuses pty, unknown subsystems and port forwarding", async () => {
    const connection = await connect(gateway)
    await expect(
      new Promise((resolve, reject) =>
        connection.exec("", { pty: true }, (error, ch) => (error ? reject(error) : resolve(ch))),
      ),
    ).rejects.toThrow(/pseudo-terminal/)
    await expect(openChannel(connection, { subsystem: "sftp" })).rejects.toThrow(/subsystem/i)
    await expect(
      new Promise((resolve, reject) =>
        connection.forwardOut("127.0.0.1", 1, "127.0.0.1", gateway.port, (error, ch) =>
          error ? reject(error) : resolve(ch),
        ),
      ),
    ).rejects.toThrow()
    await expect(
      new Promise((resolve, reject) =>
        connection.forwardIn("127.0.0.1", 0, (error, port) => (error ? reject(error) : resolve(port))),
      ),
    ).rejects.toThrow()
    // The connection is still usable after all those refusals.
    const channel = await openLineChannel(connection)
    expect(await channel.request(1, "ping")).toMatchObject({ result: {} })
    connection.end()
  })
  it("refuses unauthenticated connections from one address beyond --max-startups-per-source", async () => {
    const held = await Promise.all([1, 2, 3].map(() => openSocket(gateway.port)))
    const extra = await openSocket(gateway.port)
    const elapsed = await closedAfter(extra)
    expect(elapsed).toBeLessThan(500)
    await gateway.waitForLog(/refused connection: 3 unauthenticated connections/)
    for (const socket of held) socket.destroy()
    extra.destroy()
  })
})

describe("the total cap on unauthenticated connections", () => {
  let gateway: RunningGateway
  beforeAll(async () => {
    gateway = await startGateway({ flags: ["--max-startups", "2", "--max-startups-per-source", "10"] })
  })
  afterAll(() => disposeGateway(gateway))

  it("refuses connections beyond --max-startups, and admits again once one authenticates", async () => {
    const held = await Promise.all([1, 2].map(() => openSocket(gateway.port)))
    const extra = await openSocket(gateway.port)
    expect(await closedAfter(extra)).toBeLessThan(500)
    await gateway.waitForLog(/refused connection: 2 unauthenticated connections/)
    for (const socket of held) socket.destroy()
    // Once the held ones are gone, a client can log in again.
    for (let attempt = 0; attempt < 20; attempt++) {
      const connection = await connect(gateway).catch(() => undefined)
      if (connection !== undefined) {
        connection.end()
        return
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    throw new Error("no login was admitted after the held connections closed")
  })
})
