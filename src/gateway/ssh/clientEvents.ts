/**
 * The events of one SSH connection once ssh2 has taken it over: protocol errors end it at once,
 * publickey is the only authentication (the signature verified here), global requests and
 * forwarding channels are refused, and session channels are counted against --max-sessions.
 */
import { Effect } from "effect"
import type { AuthContext, Connection, ServerChannel } from "../../shared/ssh2.js"
import type { GatewaySettings } from "../config/settings.js"
import type { ClientIdentity } from "../hub/Hub.js"
import type { AuthFailureReason } from "../ops/Metrics.js"
import { authFailureReason } from "../ops/metricLabels.js"
import { type Credentials, decideLogin, type Grant, type LoginDecision } from "./loginDecision.js"
import { wireSessionRequests } from "./sessionRequests.js"

/** ssh2's errors carry a `level` (protocol, handshake, socket, client-timeout) or a DISCONNECT `code`. */
type Ssh2Error = Error & { readonly level?: string; readonly code?: unknown }

/** AES-GCM reports a forged tag as a bare OpenSSL error (native) or Node's "unable to authenticate". */
const describeProtocolError = (message: string) =>
  /^error:[0-9a-f]{8}:|unable to authenticate data/i.test(message)
    ? `packet failed to decrypt (${message})`
    : message

export interface ClientWiring {
  readonly settings: Pick<
    GatewaySettings,
    "keepaliveCountMax" | "keepaliveInterval" | "maxAuthTries" | "maxSessions"
  >
  readonly remote: string
  /** The client's IP address, for `from=` and `source-address`. */
  readonly clientAddress: string
  /** Run a log line (or any short effect) now, from an ssh2 callback. */
  readonly run: (effect: Effect.Effect<void>) => void
  /** End the connection at once, saying why. */
  readonly drop: (log: Effect.Effect<void>) => void
  /**
   * Call `use` with the authorized keys and revoked keys as they are now: at once when memory
   * answers, which is the usual case (no fiber on the login path).
   */
  readonly withCredentials: (use: (credentials: Credentials) => void) => void
  /** Counts a failed attempt, by kind (for the metrics). */
  readonly authFailed: (reason: AuthFailureReason) => void
  /** `grant` tells later whether the files still let this login in (see SshServer's recheck). */
  readonly authenticated: (identity: ClientIdentity, grant: Grant) => void
  readonly closed: () => void
  /** The client is authenticated as far as ssh2 is concerned. */
  readonly ready: () => void
  readonly startMcp: (channel: ServerChannel, selection: ReadonlyArray<string>) => void
}

const onError = (wiring: ClientWiring) => (error: Ssh2Error) => {
  const { settings, drop } = wiring
  if (error.level === "socket") return drop(Effect.logDebug(`connection error: ${error.message}`))
  if (error.level === "client-timeout") {
    return drop(
      Effect.logInfo(
        `closed: no answer to ${settings.keepaliveCountMax} keepalive probes ${settings.keepaliveInterval}s apart`,
      ),
    )
  }
  if (typeof error.code === "number") return drop(Effect.logInfo(`closed by the client: ${error.message}`))
  drop(Effect.logWarning(`closed: protocol error: ${describeProtocolError(error.message)}`))
}

const wireAuthentication = (client: Connection, wiring: ClientWiring) => {
  let failures = 0
  /** The one way an attempt is refused: logged with its reason (which names the fingerprint), counted. */
  const refuse = (context: AuthContext, kind: AuthFailureReason, why: string) => {
    failures++
    wiring.authFailed(kind)
    wiring.run(Effect.logInfo(`authentication failed: ${why}`))
    if (failures >= wiring.settings.maxAuthTries) {
      wiring.run(Effect.logWarning(`disconnected after ${failures} failed authentication attempts`))
      client.end()
    }
    context.reject(["publickey"])
  }
  client.on("authentication", (context: AuthContext) => {
    if (context.method === "none") return context.reject(["publickey"])
    if (context.method !== "publickey")
      return refuse(context, "method", `method ${context.method} is not allowed`)
    const decide = (credentials: Credentials) => {
      const decision: LoginDecision = decideLogin(
        {
          algo: context.key.algo,
          hashAlgo: context.hashAlgo,
          keyData: context.key.data,
          signature: context.signature,
          blob: context.blob,
        },
        credentials,
        { now: Date.now(), clientAddress: wiring.clientAddress },
      )
      if (decision._tag === "Refused")
        return refuse(context, authFailureReason(decision.code), decision.reason)
      // The client learns at once; the gateway's own bookkeeping follows in the same turn, before any
      // of the client's next packets is read.
      context.accept()
      if (decision._tag === "Verified") {
        const { grant } = decision
        wiring.authenticated(
          {
            fingerprint: grant.fingerprint,
            username: context.username,
            address: wiring.remote,
            identity: grant.identity.name,
            groups: grant.identity.groups,
            ...(grant.certificate === undefined ? {} : { certificate: grant.certificate }),
          },
          grant,
        )
      }
    }
    wiring.withCredentials(decide)
  })
}

export const wireClient = (client: Connection, wiring: ClientWiring) => {
  const { run, settings } = wiring
  client.on("error", onError(wiring))
  client.on("close", wiring.closed)
  wireAuthentication(client, wiring)
  client.on("ready", wiring.ready)

  // Port forwarding, in either direction, is never offered.
  client.on("request", (_accept, reject, name) => {
    run(Effect.logInfo(`refused global request ${name}`))
    reject?.()
  })
  client.on("tcpip", (_accept, reject, info) => {
    run(Effect.logInfo(`refused direct-tcpip channel to ${info.destIP}:${info.destPort}`))
    reject()
  })
  client.on("openssh.streamlocal", (_accept, reject, info) => {
    run(Effect.logInfo(`refused direct-streamlocal channel to ${JSON.stringify(info.socketPath)}`))
    reject()
  })

  let openSessions = 0
  client.on("session", (accept, reject) => {
    if (openSessions >= settings.maxSessions) {
      run(Effect.logInfo(`refused session: ${settings.maxSessions} already open`))
      return reject()
    }
    openSessions++
    const session = accept()
    session.once("close", () => {
      openSessions--
    })
    wireSessionRequests(session, (what) => run(Effect.logInfo(what)), wiring.startMcp)
  })
}
