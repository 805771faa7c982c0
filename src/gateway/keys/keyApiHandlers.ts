/**
 * The key API's handlers, one group layer each, over the key store, the enrollment tokens, the host
 * key and the SSH server's address. Bodies arrive decoded; refusals are this API's schema classes.
 */
import { readFileSync } from "node:fs"
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import { Effect, Either, Layer, Schema } from "effect"
import type { PublicKey } from "../../shared/publicKey.js"
import { version } from "../../shared/version.js"
import { ChildRegistry } from "../children/ChildRegistry.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { Reloader } from "../config/Reloader.js"
import type { StoreError, StoreUnavailable } from "../errors.js"
import { formatIdentityOptions } from "../identity/authorizedKeyOptions.js"
import { GatewayStatus } from "../ops/GatewayStatus.js"
import { HostKey } from "../ssh/HostKey.js"
import { keyListing } from "./authorizedKeysFile.js"
import { EnrollmentTokens } from "./EnrollmentTokens.js"
import { KeyStore } from "./KeyStore.js"
import { KeyApiDefinition, openApiDocument } from "./keyApiDefinition.js"
import { type KeyApiPolicy, remoteOf } from "./keyApiMiddleware.js"
import {
  AdminCaller,
  BadRequest,
  ConfigRejected,
  decodeProblem,
  EnrollmentToken,
  Forbidden,
  InternalError,
  NotFound,
  NotReady,
  RequestBody,
  StoreDown,
  TokenRequest,
} from "./keyApiSchemas.js"
import { checkTokenIdentity, secretsEqual } from "./tokens.js"

/** A store that cannot be read or written is the server's problem: logged, and a 500 for the client. */
const storeFailure = (error: StoreError) =>
  Effect.zipRight(
    Effect.logError(`key store: ${error.message}`),
    Effect.fail(
      new InternalError({ error: "the key store could not be read or updated; see the server log" }),
    ),
  )

/** A key database that cannot be reached now: 503 with the reason (the URL shown has no password). */
const storeDown = (error: StoreUnavailable) =>
  Effect.zipRight(
    Effect.logWarning(`key store: ${error.message}; write refused`),
    Effect.fail(new StoreDown({ error: error.message })),
  )

/** Both ways a store write can fail, as the API answers them. */
const storeFailures = { StoreError: storeFailure, StoreUnavailable: storeDown }

const PublicLive = HttpApiBuilder.group(KeyApiDefinition, "public", (handlers) =>
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const hostKey = yield* HostKey
    const status = yield* GatewayStatus
    const document = openApiDocument(version)
    return handlers
      .handle("health", () =>
        Effect.map(status.snapshot, (snapshot) => ({
          status: "healthy" as const,
          state: snapshot.state,
          ssh: snapshot.ssh,
          servers: { configured: snapshot.servers.length, states: Object.fromEntries(snapshot.servers) },
          registration: settings.registration,
        })),
      )
      .handle("ready", () =>
        Effect.flatMap(status.ready, (answer) =>
          answer.status === 200 ? Effect.succeed(answer.body) : Effect.fail(new NotReady(answer.body)),
        ),
      )
      .handle("serverPubKey", () =>
        Effect.succeed({ server_pub_key: hostKey.publicKeyLine, fingerprint: hostKey.fingerprint }),
      )
      .handle("openApi", () => Effect.succeed(document))
  }),
)

const EnrollmentLive = (policy: KeyApiPolicy, fixedEnrollmentToken: string | undefined) =>
  HttpApiBuilder.group(KeyApiDefinition, "enrollment", (handlers) =>
    Effect.gen(function* () {
      const keyStore = yield* KeyStore
      const tokens = yield* EnrollmentTokens

      /** Add the key, redeeming the token under the same lock, so a use is counted exactly once. */
      const enroll = (key: PublicKey, token: string | undefined, remote: string) =>
        keyStore.withWriteLock(
          Effect.gen(function* () {
            const present = yield* keyStore.contains(key.blob)
            const fixed =
              token !== undefined &&
              fixedEnrollmentToken !== undefined &&
              secretsEqual(token, fixedEnrollmentToken)
            let source = `register ${remote}`
            let options: string | undefined
            if (policy.mode === "token" && !fixed) {
              const check = yield* tokens.redeem(token ?? "", key.fingerprint, !present)
              if (check._tag === "Rejected") {
                yield* Effect.logInfo(`registration refused: ${check.reason}`).pipe(
                  Effect.annotateLogs({ remote }),
                )
                return yield* Effect.fail(new Forbidden({ error: check.reason }))
              }
              source = `${source} token=${check.id}`
              // The token, not the client, says who the key is: a submitted key never carries options.
              options = formatIdentityOptions(check.identity.identity, check.identity.groups)
            } else if (fixed) {
              source = `${source} fixed-token`
            }
            return present ? false : yield* keyStore.add(key, source, options)
          }),
        )

      return handlers.handle("register", ({ payload, request }) =>
        Effect.gen(function* () {
          const remote = remoteOf(request, policy)
          const token = yield* EnrollmentToken
          const key = payload.client_pub_key
          const added = yield* enroll(key, token, remote)
          yield* Effect.logInfo(
            added ? `registered key ${key.fingerprint}` : `key ${key.fingerprint} was registered already`,
          ).pipe(Effect.annotateLogs({ remote }))
          return { status: "success" as const, fingerprint: key.fingerprint, added }
        }).pipe(Effect.catchTags(storeFailures)),
      )
    }),
  )

const scopeOf = (scope: string) => (scope === "identity" || scope === "shared" ? scope : "session")

/** A child's resident memory from /proc (Linux); undefined elsewhere or once it has gone. */
const rssBytes = (pid: number): number | undefined => {
  try {
    const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))
    return match?.[1] === undefined ? undefined : Number(match[1]) * 1024
  } catch {
    return undefined
  }
}

const AdminLive = HttpApiBuilder.group(KeyApiDefinition, "admin", (handlers) =>
  Effect.gen(function* () {
    const keyStore = yield* KeyStore
    const tokens = yield* EnrollmentTokens
    const reloader = yield* Reloader
    const registry = yield* ChildRegistry
    const decodeTokenRequest = Schema.decodeUnknown(TokenRequest)
    return (
      handlers
        .handle("listKeys", () => Effect.map(keyStore.list, (keys) => ({ keys: keys.map(keyListing) })))
        .handle("addKey", ({ payload }) =>
          Effect.gen(function* () {
            const key = payload.client_pub_key
            const added = yield* keyStore.add(key, `admin ${yield* AdminCaller}`)
            return { status: "success" as const, fingerprint: key.fingerprint, added }
          }).pipe(Effect.catchTags(storeFailures)),
        )
        .handle("revokeKey", ({ payload: { fingerprint } }) =>
          Effect.gen(function* () {
            const removed = yield* keyStore.revoke(fingerprint, `admin ${yield* AdminCaller}`)
            if (removed === 0)
              return yield* Effect.fail(new NotFound({ error: "no key has this fingerprint" }))
            return { status: "revoked" as const, fingerprint, removed }
          }).pipe(Effect.catchTags(storeFailures)),
        )
        .handle("servers", () =>
          Effect.sync(() => {
            const now = Date.now()
            return {
              children: registry.list().map((child) => ({
                server: child.server,
                scope: scopeOf(child.scope),
                state: child.state,
                pid: child.pid ?? null,
                identity: child.identity ?? null,
                sessions: child.sessions,
                uptime_seconds:
                  child.readySince === undefined ? null : Math.round((now - child.readySince) / 1000),
                restarts: child.restarts,
                rss_bytes: child.pid === undefined ? null : (rssBytes(child.pid) ?? null),
              })),
            }
          }),
        )
        .handle("reload", () =>
          Effect.gen(function* () {
            const outcome = yield* reloader.reload(`POST /admin/reload by ${yield* AdminCaller}`)
            return {
              status: "reloaded" as const,
              added: outcome.added,
              removed: outcome.removed,
              changed: outcome.changed,
              access_changed: outcome.accessChanged,
              ignored_settings: outcome.ignoredSettings,
            }
          }).pipe(
            Effect.catchTag("ReloadFailed", (failed) =>
              Effect.fail(
                new ConfigRejected({
                  error: "the new config is invalid; the running one stays",
                  errors: failed.problems,
                }),
              ),
            ),
          ),
        )
        // Raw: a POST with no body at all is {} here, which the framework's JSON decoding cannot say;
        // the body is decoded with the endpoint's own schema.
        .handleRaw("createToken", () =>
          Effect.gen(function* () {
            const body = yield* decodeTokenRequest(yield* RequestBody).pipe(
              Effect.mapError((error) => new BadRequest({ error: decodeProblem(error) })),
            )
            const identity = yield* Either.match(checkTokenIdentity(body.identity, body.groups), {
              onLeft: (problem) => Effect.fail(new BadRequest({ error: problem })),
              onRight: Effect.succeed,
            })
            const issued = yield* tokens.create({ uses: body.uses, ttlSeconds: body.ttl, identity })
            return {
              token: issued.token,
              id: issued.id,
              uses: issued.uses,
              expires_at: issued.expiresAt,
              identity: issued.identity.identity ?? null,
              groups: issued.identity.groups,
            }
          }).pipe(Effect.catchTags(storeFailures)),
        )
    )
  }),
)

/** Every handler of the key API, with the services they use still to be provided. */
export const keyApiHandlers = (policy: KeyApiPolicy, fixedEnrollmentToken: string | undefined) =>
  Layer.mergeAll(PublicLive, EnrollmentLive(policy, fixedEnrollmentToken), AdminLive)
