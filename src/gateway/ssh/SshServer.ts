/**
 * The SSH server: public-key authentication only (signature verified here, key matched by blob),
 * sshd-like limits, and MCP on session channels (`shell`, `exec`, subsystem `mcp`). A connection runs
 * on callbacks and its MCP sessions are fibers of the server; closing the layer closes the
 * listener, ends every session (and, through their scopes, every child), then every connection.
 */
import { type AddressInfo, createServer, type Server as NetServer, type Socket } from "node:net"
import {
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Fiber,
  FiberSet,
  Layer,
  Queue,
  Runtime,
  Schedule,
} from "effect"
import { expandHome } from "../../shared/paths.js"
import { type Algorithms, type Connection, type ServerChannel, Ssh2Server } from "../../shared/ssh2.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { ListenError } from "../errors.js"
import type { ClientIdentity } from "../hub/Hub.js"
import { KeyStore } from "../keys/KeyStore.js"
import { trustedProxiesOf } from "../keys/keyApiRules.js"
import { RevokedKeys } from "../keys/RevokedKeys.js"
import { recentWithin, watchFiles } from "../keys/recentFiles.js"
import { Drain } from "../ops/Drain.js"
import { type ConnectionOutcome, Metrics } from "../ops/Metrics.js"
import { McpSession } from "../session/McpSession.js"
import { wireClient } from "./clientEvents.js"
import { HostKey } from "./HostKey.js"
import { LiveConnections } from "./liveConnections.js"
import type { Credentials, Grant } from "./loginDecision.js"
import { refuseUntrustedProxyHeader, resolvePeer } from "./proxiedSocket.js"
import { type Peer, peerText, proxyHeaderTimeoutSeconds } from "./proxyProtocol.js"
import { StartupLimits } from "./startupLimits.js"

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

/**
 * ssh2 caps the identification line only when it arrives in one or two reads, and after refusing
 * one it ends its side but keeps reading: watch the bytes until the line is through. Gives the
 * listener, and how to stop watching once ssh2 has taken the connection over.
 */
const identificationWatch = (
  socket: Socket,
  attached: () => boolean,
  drop: (log: Effect.Effect<void>) => void,
) => {
  let identificationBytes = 0
  /** The log's sample of the line, copied: a slice would keep the socket's whole read buffer. */
  let firstBytes: Buffer | undefined
  const listener = (chunk: Buffer) => {
    firstBytes ??= Buffer.from(chunk.subarray(0, 64))
    const newline = chunk.indexOf(0x0a)
    identificationBytes += newline === -1 ? chunk.length : newline
    if (identificationBytes > maxIdentificationBytes) {
      return drop(
        Effect.logWarning(`closed: identification line longer than ${maxIdentificationBytes} bytes`),
      )
    }
    // ssh2 reads this chunk right after this listener, taking the line (attach) or ending the socket.
    const sample = firstBytes
    queueMicrotask(() => {
      if (!attached() && socket.writableEnded)
        drop(Effect.logWarning(`closed: invalid identification line ${sampleOf(sample)}`))
    })
  }
  const stop = () => {
    socket.off("data", listener)
    firstBytes = undefined
  }
  return { listener, stop }
}

export const SshServerLive = Layer.scoped(
  SshServer,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const hostKey = yield* HostKey
    const keyStore = yield* KeyStore
    const revokedKeys = yield* RevokedKeys
    const mcpSession = yield* McpSession
    const drain = yield* Drain
    const metrics = yield* Metrics

    /**
     * Authenticated connections, each as how to release it (socket, slots, registrations). Released
     * last at shutdown (this finalizer is added before the sessions' set, so it runs after it): every
     * session has ended, and answered what it had in progress, before its socket goes.
     */
    const authenticatedReleases = new Set<() => void>()
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const release of [...authenticatedReleases]) release()
      }),
    )
    /** Every MCP session of every connection: closing the server interrupts each and waits for it. */
    const sessionFibers = yield* FiberSet.make<void, never>()
    const runSessionFiber = yield* FiberSet.runtime(sessionFibers)<never>()
    const runtime = yield* Effect.runtime<never>()
    const runFork = Runtime.runFork(runtime)
    /** For log lines from callbacks: synchronous, so no fiber is scheduled. */
    const runSync = Runtime.runSync(runtime)

    const live = new LiveConnections()
    /** Both files as they are now (each re-read only when it changed). */
    const files = Effect.zip(keyStore.snapshot, revokedKeys.current)
    // From memory at each authentication step: both files are looked at (a stat each) at most every
    // 100 ms, and at once after a watch event on either. Revocations still end live sessions at once.
    const recentFiles = recentWithin(files, 100)
    yield* watchFiles(
      [
        ...keyStore.watchedFiles,
        ...(settings.revokedKeys === undefined ? [] : [expandHome(settings.revokedKeys)]),
      ],
      recentFiles.invalidate,
    )
    const revocations = yield* keyStore.revocations
    yield* Effect.forkScoped(
      Effect.forever(
        Effect.flatMap(Queue.take(revocations), (fingerprint) =>
          Effect.sync(() => {
            // First: a login that checks after this sees the key gone, not the remembered files.
            recentFiles.invalidate()
            live.endAll(fingerprint, "the key was revoked")
          }),
        ),
      ),
    )

    const credentials: Effect.Effect<Credentials> = Effect.map(recentFiles.get, ([snapshot, revoked]) => ({
      keys: snapshot.keys,
      revoked,
    }))
    /**
     * When either file changes, live connections whose line changed (identity, groups, from=...), whose
     * CA is no longer trusted, or whose key or certificate is now revoked are ended like a revoked key:
     * a connection keeps the identity it logged in with, so a new one is the only honest way to a new
     * identity. Judged once the file has settled (an editor may truncate before it writes), and never
     * from a file that cannot be used (that ends nothing, as for the watcher of removed keys).
     */
    let judged = ""
    const recheckLive = Effect.gen(function* () {
      const [snapshot, revoked] = yield* files
      if (`${snapshot.version}|${revoked.version}` === judged) return
      yield* Effect.sleep(Duration.millis(300))
      const [settled, settledRevoked] = yield* files
      judged = `${settled.version}|${settledRevoked.version}`
      if (!settled.usable || settledRevoked._tag === "Unusable") return
      const ended = live.recheck({ keys: settled.keys, revoked: settledRevoked })
      if (ended > 0)
        yield* Effect.logInfo(`ended ${ended} connection(s) the changed key files no longer allow`)
    })
    yield* Effect.forkScoped(Effect.repeat(recheckLive, Schedule.spaced(Duration.seconds(1))))

    const startups = new StartupLimits(settings)
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

    /** One MCP session on a channel, as a fiber of its connection, once the client is authenticated. */
    const serveChannel = (channel: ServerChannel, selection: ReadonlyArray<string>, client: ClientIdentity) =>
      Effect.gen(function* () {
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
        if (!channel.destroyed) {
          channel.exit(status)
          channel.end()
        }
      })

    /**
     * Connections not yet authenticated, owned by the server scope: closing it ends each (with its
     * socket, slots and timers), so nothing outlives the server mid-handshake.
     */
    const preAuth = new Set<() => void>()
    let serverClosed = false

    const trustedProxies = trustedProxiesOf(settings.trustedProxies)
    const headerTimeout = Duration.seconds(proxyHeaderTimeoutSeconds(settings.loginGraceTime))
    const grace = Duration.seconds(settings.loginGraceTime)
    const withCredentials = (use: (credentials: Credentials) => void) => {
      const now = recentFiles.peek()
      if (now === undefined) runFork(Effect.map(credentials, use))
      else use({ keys: now[0].keys, revoked: now[1] })
    }

    /**
     * One accepted socket. It runs on plain callbacks, not fibers (the handshake and login are the hot
     * path of a new connection): its state below is owned by this closure alone, and `releases` is
     * what ending it undoes. Only its MCP sessions are fibers, in the server's set.
     */
    const acceptConnection = (socket: Socket) => {
      socket.on("error", () => {})
      if (serverClosed) return socket.destroy()
      let annotations: Record<string, string> = { remote: `${socket.remoteAddress}:${socket.remotePort}` }
      let remote = annotations.remote ?? ""
      const log = (effect: Effect.Effect<void>) => runSync(Effect.annotateLogs(effect, annotations))
      /** Undone last to first: the socket first in, so destroyed last. */
      const releases: Array<() => void> = [() => socket.destroy()]
      const releaseAll = () => {
        for (let i = releases.length - 1; i >= 0; i--) releases[i]?.()
        releases.length = 0
      }
      let phase: "handshake" | "authenticated" | "ended" = "handshake"
      /** End before authentication, once: its reason logged, its outcome counted, everything released. */
      const end = (outcome?: ConnectionOutcome, why?: Effect.Effect<void>) => {
        if (phase !== "handshake") return
        phase = "ended"
        preAuth.delete(end)
        if (outcome !== undefined) metrics.connectionOutcome(outcome)
        if (why !== undefined) log(why)
        releaseAll()
      }
      preAuth.add(end)
      /** Set at login: ends the connection, its sessions first, saying why when the gateway ends it. */
      let endAuthenticated: ((reason?: string) => void) | undefined

      /** `peer`: the client, as the socket or a trusted proxy's header says (see proxiedSocket.ts). */
      const handshake = (peer: Peer) => {
        const source = peer.address
        remote = peerText(peer)
        annotations = { remote, ...(peer.proxy === undefined ? {} : { proxy: peer.proxy }) }
        releases.push(metrics.connectionOpened(socket))
        // Counted as unauthenticated from accept until login (or close).
        const admitted = startups.admit(source)
        if (typeof admitted !== "function") {
          return end(
            "limited",
            Effect.logWarning(
              `refused connection: ${admitted.total} unauthenticated connections (${admitted.fromSource} from this address) at the limit`,
            ),
          )
        }
        const uncount = admitted
        releases.push(uncount)
        socket.setNoDelay(true)

        /** Logs of ssh2's callbacks, in either phase. */
        const run = (effect: Effect.Effect<void>) => runSync(Effect.annotateLogs(effect, { remote }))
        /**
         * End the connection at once, saying why. ssh2 only half-closes after an error and goes on
         * parsing what still arrives (after a bad packet length, into a buffer of that length).
         */
        let dropped = false
        const drop = (why: Effect.Effect<void>) => {
          if (dropped) return
          dropped = true
          run(why)
          if (phase === "handshake") end("refused")
          else socket.destroy()
        }
        let connection: Connection | undefined
        let runSession: ((effect: Effect.Effect<void>) => Fiber.RuntimeFiber<void>) | undefined
        let identity: ClientIdentity | undefined

        /**
         * Login: registered for revocation, and sessions may open. Ending it (the client closed, its
         * key was revoked or its line changed) interrupts its sessions, which answer what they still
         * had in progress; then a clean SSH disconnect when the gateway ended it, and the releases.
         */
        const authenticated = (login: ClientIdentity, grant: Grant) => {
          if (phase !== "handshake") return
          if (serverClosed) return end()
          phase = "authenticated"
          preAuth.delete(end)
          clearTimeout(graceTimer)
          metrics.connectionOutcome("authenticated")
          uncount()
          identity = login
          const sessions = new Set<Fiber.RuntimeFiber<void, never>>()
          runSession = (effect) => {
            const fiber = runSessionFiber(effect)
            sessions.add(fiber)
            fiber.addObserver(() => sessions.delete(fiber))
            return fiber
          }
          authenticatedReleases.add(releaseAll)
          const release = () => {
            authenticatedReleases.delete(releaseAll)
            releaseAll()
          }
          let forget = () => {}
          endAuthenticated = (reason) => {
            if (phase !== "authenticated") return
            phase = "ended"
            runSession = undefined
            forget()
            const closing =
              reason === undefined
                ? Effect.logDebug("connection closed")
                : Effect.logInfo(`closed: ${reason}`).pipe(Effect.annotateLogs({ client: login.fingerprint }))
            const finish = () => {
              if (reason !== undefined) connection?.end()
              release()
              log(closing)
            }
            if (sessions.size === 0) return finish()
            runFork(Effect.zipRight(Fiber.interruptAll(sessions), Effect.sync(finish)))
          }
          log(
            Effect.logInfo("authenticated").pipe(
              Effect.annotateLogs({
                client: login.fingerprint,
                user: login.username,
                identity: login.identity,
                groups: login.groups.join(","),
                ...(login.certificate === undefined
                  ? {}
                  : { cert_serial: login.certificate.serial, ca: login.certificate.caFingerprint }),
              }),
            ),
          )
          const ended = endAuthenticated
          forget = live.add(login.fingerprint, ended, grant.recheck)
          // The key may have gone, or its line changed, between the login check and the registration above.
          withCredentials((now) => {
            const gone =
              login.certificate === undefined &&
              !now.keys.some((key) => key.kind === "key" && key.fingerprint === login.fingerprint)
            const changed = gone ? "the key was revoked" : grant.recheck(now)
            if (changed !== undefined) ended(changed)
          })
          if (socket.destroyed) ended()
        }

        const watch = identificationWatch(socket, () => connection !== undefined, drop)
        const attach = (client: Connection) => {
          connection = client
          watch.stop()
          wireClient(client, {
            settings,
            remote,
            run,
            drop,
            clientAddress: source,
            withCredentials,
            authFailed: metrics.authFailed,
            authenticated,
            closed: () => endAuthenticated?.(),
            ready: uncount,
            startMcp: (channel, selection) => {
              // ssh2 opens no channel before authentication; refuse one all the same (and after the end).
              if (runSession === undefined || identity === undefined || serverClosed) return channel.destroy()
              const session = runSession(
                serveChannel(channel, selection, identity).pipe(
                  Effect.onInterrupt(() => Effect.sync(() => channel.destroy())),
                  Effect.annotateLogs({ remote }),
                ),
              )
              // Closed outright: nobody is left to answer, whatever the session was waiting on.
              channel.once("close", () => {
                if (session.unsafePoll() === null) runFork(Fiber.interrupt(session))
              })
            },
          })
        }

        const key = socketKey(socket.remoteAddress, socket.remotePort)
        awaitingHandshake.set(key, attach)
        releases.push(() => awaitingHandshake.delete(key))
        ssh2.injectSocket(socket)
        // Added after ssh2's pause (so the socket does not flow early) and before its own listener.
        refuseUntrustedProxyHeader(socket, peer, (reason) =>
          drop(Effect.logWarning(`refused connection: ${reason}`)),
        )
        socket.on("data", watch.listener)

        const graceTimer = setTimeout(
          () => end("refused", Effect.logInfo(`closed: not authenticated within ${Duration.format(grace)}`)),
          Duration.toMillis(grace),
        )
        releases.push(() => clearTimeout(graceTimer))
      }

      /** Learn who the client is (a trusted proxy's PROXY header first), then serve it. */
      releases.push(
        resolvePeer(socket, trustedProxies, headerTimeout, {
          resolved: handshake,
          refused: (reason) => end("refused", Effect.logWarning(`refused connection: ${reason}`)),
        }),
      )
      // After the PROXY header reader's own listener, which says why a proxy closed early.
      socket.once("close", () => {
        if (endAuthenticated !== undefined) endAuthenticated()
        else end("refused")
      })
    }

    const netServer = createServer({ noDelay: true }, acceptConnection)
    // Runs after the listener has closed (finalizers run last to first): no connection is left
    // mid-handshake, and none is admitted after.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        serverClosed = true
        for (const end of [...preAuth]) end()
      }),
    )
    const address = yield* Effect.acquireRelease(listen(netServer, settings.host, settings.port), () =>
      // Stop accepting now; open connections end when the sessions' set above is interrupted.
      Effect.sync(() => netServer.close()),
    )
    // A drain stops new connections at once; open ones stay for their calls in flight.
    yield* Effect.forkScoped(
      Effect.zipRight(
        drain.started,
        Effect.sync(() => netServer.close()).pipe(Effect.zipRight(Effect.logInfo("SSH listener closed"))),
      ),
    )
    yield* Effect.logInfo(`SSH server listening on ${address.address}:${address.port}`)
    return { address }
  }),
)
