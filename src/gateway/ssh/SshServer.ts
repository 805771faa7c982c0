/**
 * The SSH server: public-key authentication only (signature verified here, key matched by blob),
 * sshd-like limits, and MCP on session channels (`shell`, `exec`, subsystem `mcp`). Each connection
 * is a fiber owning its sessions; closing the layer closes the listener, every connection and,
 * through their scopes, every child.
 */
import { type AddressInfo, createServer, type Server as NetServer, type Socket } from "node:net"
import { Context, Deferred, Duration, Effect, Exit, FiberSet, Layer, Option, Queue, Runtime } from "effect"
import { fingerprintOf, formatPublicKey } from "../../shared/publicKey.js"
import {
  type Algorithms,
  type AuthContext,
  type Connection,
  type ServerChannel,
  type Session,
  Ssh2Server,
  utils,
} from "../../shared/ssh2.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { ListenError } from "../errors.js"
import { type ClientIdentity, parseSelection } from "../hub/Hub.js"
import { KeyStore } from "../keys/KeyStore.js"
import { McpSession } from "../session/McpSession.js"
import { HostKey } from "./HostKey.js"

export interface SshServerShape {
  /** Where the server listens (the real port when 0 was asked for). */
  readonly address: AddressInfo
}

export class SshServer extends Context.Tag("mcp-ssh/SshServer")<SshServer, SshServerShape>() {}

/** Modern algorithms only; compression is off, so nothing is decompressed before authentication. */
export const sshAlgorithms: Algorithms = {
  kex: ["curve25519-sha256", "curve25519-sha256@libssh.org"],
  cipher: ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr"],
  hmac: ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"],
  compress: ["none"],
}

/** The longest identification line a client may send (OpenSSH's limit; RFC 4253 asks for 255). */
export const maxIdentificationBytes = 8192

/** A short, escaped sample of what a client sent, for the log. */
const sampleOf = (bytes: Buffer) => JSON.stringify(bytes.subarray(0, 64).toString("latin1"))

/** ssh2's errors carry a `level` (protocol, handshake, socket, client-timeout) or a DISCONNECT `code`. */
type Ssh2Error = Error & { readonly level?: string; readonly code?: unknown }

/** AES-GCM reports a forged tag as a bare OpenSSL error (native) or Node's "unable to authenticate". */
const describeProtocolError = (message: string) =>
  /^error:[0-9a-f]{8}:|unable to authenticate data/i.test(message)
    ? `packet failed to decrypt (${message})`
    : message

/** The MCP subsystem name; `ssh -s host mcp` requests it. */
export const mcpSubsystem = "mcp"

const listen = (server: NetServer, host: string, port: number) =>
  Effect.async<AddressInfo, ListenError>((resume) => {
    const onError = (error: Error) =>
      resume(Effect.fail(new ListenError({ address: `${host}:${port}`, reason: error.message })))
    server.once("error", onError)
    server.listen({ host, port }, () => {
      server.off("error", onError)
      resume(Effect.succeed(server.address() as AddressInfo))
    })
  })

export const SshServerLive = Layer.scoped(
  SshServer,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const hostKey = yield* HostKey
    const keyStore = yield* KeyStore
    const mcpSession = yield* McpSession

    const connections = yield* FiberSet.make<void, never>()
    const runConnection = yield* FiberSet.runtime(connections)<never>()
    const runtime = yield* Effect.runtime<never>()
    const runSync = Runtime.runFork(runtime)

    /** How to end each live connection, by the fingerprint it logged in with, for revocations. */
    const liveByKey = new Map<string, Set<() => void>>()
    const revocations = yield* keyStore.revocations
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.flatMap(Queue.take(revocations), (fingerprint) =>
          Effect.sync(() => {
            for (const end of liveByKey.get(fingerprint) ?? []) end()
          }),
        ),
      ),
    )

    /** Unauthenticated connections, in total and by source address (sshd's MaxStartups). */
    const unauthenticated = { total: 0, bySource: new Map<string, number>() }
    /** Connections waiting for ssh2 to hand over their protocol object, by remote address and port. */
    const awaitingHandshake = new Map<string, (client: Connection) => void>()
    const socketKey = (ip: string | undefined, port: number | undefined) => `${ip}|${port}`

    const ssh2 = new Ssh2Server({
      hostKeys: [
        hostKey.serverKey.passphrase === undefined
          ? hostKey.serverKey.key
          : { key: hostKey.serverKey.key, passphrase: hostKey.serverKey.passphrase },
      ],
      algorithms: sshAlgorithms,
      ident: "mcp-ssh",
      keepaliveInterval: settings.keepaliveInterval * 1000,
      keepaliveCountMax: settings.keepaliveCountMax,
    })
    ssh2.on("connection", (client, info) => {
      const key = socketKey(info.ip, info.port)
      const attach = awaitingHandshake.get(key)
      awaitingHandshake.delete(key)
      if (attach === undefined) client.end()
      else attach(client)
    })
    ssh2.on("error", () => {})

    const handleConnection = (socket: Socket) =>
      Effect.gen(function* () {
        const source = socket.remoteAddress ?? "unknown"
        const remote = `${source}:${socket.remotePort ?? 0}`
        socket.on("error", () => {})
        yield* Effect.addFinalizer(() => Effect.sync(() => socket.destroy()))
        const fromSource = unauthenticated.bySource.get(source) ?? 0
        if (unauthenticated.total >= settings.maxStartups || fromSource >= settings.maxStartupsPerSource) {
          return yield* Effect.logWarning(
            `refused connection: ${unauthenticated.total} unauthenticated connections (${fromSource} from this address) at the limit`,
          )
        }
        socket.setNoDelay(true)

        // Counted as unauthenticated from accept until login (or close).
        let counted = true
        unauthenticated.total++
        unauthenticated.bySource.set(source, fromSource + 1)
        const uncount = () => {
          if (!counted) return
          counted = false
          unauthenticated.total--
          const left = (unauthenticated.bySource.get(source) ?? 1) - 1
          if (left <= 0) unauthenticated.bySource.delete(source)
          else unauthenticated.bySource.set(source, left)
        }
        yield* Effect.addFinalizer(() => Effect.sync(uncount))

        const closed = yield* Deferred.make<void>()
        socket.once("close", () => Deferred.unsafeDone(closed, Exit.void))
        const logNow = (effect: Effect.Effect<void>) => runSync(effect.pipe(Effect.annotateLogs({ remote })))
        /**
         * End the connection at once, saying why. ssh2 only half-closes after an error and goes on
         * parsing what still arrives (after a bad packet length, into a buffer of that length).
         */
        let dropped = false
        const drop = (log: Effect.Effect<void>) => {
          if (dropped) return
          dropped = true
          logNow(log)
          socket.destroy()
        }
        const authenticated = yield* Deferred.make<ClientIdentity>()
        const sessions = yield* FiberSet.make<void, never>()
        const runSession = yield* FiberSet.runtime(sessions)<never>()
        let failures = 0
        let openSessions = 0

        let connection: Connection | undefined
        // ssh2 caps the identification line only when it arrives in one or two reads, and after
        // refusing one it ends its side but keeps reading: watch the bytes until the line is through.
        let identificationBytes = 0
        /** The log's sample of the line, copied: a slice would keep the socket's whole read buffer. */
        let firstBytes: Buffer | undefined
        const watchIdentification = (chunk: Buffer) => {
          firstBytes ??= Buffer.from(chunk.subarray(0, 64))
          const newline = chunk.indexOf(0x0a)
          identificationBytes += newline === -1 ? chunk.length : newline
          if (identificationBytes > maxIdentificationBytes) {
            return drop(
              Effect.logWarning(`closed: identification line longer than ${maxIdentificationBytes} bytes`),
            )
          }
          // ssh2 reads this chunk right after this listener, taking the line (attach) or ending the socket.
          queueMicrotask(() => {
            if (connection === undefined && socket.writableEnded) {
              drop(Effect.logWarning(`closed: invalid identification line ${sampleOf(firstBytes ?? chunk)}`))
            }
          })
        }
        const attach = (client: Connection) => {
          connection = client
          socket.off("data", watchIdentification)
          firstBytes = undefined
          client.on("error", (error: Ssh2Error) => {
            if (error.level === "socket") return drop(Effect.logDebug(`connection error: ${error.message}`))
            if (error.level === "client-timeout") {
              return drop(
                Effect.logInfo(
                  `closed: no answer to ${settings.keepaliveCountMax} keepalive probes ${settings.keepaliveInterval}s apart`,
                ),
              )
            }
            if (typeof error.code === "number") {
              return drop(Effect.logInfo(`closed by the client: ${error.message}`))
            }
            drop(Effect.logWarning(`closed: protocol error: ${describeProtocolError(error.message)}`))
          })
          client.on("close", () => Deferred.unsafeDone(closed, Exit.void))

          const refuse = (why: string) => {
            failures++
            runSync(Effect.logInfo(`authentication failed: ${why}`).pipe(Effect.annotateLogs({ remote })))
            if (failures >= settings.maxAuthTries) {
              runSync(
                Effect.logWarning(`disconnected after ${failures} failed authentication attempts`).pipe(
                  Effect.annotateLogs({ remote }),
                ),
              )
              client.end()
            }
          }

          client.on("authentication", (context: AuthContext) => {
            if (context.method === "none") return context.reject(["publickey"])
            if (context.method !== "publickey") {
              refuse(`method ${context.method} is not allowed`)
              return context.reject(["publickey"])
            }
            runSync(
              keyStore.find(context.key.data).pipe(
                Effect.map((found) => {
                  if (Option.isNone(found)) {
                    refuse(`key ${context.key.algo} is not authorized (${fingerprintOf(context.key.data)})`)
                    return context.reject(["publickey"])
                  }
                  const key = found.value
                  // ssh2 names the key type here (rsa-sha2-* become ssh-rsa) and gives the hash apart.
                  if (context.key.algo !== key.type) {
                    refuse(`signature algorithm ${context.key.algo} does not fit a ${key.type} key`)
                    return context.reject(["publickey"])
                  }
                  // RSA signs with SHA-2 only, as in OpenSSH's sshd since 8.8.
                  if (key.type === "ssh-rsa" && context.hashAlgo === undefined) {
                    refuse(
                      "signature algorithm ssh-rsa (SHA-1) is not accepted; sign with rsa-sha2-256 or rsa-sha2-512",
                    )
                    return context.reject(["publickey"])
                  }
                  // No signature: the client only asks whether this key would do.
                  if (context.signature === undefined) return context.accept()
                  const parsed = utils.parseKey(formatPublicKey(key))
                  const valid =
                    !(parsed instanceof Error) &&
                    !Array.isArray(parsed) &&
                    parsed.verify(context.blob ?? Buffer.alloc(0), context.signature, context.hashAlgo) ===
                      true
                  if (!valid) {
                    refuse(`bad signature for ${key.fingerprint}`)
                    return context.reject(["publickey"])
                  }
                  Deferred.unsafeDone(
                    authenticated,
                    Exit.succeed({
                      fingerprint: key.fingerprint,
                      username: context.username,
                      address: remote,
                    }),
                  )
                  return context.accept()
                }),
              ),
            )
          })

          client.on("ready", uncount)

          // Port forwarding, in either direction, is never offered.
          client.on("request", (_accept, reject, name) => {
            logNow(Effect.logInfo(`refused global request ${name}`))
            reject?.()
          })
          client.on("tcpip", (_accept, reject, info) => {
            logNow(Effect.logInfo(`refused direct-tcpip channel to ${info.destIP}:${info.destPort}`))
            reject()
          })
          client.on("openssh.streamlocal", (_accept, reject, info) => {
            logNow(Effect.logInfo(`refused direct-streamlocal channel to ${JSON.stringify(info.socketPath)}`))
            reject()
          })

          client.on("session", (accept, reject) => {
            if (openSessions >= settings.maxSessions) {
              logNow(Effect.logInfo(`refused session: ${settings.maxSessions} already open`))
              return reject()
            }
            openSessions++
            const session = accept()
            session.once("close", () => {
              openSessions--
            })
            wireSession(session)
          })
        }

        const wireSession = (session: Session) => {
          const refuse = (what: string) => (_accept: unknown, reject: (() => void) | undefined) => {
            logNow(Effect.logInfo(`refused ${what} request`))
            reject?.()
          }
          session.on("pty", refuse("pty"))
          session.on("env", refuse("env"))
          session.on("x11", refuse("x11"))
          session.on("auth-agent", refuse("agent forwarding"))
          session.on("signal", refuse("signal"))
          session.on("shell", (accept) => startMcp(accept(), []))
          session.on("exec", (accept, _reject, info) => startMcp(accept(), parseSelection(info.command)))
          session.on("subsystem", (accept, reject, info) => {
            if (info.name === mcpSubsystem) return startMcp(accept(), [])
            refuse(`subsystem '${info.name}'`)(accept, reject)
          })
        }

        const startMcp = (channel: ServerChannel, selection: ReadonlyArray<string>) => {
          runSession(
            Effect.gen(function* () {
              const client = yield* Deferred.await(authenticated)
              const channelClosed = yield* Deferred.make<void>()
              channel.once("close", () => Deferred.unsafeDone(channelClosed, Exit.void))
              channel.on("error", () => {})
              const status = yield* mcpSession.serve(
                {
                  input: channel,
                  output: channel,
                  diagnostics: channel.stderr,
                  closed: Deferred.await(channelClosed),
                },
                selection,
                client,
              )
              yield* Effect.sync(() => {
                if (!channel.destroyed) {
                  channel.exit(status)
                  channel.end()
                }
              })
            }).pipe(
              Effect.onInterrupt(() => Effect.sync(() => channel.destroy())),
              Effect.annotateLogs({ remote }),
            ),
          )
        }

        awaitingHandshake.set(socketKey(socket.remoteAddress, socket.remotePort), attach)
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => awaitingHandshake.delete(socketKey(socket.remoteAddress, socket.remotePort))),
        )
        ssh2.injectSocket(socket)
        // Added after ssh2's pause (so the socket does not flow early) and before its own listener.
        socket.on("data", watchIdentification)

        const grace = Duration.seconds(settings.loginGraceTime)
        const login = yield* Effect.raceFirst(
          Deferred.await(authenticated).pipe(Effect.map(Option.some)),
          Deferred.await(closed).pipe(Effect.as(Option.none<ClientIdentity>())),
        ).pipe(Effect.timeout(grace), Effect.option)
        if (Option.isNone(login)) {
          return yield* Effect.logInfo(`closed: not authenticated within ${Duration.format(grace)}`)
        }
        if (Option.isNone(login.value)) return
        const identity = login.value.value
        uncount()
        yield* Effect.logInfo("authenticated").pipe(
          Effect.annotateLogs({ client: identity.fingerprint, user: identity.username }),
        )
        // A revoked key ends the connection, and with its scope every session and child.
        const revoked = yield* Deferred.make<void>()
        const end = () => Deferred.unsafeDone(revoked, Exit.void)
        const ends = liveByKey.get(identity.fingerprint) ?? new Set<() => void>()
        liveByKey.set(identity.fingerprint, ends.add(end))
        yield* Effect.addFinalizer(() =>
          Effect.sync(() => {
            ends.delete(end)
            if (ends.size === 0 && liveByKey.get(identity.fingerprint) === ends)
              liveByKey.delete(identity.fingerprint)
          }),
        )
        // The key may have gone between the login check and the registration above.
        const keys = yield* keyStore.list
        if (!keys.some((key) => key.fingerprint === identity.fingerprint)) end()
        const ended = yield* Effect.raceFirst(
          Deferred.await(closed).pipe(Effect.as("closed" as const)),
          Deferred.await(revoked).pipe(Effect.as("revoked" as const)),
        )
        if (ended === "revoked") {
          // The sessions end first, answering what they still had in progress; then a clean SSH
          // disconnect, and the scope ends the socket.
          yield* FiberSet.clear(sessions)
          connection?.end()
          yield* Effect.logInfo("closed: the key was revoked").pipe(
            Effect.annotateLogs({ client: identity.fingerprint }),
          )
          return
        }
        yield* Effect.logDebug("connection closed")
      }).pipe(Effect.scoped, Effect.annotateLogs({ remote: `${socket.remoteAddress}:${socket.remotePort}` }))

    const netServer = createServer({ noDelay: true }, (socket) => {
      runConnection(handleConnection(socket))
    })
    const address = yield* Effect.acquireRelease(listen(netServer, settings.host, settings.port), () =>
      // Stop accepting now; open connections end when the FiberSet above is interrupted.
      Effect.sync(() => netServer.close()),
    )
    yield* Effect.logInfo(`SSH server listening on ${address.address}:${address.port}`)
    return { address }
  }),
)
