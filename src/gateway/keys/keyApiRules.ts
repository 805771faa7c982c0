/**
 * The key API's rules without IO: who may register, the request limits, and its OpenAPI document.
 */
import { isLoopbackHost } from "../../shared/net.js"
import type { GatewaySettings } from "../config/settings.js"

/** Largest request body the key API reads; a public key line is far smaller. */
export const maxBodyBytes = 16 * 1024

/** Secrets given to the server (admin token, fixed enrollment token) must be at least this long. */
export const minimumSecretLength = 16

export const registrationModes = ["open", "token", "closed"] as const
export type RegistrationMode = (typeof registrationModes)[number]

/**
 * Open registration lets anyone who reaches the API log in and use every tool, so it is refused on
 * an address others can reach unless that was asked for by name.
 */
export const registrationPolicyProblem = (
  settings: Pick<
    GatewaySettings,
    | "runKeyServer"
    | "registration"
    | "keyServerHost"
    | "keyServerPort"
    | "allowOpenRegistrationOnPublicInterface"
  >,
): string | undefined =>
  settings.runKeyServer &&
  settings.registration === "open" &&
  !isLoopbackHost(settings.keyServerHost) &&
  !settings.allowOpenRegistrationOnPublicInterface
    ? `--registration open on ${settings.keyServerHost}:${settings.keyServerPort} would let anyone who reaches ` +
      "that address register a key and use every tool. Bind the key API to a loopback address " +
      "(--key-server-host 127.0.0.1), use --registration token, or, if you really mean it, add " +
      "--allow-open-registration-on-public-interface"
    : undefined

/** The token of an `Authorization: Bearer <token>` header. */
export const bearerToken = (header: string | undefined): string | undefined => {
  const match = /^\s*Bearer\s+(\S+)\s*$/i.exec(header ?? "")
  return match?.[1]
}

const errorResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
})

const jsonBody = (ref: string) => ({
  required: true,
  content: { "application/json": { schema: { $ref: `#/components/schemas/${ref}` } } },
})

const ok = (description: string, ref: string) => ({
  description,
  content: { "application/json": { schema: { $ref: `#/components/schemas/${ref}` } } },
})

const commonErrors = {
  "415": errorResponse("the Content-Type is not application/json"),
  "400": errorResponse("the body is not JSON, or a field is missing or invalid (the error says which)"),
  "413": errorResponse(`the body is larger than ${maxBodyBytes} bytes`),
  "429": {
    ...errorResponse("too many requests from this address; see Retry-After"),
    headers: { "Retry-After": { schema: { type: "integer" }, description: "seconds to wait" } },
  },
}

const adminErrors = {
  "401": errorResponse("no admin token was given"),
  "403": errorResponse("the admin token is wrong, or the admin API is disabled"),
}

/** OpenAPI 3.1 description of the key API, served at GET /openapi.json. */
export const openApiDocument = (version: string) => ({
  openapi: "3.1.0",
  info: {
    title: "mcp-ssh key API",
    version,
    description:
      "Fetch the SSH host key, register a client public key (with an enrollment token unless " +
      "registration is open), and administer keys and tokens with the admin token.",
  },
  components: {
    securitySchemes: {
      enrollmentToken: { type: "http", scheme: "bearer", description: "an enrollment token (mcpssh_...)" },
      adminToken: { type: "http", scheme: "bearer", description: "the server's admin token" },
    },
    schemas: {
      Error: { type: "object", required: ["error"], properties: { error: { type: "string" } } },
      Health: {
        type: "object",
        required: ["status"],
        properties: {
          status: { const: "healthy" },
          ssh: {
            type: "object",
            properties: { listening: { type: "boolean" }, address: { type: "string" } },
          },
          servers: { type: "object", properties: { configured: { type: "integer" } } },
          registration: { enum: [...registrationModes] },
        },
      },
      ServerPublicKey: {
        type: "object",
        required: ["server_pub_key", "fingerprint"],
        properties: {
          server_pub_key: { type: "string", examples: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA..."] },
          fingerprint: { type: "string", examples: ["SHA256:..."] },
        },
      },
      RegisterRequest: {
        type: "object",
        required: ["client_pub_key"],
        properties: {
          client_pub_key: {
            type: "string",
            description:
              "one OpenSSH public key line: ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa of 2048 bits or more",
          },
          token: {
            type: "string",
            description: "the enrollment token, if not sent as Authorization: Bearer",
          },
        },
      },
      RegisterResponse: {
        type: "object",
        required: ["status", "fingerprint"],
        properties: {
          status: { const: "success" },
          fingerprint: { type: "string" },
          added: { type: "boolean", description: "false when the key was registered already" },
        },
      },
      Key: {
        type: "object",
        required: ["fingerprint", "type", "comment"],
        properties: {
          fingerprint: { type: "string" },
          type: { type: "string" },
          comment: { type: "string" },
          added_at: { type: ["string", "null"], format: "date-time" },
          source: {
            type: ["string", "null"],
            description: "how the key was added; null for lines added by hand",
          },
          options: { type: ["string", "null"] },
        },
      },
      KeyList: {
        type: "object",
        required: ["keys"],
        properties: { keys: { type: "array", items: { $ref: "#/components/schemas/Key" } } },
      },
      AddKeyRequest: {
        type: "object",
        required: ["client_pub_key"],
        properties: { client_pub_key: { type: "string" } },
      },
      RevokeRequest: {
        type: "object",
        required: ["fingerprint"],
        properties: { fingerprint: { type: "string", examples: ["SHA256:..."] } },
      },
      RevokeResponse: {
        type: "object",
        required: ["status", "fingerprint", "removed"],
        properties: {
          status: { const: "revoked" },
          fingerprint: { type: "string" },
          removed: { type: "integer", description: "lines removed" },
        },
      },
      TokenRequest: {
        type: "object",
        properties: {
          uses: { type: "integer", minimum: 1, default: 1 },
          ttl: {
            oneOf: [
              { type: "string", examples: ["10m", "12h", "7d"] },
              { type: "integer", description: "seconds" },
            ],
            default: "1h",
          },
        },
      },
      TokenResponse: {
        type: "object",
        required: ["token", "id", "uses", "expires_at"],
        properties: {
          token: { type: "string", description: "shown once; only its hash is stored" },
          id: { type: "string" },
          uses: { type: "integer" },
          expires_at: { type: "string", format: "date-time" },
        },
      },
    },
  },
  paths: {
    "/health": {
      get: { summary: "Liveness and readiness", responses: { "200": ok("the gateway is up", "Health") } },
    },
    "/server_pub_key": {
      get: {
        summary: "The SSH host public key, to pin in known_hosts",
        responses: { "200": ok("the host key", "ServerPublicKey"), "429": commonErrors["429"] },
      },
    },
    "/register": {
      post: {
        summary: "Register a client public key",
        description:
          "Needs an enrollment token (Authorization: Bearer or the token field) unless the server runs " +
          "with --registration open; refused with --registration closed. Registering a key again is a no-op.",
        security: [{ enrollmentToken: [] }, {}],
        requestBody: jsonBody("RegisterRequest"),
        responses: {
          "200": ok("registered (or registered already)", "RegisterResponse"),
          ...commonErrors,
          "401": errorResponse("no enrollment token was given"),
          "403": errorResponse(
            "the token is not valid, has expired or has no uses left; or registration is closed",
          ),
        },
      },
    },
    "/admin/keys": {
      get: {
        summary: "List the authorized keys",
        security: [{ adminToken: [] }],
        responses: { "200": ok("the keys", "KeyList"), ...adminErrors, "429": commonErrors["429"] },
      },
      post: {
        summary: "Add a key (whatever the registration mode)",
        security: [{ adminToken: [] }],
        requestBody: jsonBody("AddKeyRequest"),
        responses: {
          "200": ok("added (or present already)", "RegisterResponse"),
          ...commonErrors,
          ...adminErrors,
        },
      },
    },
    "/admin/keys/revoke": {
      post: {
        summary: "Revoke a key by fingerprint; its live sessions are closed",
        security: [{ adminToken: [] }],
        requestBody: jsonBody("RevokeRequest"),
        responses: {
          "200": ok("revoked", "RevokeResponse"),
          "404": errorResponse("no key has this fingerprint"),
          ...commonErrors,
          ...adminErrors,
        },
      },
    },
    "/admin/tokens": {
      post: {
        summary: "Create an enrollment token",
        security: [{ adminToken: [] }],
        requestBody: { ...jsonBody("TokenRequest"), required: false },
        responses: { "201": ok("the new token", "TokenResponse"), ...commonErrors, ...adminErrors },
      },
    },
    "/openapi.json": {
      get: { summary: "This document", responses: { "200": { description: "OpenAPI 3.1" } } },
    },
  },
})
