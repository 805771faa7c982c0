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
