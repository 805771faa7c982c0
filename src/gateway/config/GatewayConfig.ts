/**
 * The gateway's resolved configuration: settings from flags > MCP_SSH_* variables > the JSON file's
 * `gateway` object > defaults, and the child servers of servers_config.json ready to spawn.
 */
import { dirname, resolve } from "node:path"
import { Config, Context, Effect, Either, Option } from "effect"
import { errorText } from "../../shared/errorText.js"
import { readText, statIfExists } from "../../shared/fileSystem.js"
import { expandHome } from "../../shared/paths.js"
import { type AccessPolicy, checkAccess, compileAccess } from "../access/accessConfig.js"
import { ConfigError } from "../errors.js"
import { registrationPolicyProblem } from "../keys/keyApiRules.js"
import {
  childEnvironment,
  decodeServersConfig,
  expandEnvValue,
  identityVariable,
  type ServersConfigFile,
  substituteIdentity,
} from "./serversConfig.js"
import {
  decodeSettings,
  envName,
  flagName,
  type GatewaySettings,
  type RawSetting,
  type SettingKey,
  settingKeys,
} from "./settings.js"

export interface ChildServer {
  readonly name: string
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** The complete environment of the child: a safe inherited set plus what the config names. */
  readonly env: Readonly<Record<string, string>>
  readonly cwd: string | undefined
  /** See ServerSpec.prefix: undefined means the server's name. */
  readonly prefix: string | undefined
  /** Seconds a request may go without an answer or progress. */
  readonly requestTimeout: number
  /** Who shares one child; absent: "session" (each session its own). */
  readonly scope?: ServerScope
  /** A shared server's children (default 1). */
  readonly instances?: number
  /** Seconds a shared or identity child may go unused before it stops; 0: never (default 300). */
  readonly idleTimeout?: number
  /** "eager": a shared child starts with the gateway; default "lazy", at its first session. */
  readonly start?: "eager" | "lazy"
  /** Session-scope children kept started ahead of the sessions that take them (default 0). */
  readonly spares?: number
  /** The MCP generation the child is spoken to in; absent: "auto" (probed with server/discover). */
  readonly protocol?: ServerProtocol
}

export type ServerProtocol = "auto" | "2026-07-28" | "2025-11-25"

export type ServerScope = "session" | "identity" | "shared"

/** The sharing settings of a server with their defaults filled in. */
export const sharingOf = (server: ChildServer) => ({
  scope: server.scope ?? "session",
  instances: server.instances ?? 1,
  idleTimeout: server.idleTimeout ?? 300,
  start: server.start ?? "lazy",
  spares: server.spares ?? 0,
})

export interface GatewayConfigShape {
  readonly configPath: string
  readonly settings: GatewaySettings
  /** Enabled servers, in config order. */
  readonly servers: ReadonlyArray<ChildServer>
  /** The `access` policy; absent: every identity may use everything. */
  readonly access?: AccessPolicy
}

export class GatewayConfig extends Context.Tag("mcp-ssh/GatewayConfig")<
  GatewayConfig,
  GatewayConfigShape
>() {}

/** A server with `${MCP_SSH_IDENTITY}` filled in; a string says why it cannot be. */
export const resolveIdentity = (server: ChildServer, identity: string): ChildServer | string => {
  const env: Record<string, string> = {}
  let changed = false
  for (const [name, value] of Object.entries(server.env)) {
    const replaced = substituteIdentity(value, identity)
    if (replaced === undefined) return `identity '${identity}' cannot be used in env.${name}`
    changed ||= replaced !== value
    env[name] = replaced
  }
  const args: Array<string> = []
  for (const arg of server.args) {
    const replaced = substituteIdentity(arg, identity)
    if (replaced === undefined) return `identity '${identity}' cannot be used in args`
    changed ||= replaced !== arg
    args.push(replaced)
  }
  const cwd = server.cwd === undefined ? undefined : substituteIdentity(server.cwd, identity)
  if (server.cwd !== undefined && cwd === undefined) return `identity '${identity}' cannot be used in cwd`
  changed ||= cwd !== server.cwd
  return changed ? { ...server, env, args, cwd } : server
}

/** Values given on the command line; absent means "not given", so lower layers may set them. */
export type FlagValues = Partial<Record<SettingKey | "serversConfig", string | number | boolean>>

const serversConfigVariable = "MCP_SSH_SERVERS_CONFIG"
const defaultRequestTimeout = 60

/** Read MCP_SSH_* through the ambient ConfigProvider, so tests can swap the environment. */
const readEnvironmentSettings = Effect.gen(function* () {
  const found: Partial<Record<SettingKey, RawSetting>> = {}
  for (const key of settingKeys) {
    const value = yield* Config.option(Config.string(envName(key)))
    if (Option.isSome(value)) found[key] = { value: value.value, source: envName(key) }
  }
  return found
}).pipe(Effect.orDie)

const readJson = (path: string) =>
  readText(path).pipe(
    Effect.mapError(
      (error) => new ConfigError({ message: `${path}: cannot read the servers config: ${error.message}` }),
    ),
    Effect.flatMap((text) =>
      Effect.try({
        try: (): unknown => JSON.parse(text),
        catch: (error) => new ConfigError({ message: `${path}: not valid JSON: ${errorText(error)}` }),
      }),
    ),
  )

/** The servers config's path (flag > variable > default) and whether it was named explicitly. */
const serversConfigPath = (flags: FlagValues) =>
  Effect.gen(function* () {
    const fromEnvPath = yield* Config.option(Config.string(serversConfigVariable)).pipe(Effect.orDie)
    const named =
      typeof flags.serversConfig === "string" ? flags.serversConfig : Option.getOrUndefined(fromEnvPath)
    return { configPath: resolve(expandHome(named ?? "servers_config.json")), named: named !== undefined }
  })

const readServersConfig = (configPath: string) =>
  readJson(configPath).pipe(
    Effect.flatMap((json) =>
      Either.match(decodeServersConfig(json), {
        onLeft: (problems) =>
          Effect.fail(new ConfigError({ message: `${configPath}:\n${indent(problems)}` })),
        onRight: Effect.succeed,
      }),
    ),
  )

/** Settings from flags > MCP_SSH_* > the file's `gateway` object > defaults. */
const resolveSettings = (flags: FlagValues, configPath: string, file: ServersConfigFile | undefined) =>
  Effect.gen(function* () {
    const raw: Partial<Record<SettingKey, RawSetting>> = {}
    for (const [key, value] of Object.entries(file?.gateway ?? {})) {
      raw[key as SettingKey] = { value, source: `${configPath}: gateway.${key}` }
    }
    Object.assign(raw, yield* readEnvironmentSettings)
    for (const key of settingKeys) {
      const value = flags[key]
      if (value !== undefined) raw[key] = { value, source: `--${flagName(key)}` }
    }
    return yield* Either.match(decodeSettings(raw), {
      onLeft: (problems) =>
        Effect.fail(new ConfigError({ message: `invalid settings:\n${indent(problems)}` })),
      onRight: Effect.succeed,
    })
  })

export const loadGatewayConfig = (
  flags: FlagValues,
  environment: Readonly<Record<string, string | undefined>>,
) =>
  Effect.gen(function* () {
    const { configPath } = yield* serversConfigPath(flags)
    const file = yield* readServersConfig(configPath)
    const settings = yield* resolveSettings(flags, configPath, file)
    const policyProblem = registrationPolicyProblem(settings)
    if (policyProblem !== undefined) return yield* new ConfigError({ message: policyProblem })

    const servers: Array<ChildServer> = []
    const problems: Array<string> = []
    for (const [name, spec] of Object.entries(file.mcpServers)) {
      if (spec.disabled === true) continue
      const env: Record<string, string> = {}
      for (const [variable, value] of Object.entries(spec.env ?? {})) {
        // ${MCP_SSH_IDENTITY} stays as it is: each identity's child gets its own value when it starts.
        Either.match(
          expandEnvValue(value, { ...environment, [identityVariable]: `\${${identityVariable}}` }),
          {
            onLeft: (problem) => problems.push(`mcpServers.${name}.env.${variable}: ${problem}`),
            onRight: (expanded) => {
              env[variable] = expanded
            },
          },
        )
      }
      servers.push({
        name,
        command: spec.command,
        args: spec.args ?? [],
        env: childEnvironment(environment, env),
        cwd: spec.cwd === undefined ? undefined : resolve(dirname(configPath), expandHome(spec.cwd)),
        prefix: spec.prefix,
        requestTimeout: spec.timeout ?? defaultRequestTimeout,
        ...(spec.scope === undefined ? {} : { scope: spec.scope }),
        ...(spec.instances === undefined ? {} : { instances: spec.instances }),
        ...(spec.idleTimeout === undefined ? {} : { idleTimeout: spec.idleTimeout }),
        ...(spec.start === undefined ? {} : { start: spec.start }),
        ...(spec.spares === undefined ? {} : { spares: spec.spares }),
        ...(spec.protocol === undefined ? {} : { protocol: spec.protocol }),
      })
    }
    const accessCheck =
      file.access === undefined ? undefined : checkAccess(file.access, Object.keys(file.mcpServers))
    problems.push(...(accessCheck?.problems ?? []))
    if (problems.length > 0) {
      return yield* Effect.fail(
        new ConfigError({ message: `${configPath}:\n${indent(problems.join("\n"))}` }),
      )
    }
    if (servers.length === 0) {
      return yield* Effect.fail(
        new ConfigError({ message: `${configPath}: mcpServers: no enabled server; name at least one` }),
      )
    }
    for (const warning of accessCheck?.warnings ?? []) yield* Effect.logWarning(`${configPath}: ${warning}`)
    return {
      configPath,
      settings,
      servers,
      ...(file.access === undefined ? {} : { access: compileAccess(file.access) }),
    } satisfies GatewayConfigShape
  })

/**
 * The settings alone, for the offline key and token commands: the servers config is read when it was
 * named or exists (for its `gateway` settings), and its servers are neither needed nor checked.
 */
export const loadStoreConfig = (flags: FlagValues) =>
  Effect.gen(function* () {
    const { configPath, named } = yield* serversConfigPath(flags)
    // Unreadable counts as absent here, as for an unnamed default: reading it is not asked for.
    const exists = yield* statIfExists(configPath).pipe(
      Effect.map(Option.isSome),
      Effect.orElseSucceed(() => false),
    )
    const file = named || exists ? yield* readServersConfig(configPath) : undefined
    const settings = yield* resolveSettings(flags, configPath, file)
    return { configPath, settings, servers: [] } satisfies GatewayConfigShape
  })

const indent = (text: string): string =>
  text
    .split("\n")
    .map((line) => `  ${line}`)
    .join("\n")
