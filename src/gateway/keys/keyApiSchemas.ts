/**
 * The key API's request bodies and refusals as Schemas. Every refusal is `{"error": "<reason>"}`
 * with its status; decoding a body fails with the reason the client reads, never with the input
 * (a private key pasted by mistake is not echoed).
 */
import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import { Context, Either, ParseResult, Schema } from "effect"
import { isKeyProblem, type PublicKey } from "../../shared/publicKey.js"
import { validateSubmittedKey } from "../../shared/submittedKey.js"
import { checkUses, defaultTtl, parseTtl } from "./tokens.js"

// --- refusals: tagged errors in the code; on the wire only {"error": "<reason>"} with the status.

const reason = { error: Schema.String }

export class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", reason) {}
export class Unauthorized extends Schema.TaggedError<Unauthorized>()("Unauthorized", reason) {}
export class Forbidden extends Schema.TaggedError<Forbidden>()("Forbidden", reason) {}
export class NotFound extends Schema.TaggedError<NotFound>()("NotFound", reason) {}
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()("PayloadTooLarge", reason) {}
export class UnsupportedMediaType extends Schema.TaggedError<UnsupportedMediaType>()(
  "UnsupportedMediaType",
  reason,
) {}
export class TooManyRequests extends Schema.TaggedError<TooManyRequests>()("TooManyRequests", reason) {}
export class InternalError extends Schema.TaggedError<InternalError>()("InternalError", reason) {}
export class StoreDown extends Schema.TaggedError<StoreDown>()("StoreDown", reason) {}

/**
 * A refusal as the API sends it: the status, and a body without the `_tag` (the original tool's
 * clients read `error` alone). The tag stays on the decoded side, so the framework tells the
 * refusals apart by it when it encodes one.
 */
const onTheWire = <Tag extends string, Self>(
  refusal: Schema.Schema<Self, { readonly _tag: Tag; readonly error: string }>,
  tag: Tag,
  status: number,
  description: string,
) =>
  Schema.transform(Schema.Struct(reason).annotations({ identifier: tag, description }), refusal, {
    strict: true,
    decode: ({ error }) => ({ _tag: tag, error }),
    encode: ({ error }) => ({ error }),
  }).annotations(HttpApiSchema.annotations({ status, description }))

/** A reload that was refused: the running config stays; `errors` names each problem's field. */
export class ConfigRejected extends Schema.TaggedError<ConfigRejected>()("ConfigRejected", {
  error: Schema.String,
  errors: Schema.Array(Schema.String),
}) {}

export const ConfigRejectedResponse = Schema.transform(
  Schema.Struct({ error: Schema.String, errors: Schema.Array(Schema.String) }).annotations({
    identifier: "ConfigRejected",
  }),
  ConfigRejected,
  {
    strict: true,
    decode: ({ error, errors }) => ({ _tag: "ConfigRejected" as const, error, errors }),
    encode: ({ error, errors }) => ({ error, errors }),
  },
).annotations(
  HttpApiSchema.annotations({ status: 400, description: "the new config is invalid; the running one stays" }),
)

export const BadRequestResponse = onTheWire(
  BadRequest,
  "BadRequest",
  400,
  "the body is not JSON, or a field is missing or invalid (the error says which)",
)
export const UnauthorizedResponse = onTheWire(
  Unauthorized,
  "Unauthorized",
  401,
  "no token was given (see WWW-Authenticate)",
)
export const ForbiddenResponse = onTheWire(
  Forbidden,
  "Forbidden",
  403,
  "the token is wrong, expired or used up; registration is closed; or the admin API is off",
)
export const NotFoundResponse = onTheWire(NotFound, "NotFound", 404, "no key has this fingerprint")
export const PayloadTooLargeResponse = onTheWire(
  PayloadTooLarge,
  "PayloadTooLarge",
  413,
  "the body is larger than the cap",
)
export const UnsupportedMediaTypeResponse = onTheWire(
  UnsupportedMediaType,
  "UnsupportedMediaType",
  415,
  "the Content-Type is not application/json",
)
export const TooManyRequestsResponse = onTheWire(
  TooManyRequests,
  "TooManyRequests",
  429,
  "too many requests from this address; see Retry-After",
)
export const InternalErrorResponse = onTheWire(
  InternalError,
  "InternalError",
  500,
  "the server could not answer; see its log",
)

export const StoreDownResponse = onTheWire(
  StoreDown,
  "StoreDown",
  503,
  "the key database cannot be reached now; the error says why (logins of known keys go on)",
)

/** GET /ready's refusal: 503 with the reason and the gateway's state (load balancers read the status). */
export class NotReady extends Schema.TaggedError<NotReady>()("NotReady", {
  error: Schema.String,
  state: Schema.Literal("starting", "draining", "no_server_can_start"),
}) {}

export const NotReadyResponse = Schema.transform(
  Schema.Struct({ error: NotReady.fields.error, state: NotReady.fields.state }).annotations({
    identifier: "NotReady",
  }),
  NotReady,
  {
    strict: true,
    decode: ({ error, state }) => ({ _tag: "NotReady" as const, error, state }),
    encode: ({ error, state }) => ({ error, state }),
  },
).annotations(
  HttpApiSchema.annotations({
    status: 503,
    description: "not ready: starting (servers being probed), draining, or no configured server could start",
  }),
)

// --- what the middleware hands to the handlers

/** The address of the admin who made the request (for the key's source). */
export class AdminCaller extends Context.Tag("mcp-ssh/KeyApi/AdminCaller")<AdminCaller, string>() {}

/** The enrollment token given with a registration (header, or the body's token field), if any. */
export class EnrollmentToken extends Context.Tag("mcp-ssh/KeyApi/EnrollmentToken")<
  EnrollmentToken,
  string | undefined
>() {}

/** The request body, read and checked to be a JSON object ({} when there was none and none is needed). */
export class RequestBody extends Context.Tag("mcp-ssh/KeyApi/RequestBody")<
  RequestBody,
  Readonly<Record<string, unknown>>
>() {}

// --- request bodies

const PublicKeyFromSelf = Schema.declare(
  (input: unknown): input is PublicKey =>
    typeof input === "object" && input !== null && "blob" in input && Buffer.isBuffer(input.blob),
  { identifier: "PublicKey" },
)

/** One OpenSSH public key line, decoded to the key, or refused with the reason. */
export const SubmittedKey = Schema.transformOrFail(
  Schema.String.annotations({
    message: () => "client_pub_key must be a string",
    description:
      "one OpenSSH public key line: ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of 2048 bits or more",
  }),
  PublicKeyFromSelf,
  {
    strict: true,
    decode: (text, _, ast) => {
      const key = validateSubmittedKey(text)
      return isKeyProblem(key)
        ? ParseResult.fail(
            new ParseResult.Type(ast, undefined, `client_pub_key is not acceptable: ${key.reason}`),
          )
        : ParseResult.succeed(key)
    },
    encode: (key) =>
      ParseResult.succeed(
        `${key.type} ${key.blob.toString("base64")}${key.comment === "" ? "" : ` ${key.comment}`}`,
      ),
  },
)

const clientPubKey = Schema.propertySignature(SubmittedKey).annotations({
  missingMessage: () => "client_pub_key is missing",
})

const notAnObject = () => "the body must be a JSON object"

export const RegisterRequest = Schema.Struct({
  client_pub_key: clientPubKey,
  // Read by the enrollment gate; anything but a string is ignored there, as it always was.
  token: Schema.optional(Schema.Unknown).annotations({
    description: "the enrollment token, if not sent as Authorization: Bearer",
  }),
}).annotations({ identifier: "RegisterRequest", message: notAnObject })

const fingerprintProblem = () =>
  "fingerprint must be a SHA256 fingerprint as ssh-keygen -l prints it (SHA256:...)"

export const RevokeRequest = Schema.Struct({
  fingerprint: Schema.propertySignature(
    Schema.String.annotations({ message: fingerprintProblem }).pipe(
      Schema.pattern(/^SHA256:[A-Za-z0-9+/]{43}$/, { message: fingerprintProblem, examples: ["SHA256:..."] }),
    ),
  ).annotations({ missingMessage: fingerprintProblem }),
}).annotations({ identifier: "RevokeRequest", message: notAnObject })

const refuse = (ast: Schema.Schema.AnyNoContext["ast"], problem: string) =>
  ParseResult.fail(new ParseResult.Type(ast, undefined, problem))

/** Any value is read as a number, as it always was ("3" is 3); then 1 to the maximum. */
const Uses = Schema.transformOrFail(Schema.Unknown, Schema.Int, {
  strict: true,
  decode: (value, _, ast) =>
    Either.match(checkUses(Number(value)), {
      onLeft: (problem) => refuse(ast, problem),
      onRight: ParseResult.succeed,
    }),
  encode: ParseResult.succeed,
}).annotations({ description: "how many keys may register with it (default 1)" })

/** A lifetime as "90s", "10m", "12h", "7d" or seconds, decoded to seconds. */
const Ttl = Schema.transformOrFail(
  // override: the framework's own wording would quote the value back, and names the wrong thing.
  Schema.Union(Schema.String, Schema.Number).annotations({
    message: () => ({ message: "ttl: ttl must be a string or a number", override: true }),
  }),
  Schema.Int,
  {
    strict: true,
    decode: (value, _, ast) =>
      Either.match(parseTtl(String(value)), {
        onLeft: (problem) => refuse(ast, `ttl: ${problem}`),
        onRight: ParseResult.succeed,
      }),
    encode: ParseResult.succeed,
  },
).annotations({ description: `how long it is valid, e.g. 10m, 12h, 7d, or seconds (default ${defaultTtl})` })

/** The default lifetime in seconds; parsing the constant cannot fail, the fallback keeps it total. */
const defaultTtlSeconds = Either.getOrElse(parseTtl(defaultTtl), () => 3600)

export const TokenRequest = Schema.Struct({
  uses: Schema.optionalWith(Uses, { default: () => 1 }),
  ttl: Schema.optionalWith(Ttl, { default: () => defaultTtlSeconds }),
  identity: Schema.optional(
    Schema.String.annotations({
      description: "written as mcp-identity on the line of each key it registers",
      message: () => "identity must be a string",
    }),
  ),
  groups: Schema.optional(
    Schema.Union(Schema.Array(Schema.String), Schema.String).annotations({
      description: 'written as mcp-groups on the line of each key it registers: ["ci"] or "ci,deploy"',
      message: () => "groups must be a list of strings or a comma-separated string",
    }),
  ),
}).annotations({ identifier: "TokenRequest", message: notAnObject })

/** The reason a body was refused: the first problem, as its schema words it. */
export const decodeProblem = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)[0]?.message ?? "the body is not acceptable"

const refusals = [
  BadRequest,
  Unauthorized,
  Forbidden,
  NotFound,
  PayloadTooLarge,
  UnsupportedMediaType,
  TooManyRequests,
  InternalError,
  StoreDown,
  ConfigRejected,
  NotReady,
] as const

export type Refusal = InstanceType<(typeof refusals)[number]>

/** One of this API's refusals, which the framework encodes from its schema. */
export const isRefusal = (value: unknown): value is Refusal =>
  refusals.some((refusal) => value instanceof refusal)
