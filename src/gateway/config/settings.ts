/**
 * The gateway settings, as one table: each with its schema, default and doc, set by flags,
 * MCP_SSH_* variables or the `gateway` object of servers_config.json (serversConfig.ts).
 */
import { Either, ParseResult, Schema } from "effect"
import { type FlagType, flagTypes } from "../../shared/cliFlags.js"
import { parseCidrList } from "../identity/addressPatterns.js"
import { parseKeyStoreLocation } from "../keys/keyStoreLocation.js"

// ---------------------------------------------------------------------------------------------
// Gateway settings

const Seconds = Schema.Number.pipe(
  Schema.finite(),
  Schema.greaterThan(0, { message: () => "must be a number of seconds greater than 0" }),
)
/** 0 is meaningful here: do not wait at all. */
const SecondsOrNone = Schema.Number.pipe(
  Schema.finite(),
  Schema.greaterThanOrEqualTo(0, { message: () => "must be a number of seconds, 0 or more" }),
)
const Count = Schema.Int.pipe(
  Schema.greaterThanOrEqualTo(1, { message: () => "must be a whole number of at least 1" }),
)
const Port = Schema.Int.pipe(
  Schema.between(0, 65535, { message: () => "must be a port number from 0 to 65535" }),
)
const NonEmpty = Schema.NonEmptyTrimmedString
/** `10.0.0.0/8, 192.0.2.7`: addresses and CIDR networks, spaces allowed after the commas. */
const CidrListText = NonEmpty.pipe(
  Schema.filter((text) => {
    const parsed = parseCidrList(text.replace(/\s+/g, ""))
    return Either.isRight(parsed) || `'${parsed.left.entry}': ${parsed.left.detail}`
  }),
)
/** `file` or a PostgreSQL URL; the complaint shows the URL without its password. */
const KeyStoreText = NonEmpty.pipe(
  Schema.filter((text) => {
    const parsed = parseKeyStoreLocation(text)
    return Either.isRight(parsed) || parsed.left
  }),
)
/** Tokens others could guess are no tokens; the value never appears in an error message. */
const Secret = Schema.Trim.pipe(
  Schema.filter((text) => text.length >= 16 || "must be at least 16 characters (use a random string)"),
)

export const logLevels = [
  "TRACE",
  "DEBUG",
  "INFO",
  "WARNING",
  "WARN",
  "ERROR",
  "CRITICAL",
  "FATAL",
  "NONE",
] as const
const LogLevelName = Schema.transform(Schema.String, Schema.Literal(...logLevels), {
  strict: false,
  decode: (text) => text.toUpperCase(),
  encode: (level) => level,
})

/**
 * Every gateway setting: its flag (kebab-case of the key), its variable (MCP_SSH_ + CONSTANT_CASE of
 * the key), its JSON key under `gateway`, its type, default and help text. The CLI, the environment
 * reader and the JSON schema are all generated from this table.
 */
export const gatewaySettings = {
  host: { schema: NonEmpty, default: "127.0.0.1", doc: "SSH server host address to bind to" },
  port: { schema: Port, default: 8022, doc: "SSH server port (0 picks a free port)" },
  authorizedClients: {
    schema: NonEmpty,
    default: "~/.config/mcp-ssh/authorized_keys",
    doc: "authorized_keys file of the clients allowed in (a dedicated file, not ~/.ssh/authorized_keys)",
  },
  keyStore: {
    schema: KeyStoreText,
    default: "file",
    // A URL may carry a password: never echoed back.
    secret: true,
    doc: "where keys, CA lines and enrollment tokens live: file (--authorized-clients and --token-store) or a postgres:// URL shared by several gateways",
  },
  keyStorePasswordFile: {
    schema: NonEmpty,
    default: undefined,
    doc: "file holding the key database's password (else PGPASSWORD)",
  },
  revokedKeys: {
    schema: NonEmpty,
    default: undefined,
    doc: "revoked keys and certificates, as sshd's RevokedKeys: an OpenSSH KRL (ssh-keygen -k) or a list of public keys",
  },
  serverKey: {
    schema: NonEmpty,
    default: "~/.ssh/m2m_mcp_server_ssh_server",
    doc: "host private key; an ed25519 key is generated there if missing",
  },
  passphrase: { schema: Schema.String, default: undefined, doc: "passphrase of the host private key" },
  logLevel: { schema: LogLevelName, default: "INFO", doc: "least severe level of the lines logged" },
  logFormat: {
    schema: Schema.Literal("logfmt", "json"),
    default: "logfmt",
    doc: "how log lines are written: logfmt, or one JSON object a line for log shippers",
  },
  runKeyServer: { schema: Schema.Boolean, default: false, doc: "run the HTTP key management API" },
  keyServerHost: { schema: NonEmpty, default: "127.0.0.1", doc: "host of the key management API" },
  keyServerPort: { schema: Port, default: 8000, doc: "port of the key management API" },
  registration: {
    schema: Schema.Literal("open", "token", "closed"),
    default: "token",
    doc: "who may POST /register: token (an enrollment token), open (anyone; loopback only), closed",
  },
  allowOpenRegistrationOnPublicInterface: {
    schema: Schema.Boolean,
    default: false,
    doc: "allow --registration open on a non-loopback key API address (anyone reaching it gets in)",
  },
  adminToken: {
    schema: Secret,
    default: undefined,
    secret: true,
    doc: "bearer token of the key API's admin endpoints (prefer --admin-token-file or the variable)",
  },
  adminTokenFile: { schema: NonEmpty, default: undefined, doc: "file holding the admin token" },
  enrollmentToken: {
    schema: Secret,
    default: undefined,
    secret: true,
    doc: "a fixed enrollment token for POST /register, with no use limit or expiry",
  },
  enrollmentTokenFile: {
    schema: NonEmpty,
    default: undefined,
    doc: "file holding the fixed enrollment token",
  },
  tokenStore: {
    schema: NonEmpty,
    default: undefined,
    doc: "file of issued enrollment tokens, hashes only (default: the authorized keys file + .tokens)",
  },
  keyServerRateLimit: {
    schema: Count,
    default: 30,
    doc: "key API requests per minute allowed from one address, once its burst is spent",
  },
  keyServerRateBurst: {
    schema: Count,
    default: 10,
    doc: "key API requests one address may make at once",
  },
  trustedProxies: {
    schema: CidrListText,
    default: undefined,
    doc: "load balancers (addresses, CIDR networks) whose PROXY header (SSH; required from them) and X-Forwarded-For (key API) name the client",
  },
  metricsHost: {
    schema: NonEmpty,
    default: "127.0.0.1",
    doc: "host of the Prometheus /metrics listener (a non-loopback address logs a warning)",
  },
  metricsPort: {
    schema: Port,
    default: undefined,
    doc: "port of the Prometheus /metrics listener; no port, no listener (0 picks a free port)",
  },
  metricsToolLabels: {
    schema: Schema.Boolean,
    default: false,
    doc: "label call metrics with the tool or prompt name too (more series)",
  },
  loginGraceTime: { schema: Seconds, default: 30, doc: "seconds a connection may take to authenticate" },
  maxAuthTries: { schema: Count, default: 6, doc: "failed authentication attempts before disconnecting" },
  maxStartups: { schema: Count, default: 100, doc: "unauthenticated connections allowed at once" },
  maxStartupsPerSource: {
    schema: Count,
    default: 10,
    doc: "unauthenticated connections allowed at once from one address",
  },
  maxSessions: { schema: Count, default: 10, doc: "session channels allowed per connection" },
  maxChildren: {
    schema: Count,
    // Each child holds 3 pipes of the gateway's (a 1024-fd default limit leaves room for sockets) and
    // 10-100 MiB of its own: 256 stays inside both on an ordinary machine.
    default: 256,
    doc: "child processes the gateway runs at once, all scopes and spares together",
  },
  maxChildrenPerIdentity: {
    schema: Count,
    default: undefined,
    doc: "child processes one identity's sessions may run at once (shared children count for nobody)",
  },
  keepaliveInterval: {
    schema: Seconds,
    default: 15,
    doc: "seconds between keepalive probes of a silent client",
  },
  keepaliveCountMax: { schema: Count, default: 3, doc: "unanswered keepalive probes before disconnecting" },
  maxLineBytes: {
    schema: Count,
    default: 16 * 1024 * 1024,
    doc: "largest JSON-RPC message in bytes, from clients and from servers",
  },
  startupWait: {
    schema: Seconds,
    default: 5,
    doc: "seconds a session's initialize waits for its servers to start; slower ones join later",
  },
  startupTimeout: {
    schema: Seconds,
    default: 15,
    doc: "seconds a server gets to start and answer initialize (and list its tools when the gateway starts)",
  },
  childStopTimeout: {
    schema: Seconds,
    default: 2,
    doc: "seconds a stopping child gets after stdin closes, and again after SIGTERM, before SIGKILL",
  },
  drainTimeout: {
    schema: SecondsOrNone,
    default: 30,
    doc: "seconds calls in flight may take to finish after SIGTERM before the gateway stops (0: no wait)",
  },
} as const satisfies Record<
  string,
  {
    readonly schema: Schema.Schema.AnyNoContext
    readonly default: unknown
    readonly doc: string
    /** Never echoed back in an error message. */
    readonly secret?: boolean
  }
>

export type SettingKey = keyof typeof gatewaySettings
export const settingKeys = Object.keys(gatewaySettings) as Array<SettingKey>

type SettingValue<K extends SettingKey> = Schema.Schema.Type<(typeof gatewaySettings)[K]["schema"]>
export type GatewaySettings = {
  readonly [K in SettingKey]: (typeof gatewaySettings)[K]["default"] extends undefined
    ? SettingValue<K> | undefined
    : SettingValue<K>
}

/** What a setting's flag takes, for the command line's parsing and help. */
export const flagType = (key: SettingKey): FlagType => {
  const spec: { readonly schema: unknown; readonly default: unknown } = gatewaySettings[key]
  if (typeof spec.default === "boolean") return flagTypes.boolean
  if (spec.schema === Port || spec.schema === Count) return flagTypes.integer
  if (spec.schema === Seconds || spec.schema === SecondsOrNone) return flagTypes.float
  if (key === "logLevel") return flagTypes.choice(logLevels)
  if (key === "registration") return flagTypes.choice(gatewaySettings.registration.schema.literals)
  if (key === "logFormat") return flagTypes.choice(gatewaySettings.logFormat.schema.literals)
  return flagTypes.text
}

export const flagName = (key: SettingKey): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
export const envName = (key: SettingKey): string =>
  `MCP_SSH_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`

/** A raw setting with where it came from, so an error can point at the flag, variable or JSON key. */
export interface RawSetting {
  readonly value: unknown
  readonly source: string
}

/** Text from flags and variables is converted to the setting's type before the schema checks it. */
const fromText = (key: SettingKey, text: string): unknown => {
  const def = gatewaySettings[key].default
  // By the flag's type, not the default's: --metrics-port has no default.
  const type = flagType(key)._tag
  if (type === "integer" || type === "float") {
    const trimmed = text.trim()
    return trimmed !== "" && Number.isFinite(Number(trimmed)) ? Number(trimmed) : text
  }
  if (typeof def === "boolean") {
    const lower = text.trim().toLowerCase()
    if (["1", "true", "yes", "on"].includes(lower)) return true
    if (["0", "false", "no", "off", ""].includes(lower)) return false
    return text
  }
  return text
}

export const decodeSettings = (
  raw: Partial<Record<SettingKey, RawSetting>>,
): Either.Either<GatewaySettings, string> => {
  const out: Record<string, unknown> = {}
  const problems: Array<string> = []
  for (const key of settingKeys) {
    const spec = gatewaySettings[key]
    const given = raw[key]
    if (given === undefined) {
      out[key] = spec.default
      continue
    }
    const value = typeof given.value === "string" ? fromText(key, given.value) : given.value
    const decoded = Schema.decodeUnknownEither(spec.schema as Schema.Schema.AnyNoContext)(value)
    if (Either.isLeft(decoded)) {
      const got = "secret" in spec && spec.secret ? "value hidden" : `got ${JSON.stringify(given.value)}`
      problems.push(`${given.source}: ${describeIssue(decoded.left)} (${got})`)
    } else {
      out[key] = decoded.right
    }
  }
  return problems.length > 0 ? Either.left(problems.join("\n")) : Either.right(out as GatewaySettings)
}

/** A schema's complaints, one line. */
export const describeIssue = (error: ParseResult.ParseError): string =>
  ParseResult.ArrayFormatter.formatErrorSync(error)
    .map((issue) => issue.message)
    .join("; ")
