/**
 * The key API as one HttpApi definition: paths, bodies, answers and refusals. The server is built
 * from it and its OpenAPI document is generated from it, so the two cannot drift apart.
 */
// Subpath imports: the package's index also loads the API-docs bundles (about 20 MB of strings).
import * as HttpApi from "@effect/platform/HttpApi"
import * as HttpApiEndpoint from "@effect/platform/HttpApiEndpoint"
import * as HttpApiGroup from "@effect/platform/HttpApiGroup"
import * as HttpApiMiddleware from "@effect/platform/HttpApiMiddleware"
import * as HttpApiSecurity from "@effect/platform/HttpApiSecurity"
import * as OpenApi from "@effect/platform/OpenApi"
import { Context, Schema } from "effect"
import { maxBodyBytes, registrationModes } from "./keyApiRules.js"
import {
  AdminCaller,
  BadRequestResponse,
  ConfigRejectedResponse,
  EnrollmentToken,
  ForbiddenResponse,
  InternalErrorResponse,
  NotFoundResponse,
  NotReadyResponse,
  PayloadTooLargeResponse,
  RegisterRequest,
  RequestBody,
  RevokeRequest,
  StoreDownResponse,
  TokenRequest,
  TooManyRequestsResponse,
  UnauthorizedResponse,
  UnsupportedMediaTypeResponse,
} from "./keyApiSchemas.js"

// --- middleware (implemented in keyApiMiddleware.ts)

const bodyRefusals = Schema.Union(UnsupportedMediaTypeResponse, PayloadTooLargeResponse, BadRequestResponse)

/** The body is JSON, an object, within the size cap; otherwise 415, 413 or 400. */
export class JsonBody extends HttpApiMiddleware.Tag<JsonBody>()("mcp-ssh/KeyApi/JsonBody", {
  failure: bodyRefusals,
}) {}

/** As JsonBody, and no body at all (curl -X POST) reads as {}. */
export class OptionalJsonBody extends HttpApiMiddleware.Tag<OptionalJsonBody>()(
  "mcp-ssh/KeyApi/OptionalJsonBody",
  { failure: bodyRefusals, provides: RequestBody },
) {}

/** The admin token: 403 when the admin API is off or the token is wrong, 401 when none was given. */
export class AdminAuth extends HttpApiMiddleware.Tag<AdminAuth>()("mcp-ssh/KeyApi/AdminAuth", {
  failure: Schema.Union(UnauthorizedResponse, ForbiddenResponse),
  provides: AdminCaller,
  security: {
    adminToken: HttpApiSecurity.bearer.pipe(
      HttpApiSecurity.annotate(OpenApi.Description, "the server's admin token"),
    ),
  },
}) {}

/**
 * Who may register: 403 when registration is closed; then the body (the token may be in it); then
 * 401 when a token is needed and none was given. The token itself is checked with the key.
 */
export class EnrollmentGate extends HttpApiMiddleware.Tag<EnrollmentGate>()("mcp-ssh/KeyApi/EnrollmentGate", {
  failure: Schema.Union(ForbiddenResponse, UnauthorizedResponse, bodyRefusals),
  provides: EnrollmentToken,
  security: {
    enrollmentToken: HttpApiSecurity.bearer.pipe(
      HttpApiSecurity.annotate(
        OpenApi.Description,
        "an enrollment token (mcpssh_...), or the body's token field",
      ),
    ),
  },
}) {}

// --- answers

const ServerState = Schema.Struct({
  state: Schema.Literal("starting", "up", "failed").annotations({
    description:
      "how the server did at the gateway's start probe (a failed one is still tried for each session)",
  }),
  reason: Schema.optional(Schema.String),
}).annotations({ identifier: "ServerState" })

const Health = Schema.Struct({
  status: Schema.Literal("healthy").annotations({
    description: "the process answers (the original's field)",
  }),
  state: Schema.Literal("starting", "ready", "no_server_can_start", "draining").annotations({
    description: "the gateway's state; GET /ready is 200 only when ready",
  }),
  ssh: Schema.Struct({ listening: Schema.Boolean, address: Schema.String }),
  servers: Schema.Struct({
    configured: Schema.Int,
    states: Schema.Record({ key: Schema.String, value: ServerState }),
  }),
  registration: Schema.Literal(...registrationModes),
}).annotations({ identifier: "Health" })

const Ready = Schema.Struct({ status: Schema.Literal("ready") }).annotations({ identifier: "Ready" })

const ServerPublicKey = Schema.Struct({
  server_pub_key: Schema.String.annotations({ examples: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA..."] }),
  fingerprint: Schema.String.annotations({ examples: ["SHA256:..."] }),
}).annotations({ identifier: "ServerPublicKey" })

const RegisterResponse = Schema.Struct({
  status: Schema.Literal("success"),
  fingerprint: Schema.String,
  added: Schema.Boolean.annotations({ description: "false when the key was registered already" }),
}).annotations({ identifier: "RegisterResponse" })

const Key = Schema.Struct({
  fingerprint: Schema.String,
  type: Schema.String,
  comment: Schema.String,
  added_at: Schema.NullOr(Schema.String),
  source: Schema.NullOr(Schema.String).annotations({
    description: "how the key was added; null for lines added by hand",
  }),
  options: Schema.NullOr(Schema.String),
  kind: Schema.Literal("key", "cert-authority").annotations({
    description: "cert-authority: a CA whose user certificates may log in",
  }),
  identity: Schema.NullOr(Schema.String).annotations({
    description:
      "who logs in with this key (mcp-identity, else its comment, else its fingerprint); null for a CA",
  }),
  groups: Schema.Array(Schema.String).annotations({ description: "mcp-groups" }),
  principals: Schema.NullOr(Schema.Array(Schema.String)).annotations({
    description: "principals= of a cert-authority line",
  }),
}).annotations({ identifier: "Key" })

const KeyList = Schema.Struct({ keys: Schema.Array(Key) }).annotations({ identifier: "KeyList" })

const RevokeResponse = Schema.Struct({
  status: Schema.Literal("revoked"),
  fingerprint: Schema.String,
  removed: Schema.Int.annotations({ description: "lines removed" }),
}).annotations({ identifier: "RevokeResponse" })

/** One running child, for GET /admin/servers. */
const RunningServer = Schema.Struct({
  server: Schema.String,
  scope: Schema.Literal("session", "identity", "shared"),
  state: Schema.String,
  pid: Schema.NullOr(Schema.Number),
  identity: Schema.NullOr(Schema.String),
  sessions: Schema.Number,
  uptime_seconds: Schema.NullOr(Schema.Number),
  restarts: Schema.Number,
  rss_bytes: Schema.NullOr(Schema.Number),
}).annotations({ identifier: "RunningServer" })

const ServersResponse = Schema.Struct({ children: Schema.Array(RunningServer) }).annotations({
  identifier: "ServersResponse",
})

const ReloadResponse = Schema.Struct({
  status: Schema.Literal("reloaded"),
  added: Schema.Array(Schema.String),
  removed: Schema.Array(Schema.String),
  changed: Schema.Array(Schema.String).annotations({
    description: "servers restarted with their new config",
  }),
  access_changed: Schema.Boolean.annotations({
    description: "the access policy changed; live sessions follow it",
  }),
  ignored_settings: Schema.Array(Schema.String).annotations({
    description: "changed settings that take effect at the next start",
  }),
}).annotations({ identifier: "ReloadResponse" })

const TokenResponse = Schema.Struct({
  token: Schema.String.annotations({ description: "shown once; only its hash is stored" }),
  id: Schema.String,
  uses: Schema.Int,
  expires_at: Schema.String,
  identity: Schema.NullOr(Schema.String),
  groups: Schema.Array(Schema.String),
}).annotations({ identifier: "TokenResponse" })

// --- endpoints

const publicGroup = HttpApiGroup.make("public")
  .add(
    HttpApiEndpoint.get("health", "/health")
      .addSuccess(Health)
      .annotate(OpenApi.Summary, "Liveness, the gateway's state and each server's; never rate-limited"),
  )
  .add(
    HttpApiEndpoint.get("ready", "/ready")
      .addSuccess(Ready)
      .addError(NotReadyResponse)
      .annotate(OpenApi.Summary, "Readiness for load balancers: 200 or 503; never rate-limited"),
  )
  .add(
    HttpApiEndpoint.get("serverPubKey", "/server_pub_key")
      .addSuccess(ServerPublicKey)
      .annotate(OpenApi.Summary, "The SSH host public key, to pin in known_hosts"),
  )
  .add(
    HttpApiEndpoint.get("openApi", "/openapi.json")
      .addSuccess(Schema.Unknown.annotations({ description: "OpenAPI 3.1" }))
      .annotate(OpenApi.Summary, "This document"),
  )

const enrollmentGroup = HttpApiGroup.make("enrollment").add(
  HttpApiEndpoint.post("register", "/register")
    .setPayload(RegisterRequest)
    .addSuccess(RegisterResponse)
    .addError(ForbiddenResponse)
    .middleware(EnrollmentGate)
    .annotate(OpenApi.Summary, "Register a client public key")
    .annotate(
      OpenApi.Description,
      "Needs an enrollment token (Authorization: Bearer or the token field) unless the server runs " +
        "with --registration open; refused with --registration closed. Registering a key again is a no-op.",
    ),
)

const adminGroup = HttpApiGroup.make("admin")
  .add(
    HttpApiEndpoint.get("listKeys", "/admin/keys")
      .addSuccess(KeyList)
      .annotate(OpenApi.Summary, "List the authorized keys"),
  )
  .add(
    HttpApiEndpoint.post("addKey", "/admin/keys")
      .setPayload(Schema.Struct({ client_pub_key: RegisterRequest.fields.client_pub_key }))
      .addSuccess(RegisterResponse)
      .middleware(JsonBody)
      .annotate(OpenApi.Summary, "Add a key (whatever the registration mode)"),
  )
  .add(
    HttpApiEndpoint.post("revokeKey", "/admin/keys/revoke")
      .setPayload(RevokeRequest)
      .addSuccess(RevokeResponse)
      .addError(NotFoundResponse)
      .middleware(JsonBody)
      .annotate(OpenApi.Summary, "Revoke a key by fingerprint; its live sessions are closed"),
  )
  .add(
    HttpApiEndpoint.post("createToken", "/admin/tokens")
      .setPayload(TokenRequest)
      .addSuccess(TokenResponse, { status: 201 })
      .middleware(OptionalJsonBody)
      .annotate(OpenApi.Summary, "Create an enrollment token (no body: one use, one hour)"),
  )
  .add(
    HttpApiEndpoint.post("reload", "/admin/reload")
      .addSuccess(ReloadResponse)
      .addError(ConfigRejectedResponse)
      .annotate(OpenApi.Summary, "Reload servers_config.json; only what changed is applied")
      .annotate(
        OpenApi.Description,
        "Added servers start, removed ones finish their calls in flight and stop, changed ones restart; " +
          "the others and their sessions are not touched. An invalid config is refused with every " +
          "problem named, and the running one stays.",
      ),
  )
  .add(
    HttpApiEndpoint.get("servers", "/admin/servers")
      .addSuccess(ServersResponse)
      .annotate(
        OpenApi.Summary,
        "The running child servers: server, scope, pid, identity, sessions, uptime, restarts, RSS",
      ),
  )
  // Added to each endpoint after its body middleware, so the token is checked before the body is read.
  .middlewareEndpoints(AdminAuth)

/** What the definitions cannot say: response headers, and the decode error the server never sends. */
const finishDocument = (spec: Record<string, unknown>): Record<string, unknown> => {
  const paths = spec.paths as Record<
    string,
    Record<string, { responses: Record<string, Record<string, unknown>> }>
  >
  for (const operations of Object.values(paths))
    for (const operation of Object.values(operations)) {
      const tooMany = operation.responses["429"]
      if (tooMany !== undefined)
        tooMany.headers = { "Retry-After": { schema: { type: "integer" }, description: "seconds to wait" } }
      // Decode errors are sent as BadRequest (keyApiMiddleware.ts), not in the framework's format.
      const badRequest = operation.responses["400"]
      if (badRequest !== undefined) {
        badRequest.description =
          "the body is not JSON, or a field is missing or invalid (the error says which)"
        badRequest.content = { "application/json": { schema: { $ref: "#/components/schemas/BadRequest" } } }
      }
    }
  // POST /admin/tokens with no body at all is a default token.
  const createToken = paths["/admin/tokens"]?.post as { requestBody?: { required?: boolean } } | undefined
  if (createToken?.requestBody !== undefined) createToken.requestBody.required = false
  const components = spec.components as { schemas: Record<string, unknown> }
  delete components.schemas.HttpApiDecodeError
  delete components.schemas.Issue
  delete components.schemas.PropertyKey
  return spec
}

export class KeyApiDefinition extends HttpApi.make("keyApi")
  .add(publicGroup)
  .add(enrollmentGroup)
  .add(adminGroup)
  .addError(TooManyRequestsResponse)
  .addError(InternalErrorResponse)
  .addError(StoreDownResponse)
  .annotateContext(
    OpenApi.annotations({
      title: "mcp-ssh key API",
      description:
        "Fetch the SSH host key, register a client public key (with an enrollment token unless " +
        `registration is open), and administer keys and tokens with the admin token. Request bodies are JSON of at most ${maxBodyBytes} bytes.`,
      transform: finishDocument,
    }),
  ) {}

/** The OpenAPI 3.1 document of the key API, served at GET /openapi.json. */
export const openApiDocument = (version: string) =>
  OpenApi.fromApi(KeyApiDefinition.annotateContext(Context.make(OpenApi.Version, version)))
