/**
 * The key management API (--run-key-server): the original tool's endpoints (GET /health,
 * GET /server_pub_key, POST /register) so its client keeps working, but registration needs an
 * enrollment token unless it was opened on loopback, every request is size- and rate-limited, and
 * admin endpoints behind a token list and revoke keys and create enrollment tokens.
 *
 * The endpoints are defined once, in keyApiDefinition.ts; this service serves them on a Node server.
 */

import { createServer } from "node:http"
// Subpath imports: the packages' indexes also load the API-docs bundles (about 20 MB of strings).
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Context, Effect, Layer } from "effect"
import { isLoopbackHost, urlHost } from "../../shared/net.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { ListenError } from "../errors.js"
import { Metrics } from "../ops/Metrics.js"
import { routeLabel } from "../ops/metricLabels.js"
import { loadSecret } from "./files.js"
import { KeyApiDefinition } from "./keyApiDefinition.js"
import { keyApiHandlers } from "./keyApiHandlers.js"
import {
  AdminAuthLive,
  apiMiddleware,
  EnrollmentGateLive,
  JsonBodyLive,
  type KeyApiPolicy,
  OptionalJsonBodyLive,
} from "./keyApiMiddleware.js"
import { trustedProxiesOf } from "./keyApiRules.js"

export interface KeyApiShape {
  /** Where the API listens (the real port when 0 was asked for). */
  readonly address: { readonly host: string; readonly port: number }
}

export class KeyApi extends Context.Tag("mcp-ssh/KeyApi")<KeyApi, KeyApiShape>() {}

/** The API's routes and middleware, built once: the handlers keep the services they were built with. */
/** The paths the API defines: the only `route` label values besides "other". */
const definedPaths: ReadonlySet<string> = new Set(
  Object.values(KeyApiDefinition.groups).flatMap((group) =>
    Object.values(group.endpoints).map((endpoint) => endpoint.path),
  ),
)

const buildApp = (policy: KeyApiPolicy, fixedEnrollmentToken: string | undefined) =>
  Effect.gen(function* () {
    const metrics = yield* Metrics
    const api = HttpApiBuilder.api(KeyApiDefinition).pipe(
      Layer.provide(keyApiHandlers(policy, fixedEnrollmentToken)),
      Layer.provide([JsonBodyLive, OptionalJsonBodyLive, AdminAuthLive(policy), EnrollmentGateLive(policy)]),
    )
    // One router and one middleware registry, shared by the groups, the API middleware and the app.
    const observe = (path: string, status: number) =>
      metrics.keyApiRequest(routeLabel(definedPaths, path), status)
    const routes = Layer.mergeAll(api, apiMiddleware(policy, observe)).pipe(
      Layer.provideMerge(Layer.merge(HttpApiBuilder.Router.Live, HttpApiBuilder.Middleware.layer)),
    )
    const context = yield* Layer.build(routes)
    return yield* Effect.provide(HttpApiBuilder.httpApp, context)
  })

export const KeyApiLive = Layer.scoped(
  KeyApi,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const adminToken = yield* loadSecret({
      value: settings.adminToken,
      file: settings.adminTokenFile,
      flag: "admin-token",
    })
    const fixedEnrollmentToken = yield* loadSecret({
      value: settings.enrollmentToken,
      file: settings.enrollmentTokenFile,
      flag: "enrollment-token",
    })
    const mode = settings.registration
    const policy: KeyApiPolicy = {
      mode,
      adminToken,
      // Per source address (IPv6: per /64).
      rate: { capacity: settings.keyServerRateBurst, refillPerSecond: settings.keyServerRateLimit / 60 },
      trustedProxies: trustedProxiesOf(settings.trustedProxies),
    }
    const app = yield* buildApp(policy, fixedEnrollmentToken)

    // Timeouts bound how long a slow client can hold a connection (slowloris).
    const nodeServer = createServer({ requestTimeout: 15_000, headersTimeout: 10_000 })
    const requested = `${settings.keyServerHost}:${settings.keyServerPort}`
    const server = yield* NodeHttpServer.make(() => nodeServer, {
      host: settings.keyServerHost,
      port: settings.keyServerPort,
    }).pipe(
      Effect.mapError(
        (error) =>
          new ListenError({
            address: requested,
            reason: error.cause instanceof Error ? error.cause.message : String(error.cause),
          }),
      ),
    )
    // Runs before NodeHttpServer's own release, which would otherwise wait for idle keep-alive clients.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        nodeServer.close()
        nodeServer.closeAllConnections()
      }),
    )
    yield* server.serve(app).pipe(Effect.provide(NodeHttpServer.layerContext))
    const address =
      server.address._tag === "TcpAddress"
        ? { host: server.address.hostname, port: server.address.port }
        : { host: server.address.path, port: 0 }

    if (!isLoopbackHost(settings.keyServerHost)) {
      yield* Effect.logWarning(
        `the key API on ${requested} is plain HTTP: tokens and keys cross the network unencrypted; ` +
          "put it behind a TLS proxy or bind it to 127.0.0.1",
      )
      if (mode === "open") {
        yield* Effect.logWarning(
          "--allow-open-registration-on-public-interface: anyone who reaches the key API can register a key and use every tool",
        )
      }
    }
    if (mode === "token" && adminToken === undefined && fixedEnrollmentToken === undefined) {
      yield* Effect.logInfo(
        "registration needs an enrollment token: create one with `mcp-ssh-server tokens create`",
      )
    }
    yield* Effect.logInfo(
      `key API listening on http://${urlHost(address.host)}:${address.port} (registration: ${mode}; admin API ${adminToken === undefined ? "off" : "on"})`,
    )
    return { address }
  }),
)
