/**
 * servers_config.json as one Schema: Claude-Desktop style `mcpServers`, plus an optional `gateway`
 * object with the settings of settings.ts and an optional `access` policy; and what a server's child gets for its environment.
 */
import { Either, ParseResult, Schema } from "effect"
import { AccessSection } from "../access/accessConfig.js"
import { describeIssue, settingKeys } from "./settings.js"

/** Server names become prefixes of tool names (`<server>__<tool>`), so they keep to that alphabet. */
export const ServerName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/, {
    message: () => "a server name must be 1-64 letters, digits, '_' or '-', starting with a letter or digit",
  }),
  Schema.filter(
    (name) => !name.includes("__") || "a server name may not contain '__' (it separates server and tool)",
  ),
)

export const ServerSpec = Schema.Struct({
  command: Schema.NonEmptyTrimmedString,
  args: Schema.optionalWith(Schema.Array(Schema.String), { exact: true }),
  env: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { exact: true }),
  cwd: Schema.optionalWith(Schema.NonEmptyTrimmedString, { exact: true }),
  disabled: Schema.optionalWith(Schema.Boolean, { exact: true }),
  /** Claude Desktop configs may say so explicitly; stdio is the only transport a child can have here. */
  type: Schema.optionalWith(Schema.Literal("stdio"), { exact: true }),
  /** Tool and prompt names become `<prefix>__<name>` (default: the server's name); "" keeps them bare. */
  prefix: Schema.optionalWith(
    Schema.String.pipe(
      Schema.pattern(/^[A-Za-z0-9_-]{0,40}$/, {
        message: () => "a prefix is at most 40 letters, digits, '_' or '-' (or empty for bare names)",
      }),
    ),
    { exact: true },
  ),
  /** Seconds a request to this server may go without an answer or progress. */
  timeout: Schema.optionalWith(
    Schema.Number.pipe(
      Schema.greaterThan(0, { message: () => "timeout is a number of seconds greater than 0" }),
    ),
    { exact: true },
  ),
  /** Who shares one child (see README "Sharing servers between sessions"). */
  scope: Schema.optionalWith(
    Schema.Literal("session", "identity", "shared").annotations({
      message: () => 'scope must be "session", "identity" or "shared"',
    }),
    { exact: true },
  ),
  /** A shared server's children; sessions are spread over them, least busy first. */
  instances: Schema.optionalWith(
    Schema.Int.pipe(Schema.between(1, 64, { message: () => "instances is a whole number from 1 to 64" })),
    { exact: true },
  ),
  /** Seconds a shared or identity child may go unused before it stops; 0: never. */
  idleTimeout: Schema.optionalWith(
    Schema.Number.pipe(
      Schema.finite(),
      Schema.greaterThanOrEqualTo(0, { message: () => "idleTimeout is a number of seconds, 0 or more" }),
    ),
    { exact: true },
  ),
  /** A shared child starts with the gateway (eager) or at its first session (lazy). */
  start: Schema.optionalWith(
    Schema.Literal("eager", "lazy").annotations({
      message: () => 'start must be "eager" or "lazy"',
    }),
    { exact: true },
  ),
  /** Session servers kept started and initialized ahead of the sessions that will take them. */
  spares: Schema.optionalWith(
    Schema.Int.pipe(Schema.between(0, 64, { message: () => "spares is a whole number from 0 to 64" })),
    { exact: true },
  ),
  /** Which MCP generation to speak to the server: found out with server/discover (auto), or fixed. */
  protocol: Schema.optionalWith(
    Schema.Literal("auto", "2026-07-28", "2025-11-25").annotations({
      message: () => 'protocol must be "auto", "2026-07-28" or "2025-11-25"',
    }),
    { exact: true },
  ),
})
export type ServerSpec = typeof ServerSpec.Type

/** `gateway` in the JSON file: the same settings, by their camelCase keys. */
const GatewaySection = Schema.Record({ key: Schema.String, value: Schema.Unknown }).pipe(
  Schema.filter((section) => {
    const unknown = Object.keys(section).filter((key) => !(settingKeys as Array<string>).includes(key))
    return unknown.length === 0 || `unknown setting(s) ${unknown.map((k) => `'${k}'`).join(", ")}`
  }),
)

export const ServersConfigFile = Schema.Struct({
  // Names are checked on their own below: a key failing a Record's key schema reads "is unexpected".
  mcpServers: Schema.Record({ key: Schema.String, value: ServerSpec }),
  gateway: Schema.optionalWith(GatewaySection, { exact: true }),
  /** Who may use which servers, tools and prompts (access/accessConfig.ts); absent: everyone, everything. */
  access: Schema.optionalWith(AccessSection, { exact: true }),
  /** Editors add it; it carries no meaning here. */
  $schema: Schema.optionalWith(Schema.String, { exact: true }),
})
export type ServersConfigFile = typeof ServersConfigFile.Type

const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.length === 0 ? "(top level)" : path.map((segment) => String(segment)).join(".")

/** Decode the parsed JSON of servers_config.json; on failure every problem names its field. */
export const decodeServersConfig = (value: unknown): Either.Either<ServersConfigFile, string> => {
  const problems: Array<string> = []
  const decoded = Schema.decodeUnknownEither(ServersConfigFile, { errors: "all", onExcessProperty: "error" })(
    value,
  )
  if (Either.isLeft(decoded)) {
    problems.push(
      ...ParseResult.ArrayFormatter.formatErrorSync(decoded.left).map(
        (issue) => `${formatPath(issue.path)}: ${issue.message}`,
      ),
    )
  }
  const servers =
    typeof value === "object" && value !== null && "mcpServers" in value ? value.mcpServers : undefined
  for (const name of typeof servers === "object" && servers !== null ? Object.keys(servers) : []) {
    const checked = Schema.decodeUnknownEither(ServerName)(name)
    if (Either.isLeft(checked)) problems.push(`mcpServers.${name}: ${describeIssue(checked.left)}`)
  }
  if (Either.isRight(decoded)) {
    for (const [name, spec] of Object.entries(decoded.right.mcpServers))
      problems.push(...sharingProblems(name, spec))
  }
  return problems.length > 0 || Either.isLeft(decoded)
    ? Either.left(problems.join("\n"))
    : Either.right(decoded.right)
}

/**
 * Expand `${VAR}` in a server's `env` values from the gateway's environment. A reference to an unset
 * variable is an error, not an empty string: a missing API key should stop the start, not a call later.
 */
export const expandEnvValue = (
  value: string,
  environment: Readonly<Record<string, string | undefined>>,
): Either.Either<string, string> => {
  const missing: Array<string> = []
  const expanded = value.replace(
    /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g,
    (whole, name: string | undefined) => {
      if (name === undefined) return "$"
      const found = environment[name]
      if (found === undefined) missing.push(name)
      return found ?? whole
    },
  )
  return missing.length > 0
    ? Either.left(`references unset variable(s) ${missing.map((n) => `\${${n}}`).join(", ")}`)
    : Either.right(expanded)
}

/** What a child inherits from the gateway's environment when its config does not say more. */
export const inheritedVariables = [
  "PATH",
  "HOME",
  "USER",
  "LOGNAME",
  "SHELL",
  "TERM",
  "TMPDIR",
  "TZ",
  "LANG",
] as const

export const childEnvironment = (
  gatewayEnvironment: Readonly<Record<string, string | undefined>>,
  configured: Readonly<Record<string, string>>,
): Record<string, string> => {
  const env: Record<string, string> = {}
  for (const name of inheritedVariables) {
    const value = gatewayEnvironment[name]
    if (value !== undefined) env[name] = value
  }
  for (const [name, value] of Object.entries(gatewayEnvironment)) {
    if (name.startsWith("LC_") && value !== undefined) env[name] = value
  }
  return { ...env, ...configured }
}

/** The variable an identity-scoped server's `env`, `args` and `cwd` may name: the identity it serves. */
export const identityVariable = "MCP_SSH_IDENTITY"
const identityReference = "${MCP_SSH_IDENTITY}"

/** Settings that only make sense together; each problem names its field. */
const sharingProblems = (name: string, spec: ServerSpec): Array<string> => {
  const problems: Array<string> = []
  const scope = spec.scope ?? "session"
  if (spec.spares !== undefined && spec.spares > 0 && scope !== "session")
    problems.push(
      `mcpServers.${name}.spares: spares are for scope "session" (this server's scope is "${scope}")`,
    )
  if (spec.instances !== undefined && spec.instances > 1 && scope !== "shared")
    problems.push(
      `mcpServers.${name}.instances: instances are for scope "shared" (this server's scope is "${scope}")`,
    )
  if (scope === "shared") {
    const places = [
      ...Object.entries(spec.env ?? {}).map(([key, value]) => [`env.${key}`, value] as const),
      ...(spec.args ?? []).map((value, index) => [`args.${index}`, value] as const),
      ...(spec.cwd === undefined ? [] : [["cwd", spec.cwd] as const]),
    ]
    for (const [field, value] of places) {
      if (value.includes(identityReference))
        problems.push(
          `mcpServers.${name}.${field}: \${${identityVariable}} has no value in a shared server (one child serves every identity); use scope "identity"`,
        )
    }
  }
  return problems
}

/** Identity names become part of a child's arguments, environment or directory: keep them plain. */
const safeIdentity = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/

/** `${MCP_SSH_IDENTITY}` replaced by the identity; undefined when the identity is not safe to use. */
export const substituteIdentity = (text: string, identity: string): string | undefined => {
  if (!text.includes(identityReference)) return text
  return safeIdentity.test(identity) ? text.split(identityReference).join(identity) : undefined
}
