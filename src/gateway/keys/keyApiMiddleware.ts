/**
 * The key API's middleware: the JSON body gate, the admin token, the enrollment gate, and the
 * API-wide layer (rate limiting, common headers, the answers the framework would word otherwise).
 */
import * as HttpApiBuilder from "@effect/platform/HttpApiBuilder"
import * as HttpApiError from "@effect/platform/HttpApiError"
import * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Cause, Clock, Effect, Layer, Option } from "effect"
import type { CidrList } from "../identity/addressPatterns.js"
import {
  AdminAuth,
  EnrollmentGate,
  JsonBody,
  KeyApiDefinition,
  OptionalJsonBody,
} from "./keyApiDefinition.js"
import { bearerToken, forwardedClient, maxBodyBytes, type RegistrationMode } from "./keyApiRules.js"
import {
  BadRequest,
  Forbidden,
  InternalError,
  isRefusal,
  PayloadTooLarge,
  TooManyRequests,
  Unauthorized,
  UnsupportedMediaType,
} from "./keyApiSchemas.js"
import { type Bucket, type BucketPolicy, isIdle, rateLimitKey, take } from "./tokenBucket.js"
import { secretsEqual } from "./tokens.js"

/** What the middleware needs from the configuration. */
export interface KeyApiPolicy {
  readonly mode: RegistrationMode
  readonly adminToken: string | undefined
  readonly rate: BucketPolicy
  /** Load balancers whose X-Forwarded-For is believed. */
  readonly trustedProxies: CidrList | undefined
}

export const commonHeaders = { "cache-control": "no-store", "x-content-type-options": "nosniff" }

/** Buckets beyond this many are pruned of idle ones, so many addresses cannot grow memory forever. */
const maxTrackedSources = 10_000

/** The client's address: the socket's, or what a trusted proxy says it is (keyApiRules.forwardedClient). */
export const remoteOf = (request: HttpServerRequest.HttpServerRequest, policy: KeyApiPolicy): string =>
  forwardedClient(
    Option.getOrElse(request.remoteAddress, () => "unknown").replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, ""),
    request.headers["x-forwarded-for"],
    policy.trustedProxies,
  )

/** Headers for the response this request will get, whatever produces it (a refusal is encoded later). */
const withResponseHeaders = (headers: Readonly<Record<string, string>>) =>
  HttpApp.appendPreResponseHandler((_request, response) =>
    Effect.succeed(HttpServerResponse.setHeaders(response, headers)),
  )

const tooLarge: Effect.Effect<never, PayloadTooLarge> = Effect.zipRight(
  withResponseHeaders({ connection: "close" }),
  Effect.fail(new PayloadTooLarge({ error: `the body is larger than ${maxBodyBytes} bytes` })),
)

/**
 * The body as a JSON object. `optional`: a request with no body at all (curl -X POST) reads as {}.
 * The declared length is checked before reading; a chunked body is cut off at the cap. The text
 * read here is kept by the request, so the endpoint's payload decoding reads the same text.
 */
const readJsonObject = (optional: boolean) =>
  Effect.gen(function* () {
    const request = yield* HttpServerRequest.HttpServerRequest
    const type = request.headers["content-type"]
    const declared = request.headers["content-length"]
    const hasBody = request.headers["transfer-encoding"] !== undefined || (declared ?? "0") !== "0"
    if (optional && type === undefined && !hasBody) return {}
    if (type === undefined || !/^application\/json\s*(;.*)?$/i.test(type)) {
      return yield* Effect.fail(new UnsupportedMediaType({ error: "Content-Type must be application/json" }))
    }
    if (declared !== undefined && Number(declared) > maxBodyBytes) return yield* tooLarge
    const text = yield* request.text.pipe(
      HttpServerRequest.withMaxBodySize(Option.some(maxBodyBytes)),
      Effect.catchAll(
        (error): Effect.Effect<never, PayloadTooLarge | BadRequest> =>
          String(error.cause).includes("maxBytes")
            ? tooLarge
            : Effect.fail(new BadRequest({ error: "the request body could not be read" })),
      ),
    )
    const value = yield* Effect.try({
      try: (): unknown => JSON.parse(text),
      catch: () => new BadRequest({ error: "the body is not valid JSON" }),
    })
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      return yield* Effect.fail(new BadRequest({ error: "the body must be a JSON object" }))
    }
    return value as Readonly<Record<string, unknown>>
  })

export const JsonBodyLive = Layer.succeed(JsonBody, Effect.asVoid(readJsonObject(false)))
export const OptionalJsonBodyLive = Layer.succeed(OptionalJsonBody, readJsonObject(true))

const challenge = (realm: string) => withResponseHeaders({ "www-authenticate": `Bearer realm="${realm}"` })

export const AdminAuthLive = (policy: KeyApiPolicy) =>
  Layer.succeed(AdminAuth, {
    // The framework's bearer parsing is laxer than bearerToken's; the header is read again here.
    adminToken: () =>
      Effect.gen(function* () {
        const request = yield* HttpServerRequest.HttpServerRequest
        if (policy.adminToken === undefined) {
          return yield* Effect.fail(
            new Forbidden({
              error:
                "the admin API is disabled; start the server with --admin-token-file or MCP_SSH_ADMIN_TOKEN",
            }),
          )
        }
        const given = bearerToken(request.headers.authorization)
        if (given === undefined) {
          yield* challenge("mcp-ssh admin")
          return yield* Effect.fail(
            new Unauthorized({ error: "the admin token is required (Authorization: Bearer <token>)" }),
          )
        }
        if (!secretsEqual(given, policy.adminToken)) {
          yield* Effect.logWarning("admin request with a wrong token").pipe(
            Effect.annotateLogs({ remote: remoteOf(request, policy) }),
          )
          return yield* Effect.fail(new Forbidden({ error: "the admin token is wrong" }))
        }
        return remoteOf(request, policy)
      }),
  })

export const EnrollmentGateLive = (policy: KeyApiPolicy) =>
  Layer.succeed(EnrollmentGate, {
    enrollmentToken: () =>
      Effect.gen(function* () {
        if (policy.mode === "closed") {
          return yield* Effect.fail(
            new Forbidden({
              error: "registration is closed on this server; ask its administrator to add your key",
            }),
          )
        }
        const request = yield* HttpServerRequest.HttpServerRequest
        const body = yield* readJsonObject(false)
        const token =
          bearerToken(request.headers.authorization) ??
          (typeof body.token === "string" ? body.token : undefined)
        if (policy.mode === "token" && token === undefined) {
          yield* challenge("mcp-ssh enrollment")
          return yield* Effect.fail(
            new Unauthorized({
              error: "an enrollment token is required (Authorization: Bearer <token>, or the token field)",
            }),
          )
        }
        return token
      }),
  })

const respond = (status: number, error: string) =>
  HttpServerResponse.unsafeJson({ error }, { status, headers: commonHeaders })

/**
 * The whole API: common headers and a debug line on every answer; rate limiting before routing
 * (health and readiness checks are exempt, and so is the admin with the right token; wrong admin tokens are
 * limited); and this API's wording for what the framework answers itself (an unknown path, a body
 * that does not decode, a defect).
 */
export const apiMiddleware = (
  policy: KeyApiPolicy,
  /** Sees every answer's path and status (the metrics). */
  observe: (path: string, status: number) => void = () => {},
) => {
  const buckets = new Map<string, Bucket>()
  const admit = (address: string) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const key = rateLimitKey(address)
      if (buckets.size >= maxTrackedSources) {
        for (const [source, bucket] of buckets) if (isIdle(bucket, policy.rate, now)) buckets.delete(source)
      }
      const decision = take(buckets.get(key), policy.rate, now)
      buckets.set(key, decision.bucket)
      return decision.allowed
        ? Effect.void
        : Effect.zipRight(
            withResponseHeaders({ "retry-after": String(decision.retryAfterSeconds) }),
            Effect.fail(new TooManyRequests({ error: "too many requests; retry later" })),
          )
    })

  return HttpApiBuilder.middleware(KeyApiDefinition, (app) =>
    Effect.gen(function* () {
      const request = yield* HttpServerRequest.HttpServerRequest
      const path = request.url.split("?")[0] ?? ""
      yield* HttpApp.appendPreResponseHandler((_request, response) =>
        Effect.as(
          Effect.zipRight(
            Effect.sync(() => observe(path, response.status)),
            Effect.logDebug(`${request.method} ${path} ${response.status}`).pipe(
              Effect.annotateLogs({ remote: remoteOf(request, policy) }),
            ),
          ),
          HttpServerResponse.setHeaders(response, commonHeaders),
        ),
      )
      const given = bearerToken(request.headers.authorization)
      const admin =
        path.startsWith("/admin/") &&
        policy.adminToken !== undefined &&
        given !== undefined &&
        secretsEqual(given, policy.adminToken)
      if (path !== "/health" && path !== "/ready" && !admin) yield* admit(remoteOf(request, policy))
      return yield* app
    }).pipe(
      Effect.catchAllCause(
        (cause): Effect.Effect<HttpServerResponse.HttpServerResponse, TooManyRequests | InternalError> => {
          const failure: unknown = Option.getOrUndefined(Cause.failureOption(cause))
          if (failure instanceof HttpApiError.HttpApiDecodeError) {
            return Effect.succeed(respond(400, failure.issues[0]?.message ?? "the body is not acceptable"))
          }
          if (failure instanceof HttpServerError.RouteNotFound)
            return Effect.succeed(respond(404, "not found"))
          // This API's own refusals are encoded by the framework from their schemas.
          if (isRefusal(failure) || Cause.isInterruptedOnly(cause)) return Effect.failCause(cause)
          return Effect.zipRight(
            Effect.logError("key API request failed", cause),
            Effect.fail(new InternalError({ error: "internal error" })),
          )
        },
      ),
    ),
  )
}
