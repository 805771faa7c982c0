/**
 * One SSH connection to the gateway and its MCP session channel (`shell`, or `exec` naming the
 * servers), each acquired for the scope: closing the scope closes the channel and disconnects.
 * The host key is checked by the verifier the caller gives; nothing here trusts a key on its own.
 */
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { errorText } from "../shared/errorText.js"
import { urlHost } from "../shared/net.js"
import {
  type ClientChannel,
  type ConnectConfig,
  type ServerHostKeyAlgorithm,
  Ssh2Client,
} from "../shared/ssh2.js"
import { AuthenticationRefused, ConnectError, HostKeyRefused } from "./errors.js"

export interface SessionTarget {
  readonly host: string
  readonly port: number
  readonly username: string
  readonly privateKey: Buffer
  readonly passphrase: string | undefined
  /** Accept or refuse the host key blob the gateway presents. */
  readonly hostVerifier: (blob: Buffer) => boolean
  /** Host-key algorithms to offer, best first. */
  readonly hostKeyAlgorithms: ReadonlyArray<string>
  /** The `exec` command (server selection), or undefined for a `shell` session. */
  readonly command: string | undefined
}

export interface GatewaySession {
  /** MCP both ways: newline-delimited JSON-RPC. Its `stderr` carries the gateway's diagnostics. */
  readonly channel: ClientChannel
  /** Completes once the channel is gone, with why, in words (`read ECONNRESET`, ...). */
  readonly ended: Effect.Effect<string>
  /**
   * The exit status the gateway ended the session with, if it did (it refused it: an unknown server,
   * a limit); undefined when the connection was lost under it.
   */
  readonly exitStatus: () => string | undefined
}

export class GatewayConnection extends Context.Tag("mcp-ssh/GatewayConnection")<
  GatewayConnection,
  {
    readonly open: (
      target: SessionTarget,
    ) => Effect.Effect<GatewaySession, ConnectError | AuthenticationRefused | HostKeyRefused, Scope.Scope>
  }
>() {}

/** Dead connections are noticed after about 45 s without an answer. */
const keepaliveIntervalMs = 15_000
const keepaliveCountMax = 3
const handshakeTimeoutMs = 20_000

type Ssh2Connection = InstanceType<typeof Ssh2Client>

/** What ended the connection and the channel, recorded by listeners set before anything can happen. */
interface EndTracker {
  lastError: string | undefined
  exitStatus: string | undefined
  readonly connectionClosed: Deferred.Deferred<void>
  readonly channelClosed: Deferred.Deferred<void>
}

const connect = (target: SessionTarget, tracker: EndTracker) => {
  const where = `${urlHost(target.host)}:${target.port}`
  return Effect.async<Ssh2Connection, ConnectError | AuthenticationRefused | HostKeyRefused>((resume) => {
    const client = new Ssh2Client()
    let settled = false
    let hostDenied = false
    const settle = (
      effect: Effect.Effect<Ssh2Connection, ConnectError | AuthenticationRefused | HostKeyRefused>,
    ) => {
      if (settled) return
      settled = true
      resume(effect)
    }
    const refuse = (error: ConnectError | AuthenticationRefused | HostKeyRefused) => {
      // Nothing more is wanted from this connection.
      if (!settled) client.destroy()
      settle(Effect.fail(error))
    }
    client.once("ready", () => settle(Effect.succeed(client)))
    client.on("error", (error: Error & { level?: string }) => {
      if (settled) tracker.lastError ??= error.message
      if (hostDenied) {
        refuse(new HostKeyRefused({ message: `the host key of ${where} is not trusted` }))
      } else if (error.level === "client-authentication") {
        refuse(new AuthenticationRefused({ message: error.message }))
      } else {
        refuse(new ConnectError({ target: where, reason: error.message }))
      }
    })
    client.once("close", () => {
      Deferred.unsafeDone(tracker.connectionClosed, Exit.void)
      refuse(new ConnectError({ target: where, reason: "the connection closed during the handshake" }))
    })
    const config: ConnectConfig = {
      host: target.host,
      port: target.port,
      username: target.username,
      privateKey: target.privateKey,
      ...(target.passphrase === undefined ? {} : { passphrase: target.passphrase }),
      hostVerifier: (blob: Buffer) => {
        const accepted = target.hostVerifier(blob)
        if (!accepted) hostDenied = true
        return accepted
      },
      // The names come from the client's own list (src/client/knownHostsFormat.ts), all known to ssh2.
      algorithms: { serverHostKey: [...target.hostKeyAlgorithms] as Array<ServerHostKeyAlgorithm> },
      // Public key only: no agent, no password, no keyboard-interactive prompts nobody can answer.
      authHandler: ["publickey"],
      keepaliveInterval: keepaliveIntervalMs,
      keepaliveCountMax,
      readyTimeout: handshakeTimeoutMs,
    }
    try {
      client.connect(config)
      // ssh2 leaves Nagle on; small JSON-RPC messages would wait for ACKs (tens of ms in handshakes).
      client.setNoDelay(true)
    } catch (error) {
      refuse(new ConnectError({ target: where, reason: errorText(error) }))
    }
    return Effect.sync(() => client.destroy())
  })
}

const openChannel = (client: Ssh2Connection, target: SessionTarget, tracker: EndTracker) =>
  Effect.async<ClientChannel, ConnectError>((resume) => {
    const done = (error: Error | undefined, channel: ClientChannel) => {
      if (error === undefined) {
        // Here, in the callback: a gateway that refuses the session sends its exit status at once.
        channel.on("exit", (code: number | null, signal?: string) => {
          tracker.exitStatus =
            signal === undefined || signal === null ? `exit status ${code}` : `signal ${signal}`
        })
        channel.on("error", (channelError: Error) => {
          tracker.lastError ??= channelError.message
        })
        channel.once("close", () => Deferred.unsafeDone(tracker.channelClosed, Exit.void))
      }
      resume(
        error === undefined
          ? Effect.succeed(channel)
          : Effect.fail(
              new ConnectError({
                target: `${urlHost(target.host)}:${target.port}`,
                reason: `the gateway refused the session: ${error.message}`,
              }),
            ),
      )
    }
    if (target.command === undefined) client.shell(false, done)
    else client.exec(target.command, done)
  })

export const GatewayConnectionLive = Layer.succeed(GatewayConnection, {
  open: (target) =>
    Effect.gen(function* () {
      const tracker: EndTracker = {
        lastError: undefined,
        exitStatus: undefined,
        connectionClosed: yield* Deferred.make<void>(),
        channelClosed: yield* Deferred.make<void>(),
      }
      const client = yield* Effect.acquireRelease(connect(target, tracker), (client) =>
        Effect.sync(() => {
          client.end()
          // A gateway that never answers the disconnect must not keep the process alive.
          setTimeout(() => client.destroy(), 1000).unref()
        }),
      )
      const channel = yield* Effect.acquireRelease(openChannel(client, target, tracker), (channel) =>
        Effect.sync(() => {
          if (!channel.destroyed) channel.close()
        }),
      )
      const ended = Effect.gen(function* () {
        yield* Deferred.await(tracker.channelClosed).pipe(Effect.timeout("1 second"), Effect.ignore)
        // The connection's own end (and its error) follows the channel's closely, if it comes.
        if (tracker.exitStatus === undefined) {
          yield* Deferred.await(tracker.connectionClosed).pipe(Effect.timeout("300 millis"), Effect.ignore)
        }
        if (tracker.lastError !== undefined) return tracker.lastError
        if (tracker.exitStatus !== undefined) return `the gateway ended the session (${tracker.exitStatus})`
        return (yield* Deferred.isDone(tracker.connectionClosed))
          ? "the gateway closed the connection"
          : "the gateway closed the session"
      })
      return { channel, ended, exitStatus: () => tracker.exitStatus } satisfies GatewaySession
    }),
})
