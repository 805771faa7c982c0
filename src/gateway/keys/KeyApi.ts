/**
 * The key management API (--run-key-server): the original tool's endpoints (GET /health,
 * GET /server_pub_key, POST /register) so its client keeps working, but registration needs an
 * enrollment token unless it was opened on loopback, every request is size- and rate-limited, and
 * admin endpoints behind a token list and revoke keys and create enrollment tokens.
 */

import { createServer } from "node:http"
// Subpath imports: the packages' indexes also load the API-docs bundles (about 20 MB of strings).
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Clock, Context, Data, Effect, Either, Layer, Option } from "effect"
import { isLoopbackHost, urlHost } from "../../shared/net.js"
import { isKeyProblem, type PublicKey } from "../../shared/publicKey.js"
import { validateSubmittedKey } from "../../shared/submittedKey.js"
import { version } from "../../shared/version.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { ListenError, type StoreError } from "../errors.js"
import { HostKey } from "../ssh/HostKey.js"
import { SshServer } from "../ssh/SshServer.js"
import { keyListing } from "./authorizedKeysFile.js"
import { EnrollmentTokens } from "./EnrollmentTokens.js"
import { loadSecret } from "./files.js"
import { KeyStore } from "./KeyStore.js"
import { bearerToken, maxBodyBytes, openApiDocument } from "./keyApiRules.js"
import { type Bucket, type BucketPolicy, isIdle, rateLimitKey, take } from "./tokenBucket.js"
import { checkUses, defaultTtl, parseTtl, secretsEqual } from "./tokens.js"

export interface KeyApiShape {
  /** Where the API listens (the real port when 0 was asked for). */
  readonly address: { readonly host: string; readonly port: number }
}

export class KeyApi extends Context.Tag("mcp-ssh/KeyApi")<KeyApi, KeyApiShape>() {}

/** A request the API refuses: the status and the reason the client reads in `{"error": ...}`. */
export class ApiFailure extends Data.TaggedError("ApiFailure")<{
  readonly status: number
  readonly error: string
  readonly headers?: Readonly<Record<string, string>>
}> {}

const respond = (status: number, body: unknown, headers: Readonly<Record<string, string>> = {}) =>
  HttpServerResponse.unsafeJson(body, {
    status,
    headers: { "cache-control": "no-store", "x-content-type-options": "nosniff", ...headers },
  })

const fingerprintPattern = /^SHA256:[A-Za-z0-9+/]{43}$/

/** Buckets beyond this many are pruned of idle ones, so many addresses cannot grow memory forever. */
const maxTrackedSources = 10_000

const tooLarge = () =>
  new ApiFailure({
    status: 413,
    error: `the body is larger than ${maxBodyBytes} bytes`,
    headers: { connection: "close" },
  })

/**
 * The body as a JSON object. `optional`: a request with no body at all (curl -X POST) reads as {}.
 * The declared length is checked before reading; a chunked body is cut off at the cap.
 */
const readJsonObject = (optional = false) =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    const type = request.headers["content-type"]
    const declared = request.headers["content-length"]
    const hasBody = request.headers["transfer-encoding"] !== undefined || (declared ?? "0") !== "0"
    if (optional && type === undefined && !hasBody) return {}
    if (type === undefined || !/^application\/json\s*(;.*)?$/i.test(type)) {
      return yield* new ApiFailure({ status: 415, error: "Content-Type must be application/json" })
    }
    if (declared !== undefined && Number(declared) > maxBodyBytes) return yield* tooLarge()
    const text = yield* request.text.pipe(
      HttpServerRequest.withMaxBodySize(Option.some(maxBodyBytes)),
      Effect.mapError((error) =>
        String(error.cause).includes("maxBytes")
          ? tooLarge()
          : new ApiFailure({ status: 400, error: "the request body could not be read" }),
      ),
    )
    const value = yield* Effect.try({
      try: (): unknown => JSON.parse(text),
      catch: () => new ApiFailure({ status: 400, error: "the body is not valid JSON" }),
    })
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return yield* new ApiFailure({ status: 400, error: "the body must be a JSON object" })
    }
    return value as Readonly<Record<string, unknown>>
  })

const submittedKey = (body: Readonly<Record<string, unknown>>): Effect.Effect<PublicKey, ApiFailure> => {
  const text = body.client_pub_key
  if (text === undefined) return new ApiFailure({ status: 400, error: "client_pub_key is missing" })
  if (typeof text !== "string")
    return new ApiFailure({ status: 400, error: "client_pub_key must be a string" })
  const key = validateSubmittedKey(text)
  return isKeyProblem(key)
    ? new ApiFailure({ status: 400, error: `client_pub_key is not acceptable: ${key.reason}` })
    : Effect.succeed(key)
}

const remoteOf = (request: HttpServerRequest.HttpServerRequest): string =>
  Option.getOrElse(request.remoteAddress, () => "unknown").replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, "")

export const KeyApiLive = Layer.scoped(
  KeyApi,
  Effect.gen(function* () {
    const { settings, servers } = yield* GatewayConfig
    const hostKey = yield* HostKey
    const keyStore = yield* KeyStore
    const tokens = yield* EnrollmentTokens
    const ssh = yield* SshServer
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

    // --- rate limiting, per source address (IPv6: per /64)
    const policy: BucketPolicy = {
      capacity: settings.keyServerRateBurst,
      refillPerSecond: settings.keyServerRateLimit / 60,
    }
    const buckets = new Map<string, Bucket>()
    const admit = (address: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        const key = rateLimitKey(address)
        if (buckets.size >= maxTrackedSources) {
          for (const [source, bucket] of buckets) if (isIdle(bucket, policy, now)) buckets.delete(source)
        }
        const decision = take(buckets.get(key), policy, now)
        buckets.set(key, decision.bucket)
        return decision.allowed
          ? Effect.void
          : new ApiFailure({
              status: 429,
              error: "too many requests; retry later",
              headers: { "retry-after": String(decision.retryAfterSeconds) },
            })
      })

    // --- handlers
    const health = Effect.succeed(
      respond(200, {
        status: "healthy",
        ssh: { listening: true, address: `${urlHost(ssh.address.address)}:${ssh.address.port}` },
        servers: { configured: servers.length },
        registration: mode,
      }),
    )

    const serverPubKey = Effect.succeed(
      respond(200, { server_pub_key: hostKey.publicKeyLine, fingerprint: hostKey.fingerprint }),
    )

    const register = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const remote = remoteOf(request)
      if (mode === "closed") {
        return yield* new ApiFailure({
          status: 403,
          error: "registration is closed on this server; ask its administrator to add your key",
        })
      }
      const body = yield* readJsonObject()
      const token =
        bearerToken(request.headers.authorization) ??
        (typeof body.token === "string" ? body.token : undefined)
      if (mode === "token" && token === undefined) {
        return yield* new ApiFailure({
          status: 401,
          error: "an enrollment token is required (Authorization: Bearer <token>, or the token field)",
          headers: { "www-authenticate": 'Bearer realm="mcp-ssh enrollment"' },
        })
      }
      const key = yield* submittedKey(body)
      const fixed =
        token !== undefined && fixedEnrollmentToken !== undefined && secretsEqual(token, fixedEnrollmentToken)
      const added = yield* keyStore.withWriteLock(
        Effect.gen(function* () {
          const present = yield* keyStore.contains(key.blob)
          let source = `register ${remote}`
          if (mode === "token" && !fixed) {
            // Checked and counted under the same lock as the key is added: a use is counted once.
            const check = yield* tokens.redeem(token ?? "", key.fingerprint, !present)
            if (check._tag === "Rejected") {
              yield* Effect.logInfo(`registration refused: ${check.reason}`).pipe(
                Effect.annotateLogs({ remote }),
              )
              return yield* new ApiFailure({ status: 403, error: check.reason })
            }
            source = `${source} token=${check.id}`
          } else if (fixed) {
            source = `${source} fixed-token`
          }
          return present ? false : yield* keyStore.add(key, source)
        }),
      )
      yield* Effect.logInfo(
        added ? `registered key ${key.fingerprint}` : `key ${key.fingerprint} was registered already`,
      ).pipe(Effect.annotateLogs({ remote }))
      return respond(200, { status: "success", fingerprint: key.fingerprint, added })
    })

    const requireAdmin = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (adminToken === undefined) {
        return yield* new ApiFailure({
          status: 403,
          error: "the admin API is disabled; start the server with --admin-token-file or MCP_SSH_ADMIN_TOKEN",
        })
      }
      const given = bearerToken(request.headers.authorization)
      if (given === undefined) {
        return yield* new ApiFailure({
          status: 401,
          error: "the admin token is required (Authorization: Bearer <token>)",
          headers: { "www-authenticate": 'Bearer realm="mcp-ssh admin"' },
        })
      }
      if (!secretsEqual(given, adminToken)) {
        yield* Effect.logWarning("admin request with a wrong token").pipe(
          Effect.annotateLogs({ remote: remoteOf(request) }),
        )
        return yield* new ApiFailure({ status: 403, error: "the admin token is wrong" })
      }
      return remoteOf(request)
    })

    const listKeys = Effect.gen(function* () {
      yield* requireAdmin
      const keys = yield* keyStore.list
      return respond(200, {
        keys: keys.map(keyListing),
      })
    })

    const addKey = Effect.gen(function* () {
      const remote = yield* requireAdmin
      const key = yield* submittedKey(yield* readJsonObject())
      const added = yield* keyStore.add(key, `admin ${remote}`)
      return respond(200, { status: "success", fingerprint: key.fingerprint, added })
    })

    const revokeKey = Effect.gen(function* () {
      yield* requireAdmin
      const { fingerprint } = yield* readJsonObject()
      if (typeof fingerprint !== "string" || !fingerprintPattern.test(fingerprint)) {
        return yield* new ApiFailure({
          status: 400,
          error: "fingerprint must be a SHA256 fingerprint as ssh-keygen -l prints it (SHA256:...)",
        })
      }
      const removed = yield* keyStore.revoke(fingerprint)
      if (removed === 0) return yield* new ApiFailure({ status: 404, error: "no key has this fingerprint" })
      return respond(200, { status: "revoked", fingerprint, removed })
    })

    const createToken = Effect.gen(function* () {
      yield* requireAdmin
      const body = yield* readJsonObject(true)
      const uses = yield* Either.match(checkUses(body.uses === undefined ? 1 : Number(body.uses)), {
        onLeft: (problem) => new ApiFailure({ status: 400, error: problem }),
        onRight: Effect.succeed,
      })
      const ttl = body.ttl === undefined ? defaultTtl : body.ttl
      const ttlSeconds = yield* Either.match(
        typeof ttl === "string" || typeof ttl === "number"
          ? parseTtl(String(ttl))
          : Either.left("ttl must be a string or a number"),
        {
          onLeft: (problem) => new ApiFailure({ status: 400, error: `ttl: ${problem}` }),
          onRight: Effect.succeed,
        },
      )
      const issued = yield* tokens.create({ uses, ttlSeconds })
      return respond(201, {
        token: issued.token,
        id: issued.id,
        uses: issued.uses,
        expires_at: issued.expiresAt,
      })
    })

    const openApi = Effect.succeed(respond(200, openApiDocument(version)))

    const router = HttpRouter.empty.pipe(
      HttpRouter.get("/health", health),
      HttpRouter.get("/server_pub_key", serverPubKey),
      HttpRouter.post("/register", register),
      HttpRouter.get("/admin/keys", listKeys),
      HttpRouter.post("/admin/keys", addKey),
      HttpRouter.post("/admin/keys/revoke", revokeKey),
      HttpRouter.post("/admin/tokens", createToken),
      HttpRouter.get("/openapi.json", openApi),
    )

    const app = Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      // Health checks are exempt, so a monitor never sees 429, and so is the admin (with the right
      // token); everything else, wrong admin tokens included, is limited.
      const path = request.url.split("?")[0] ?? ""
      const given = bearerToken(request.headers.authorization)
      const admin =
        path.startsWith("/admin/") &&
        adminToken !== undefined &&
        given !== undefined &&
        secretsEqual(given, adminToken)
      if (path !== "/health" && !admin) yield* admit(remoteOf(request))
      return yield* router
    }).pipe(
      Effect.catchTags({
        ApiFailure: (failure) =>
          Effect.succeed(respond(failure.status, { error: failure.error }, failure.headers)),
        RouteNotFound: () => Effect.succeed(respond(404, { error: "not found" })),
        StoreError: (error: StoreError) =>
          Effect.logError(`key store: ${error.message}`).pipe(
            Effect.as(
              respond(500, { error: "the key store could not be read or updated; see the server log" }),
            ),
          ),
      }),
      Effect.catchAllCause((cause) =>
        Effect.logError("key API request failed", cause).pipe(
          Effect.as(respond(500, { error: "internal error" })),
        ),
      ),
      Effect.tap((response) =>
        Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
          Effect.logDebug(`${request.method} ${request.url.split("?")[0]} ${response.status}`).pipe(
            Effect.annotateLogs({ remote: remoteOf(request) }),
          ),
        ),
      ),
    )

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
    yield* server.serve(app)
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
