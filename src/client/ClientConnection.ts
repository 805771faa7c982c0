/**
 * Reaching the gateway the way a careful OpenSSH user would: its host key checked against
 * known_hosts; with --use-key-server, the key the key API serves compared with the one on file and
 * pinned when there is none; the client key enrolled through the key API when the gateway refuses
 * it. Every refusal says what was seen and what to do.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { ClientConfig } from "./ClientConfig.js"
import { ClientKey } from "./ClientKey.js"
import { AuthenticationRefused, type ConnectError, HostKeyRefused, type KeyServerError } from "./errors.js"
import { GatewayConnection, type GatewaySession } from "./GatewayConnection.js"
import { KeyServerClient } from "./KeyServerClient.js"
import { KnownHosts } from "./KnownHosts.js"
import {
  describeKey,
  entryLocation,
  type HostKeyVerdict,
  hostKeyAlgorithms,
  knownHostsLine,
  knownHostsName,
  preferredHostKeyAlgorithms,
} from "./knownHostsFormat.js"
import { isPlainHttpOverNetwork, sessionCommand } from "./settings.js"

export type ConnectionRefused = ConnectError | AuthenticationRefused | HostKeyRefused | KeyServerError

export class ClientConnection extends Context.Tag("mcp-ssh/ClientConnection")<
  ClientConnection,
  {
    /** A session with the gateway, for the scope. */
    readonly open: Effect.Effect<GatewaySession, ConnectionRefused, Scope.Scope>
  }
>() {}

export const ClientConnectionLive = Layer.effect(
  ClientConnection,
  Effect.gen(function* () {
    const settings = yield* ClientConfig
    const key = yield* ClientKey
    const knownHosts = yield* KnownHosts
    const keyServer = yield* KeyServerClient
    const gateway = yield* GatewayConnection
    const name = knownHostsName(settings.host, settings.port)
    const checking = !settings.disableHostKeyChecking

    const removeHint = `if the gateway's key really changed, remove the old entry (ssh-keygen -R '${name}' -f ${knownHosts.path}) and connect again`

    /** The refusal for a key the file does not vouch for, seen from `source`. */
    const refusal = (verdict: HostKeyVerdict, blob: Buffer, source: string): HostKeyRefused | undefined => {
      switch (verdict._tag) {
        case "Known":
          return undefined
        case "Revoked":
          return new HostKeyRefused({
            message: `the host key of ${name} that ${source} (${describeKey(blob)}) is marked @revoked in ${entryLocation(knownHosts.path, verdict.entry)}; refusing to connect`,
          })
        case "Changed": {
          const known = verdict.known
            .map((entry) => `${describeKey(entry.blob)} (${entryLocation(knownHosts.path, entry)})`)
            .join(", ")
          return new HostKeyRefused({
            message: `HOST KEY CHANGED, refusing to connect: for ${name}, known_hosts has ${known} but ${source} ${describeKey(blob)}. Someone may be intercepting the connection; ${removeHint}`,
          })
        }
        case "Unknown":
          return new HostKeyRefused({
            message: `the host key of ${name} is unknown: ${source} ${describeKey(blob)}. Check that fingerprint against the one the gateway logs at start (or use --use-key-server), then add this line to ${knownHosts.path}: ${knownHostsLine(name, blob)}`,
          })
      }
    }

    /** --use-key-server: compare the served key with known_hosts, and pin it if the host is new. */
    const trustServedKey = Effect.gen(function* () {
      const url = keyServer.url ?? ""
      if (isPlainHttpOverNetwork(url)) {
        yield* Effect.logWarning(
          `fetching the host key over plain http from ${url}: anyone on the path could swap it. Prefer --key-server-url https://..., or check the fingerprint below against the gateway's log`,
        )
      }
      const served = yield* keyServer.fetchHostKey.pipe(
        Effect.catchAll((error) =>
          knownHosts.knownTypes(name).length > 0
            ? Effect.logWarning(`${error.message}; relying on ${knownHosts.path} alone`).pipe(
                Effect.as(undefined),
              )
            : Effect.fail(error),
        ),
      )
      if (served === undefined) return
      const verdict = knownHosts.verify(name, served.blob)
      if (verdict._tag === "Unknown") {
        yield* Effect.logInfo(`the key server serves the host key ${describeKey(served.blob)} for ${name}`)
        return yield* knownHosts.pin(name, served.blob)
      }
      const refused = refusal(verdict, served.blob, `the key server (${url}) serves`)
      if (refused !== undefined) return yield* refused
    })

    /** The gateway refused the key: enroll it through the key API. */
    const enroll = Effect.gen(function* () {
      yield* Effect.logInfo(`registering the client key ${key.fingerprint} with ${keyServer.url ?? ""}`)
      const { added } = yield* keyServer.register(key.publicKeyLine, settings.enrollToken)
      yield* Effect.logInfo(
        added ? "the gateway added the client key" : "the gateway already had the client key",
      )
    })

    const connectOnce = Effect.suspend(() => {
      let presented: { readonly blob: Buffer; readonly verdict: HostKeyVerdict } | undefined
      return gateway
        .open({
          host: settings.host,
          port: settings.port,
          username: settings.username,
          privateKey: key.privateKey,
          passphrase: key.passphrase,
          hostVerifier: (blob) => {
            const verdict = knownHosts.verify(name, blob)
            presented = { blob, verdict }
            return !checking || verdict._tag === "Known"
          },
          hostKeyAlgorithms: preferredHostKeyAlgorithms(knownHosts.knownTypes(name), hostKeyAlgorithms),
          command: sessionCommand(settings.servers),
        })
        .pipe(
          Effect.mapError((error) =>
            error._tag === "HostKeyRefused" && presented !== undefined
              ? (refusal(presented.verdict, presented.blob, "the gateway presents") ?? error)
              : error,
          ),
          Effect.tap(() =>
            !checking && presented !== undefined && presented.verdict._tag !== "Known"
              ? Effect.logWarning(
                  `HOST KEY NOT VERIFIED (--disable-host-key-checking): ${name} presented ${describeKey(presented.blob)}, which known_hosts does not vouch for`,
                )
              : Effect.void,
          ),
        )
    })

    const refusedKey = (error: AuthenticationRefused) =>
      new AuthenticationRefused({
        message: `the gateway refused the client key ${key.fingerprint} (${key.path}) for user '${settings.username}' (${error.message}). Have its public key (${key.path}.pub) added to the gateway's authorized keys, or enroll it with --use-key-server --enroll-token TOKEN`,
      })

    const open = Effect.gen(function* () {
      if (!checking) {
        yield* Effect.logWarning(
          "WARNING: host key checking is DISABLED (--disable-host-key-checking): the gateway's identity is not verified, and anyone able to intercept the connection can read and change every MCP message",
        )
      }
      const useKeyServer = keyServer.url !== undefined
      if (useKeyServer && checking) yield* trustServedKey
      yield* Effect.logDebug(`connecting to ${name} as ${settings.username} with key ${key.fingerprint}`)
      const session = yield* connectOnce.pipe(
        Effect.catchTag("AuthenticationRefused", (error) =>
          useKeyServer
            ? enroll.pipe(
                Effect.zipRight(connectOnce),
                Effect.catchTag("AuthenticationRefused", (again) =>
                  Effect.fail(
                    new AuthenticationRefused({
                      message: `the key server accepted the client key ${key.fingerprint}, but the gateway still refuses it (${again.message}); is ${keyServer.url ?? ""} the key API of this gateway?`,
                    }),
                  ),
                ),
              )
            : Effect.fail(refusedKey(error)),
        ),
      )
      yield* Effect.logInfo(
        `connected to ${name} as ${settings.username}${settings.servers.length > 0 ? ` (servers: ${settings.servers.join(", ")})` : ""}`,
      )
      return session
    })

    return { open }
  }),
)
