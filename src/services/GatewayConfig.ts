/**
 * The gateway's resolved configuration: settings from flags > MCP_SSH_* variables > the JSON file's
 * `gateway` object > defaults, and the child servers of servers_config.json ready to spawn.
 */
import { readFile } from "node:fs/promises"
import { homedir } from "node:os"
import { dirname, resolve } from "node:path"
import { Config, Context, Effect, Either, Layer, Option } from "effect"
import {
  childEnvironment,
  decodeServersConfig,
  decodeSettings,
  envName,
  expandEnvValue,
  flagName,
  type GatewaySettings,
  type RawSetting,
  type SettingKey,
  settingKeys,
} from "../domain/config.js"
import { ConfigError } from "../domain/errors.js"

export interface ChildServer {
  readonly name: string
  readonly command: string
  readonly args: ReadonlyArray<string>
  /** The complete environment of the child: a safe inherited set plus what the config names. */
  readonly env: Readonly<Record<string, string>>
  readonly cwd: string | undefined
}

export interface GatewayConfigShape {
  readonly configPath: string
  readonly settings: GatewaySettings
  /** Enabled servers, in config order. */
  readonly servers: ReadonlyArray<ChildServer>
}

export class GatewayConfig extends Context.Tag("mcp-ssh/GatewayConfig")<
  GatewayConfig,
  GatewayConfigShape
>() {}

/** Values given on the command line; absent means "not given", so lower layers may set them. */
export type FlagValues = Partial<Record<SettingKey | "serversConfig", string | number | boolean>>

export const expandHome = (path: string): string =>
  path === "~" ? homedir() : path.startsWith("~/") ? resolve(homedir(), path.slice(2)) : path

const serversConfigVariable = "MCP_SSH_SERVERS_CONFIG"

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
  Effect.tryPromise({
    try: () => readFile(path, "utf8"),
    catch: (error) =>
      new ConfigError({
        message: `${path}: cannot read the servers config: ${error instanceof Error ? error.message : String(error)}`,
      }),
  }).pipe(
    Effect.flatMap((text) =>
      Effect.try({
        try: (): unknown => JSON.parse(text),
        catch: (error) =>
          new ConfigError({
            message: `${path}: not valid JSON: ${error instanceof Error ? error.message : String(error)}`,
          }),
      }),
    ),
  )

export const loadGatewayConfig = (
  flags: FlagValues,
  environment: Readonly<Record<string, string | undefined>>,
) =>
  Effect.gen(function* () {
    const fromEnvPath = yield* Config.option(Config.string(serversConfigVariable)).pipe(Effect.orDie)
    const configPath = resolve(
      expandHome(
        typeof flags.serversConfig === "string"
          ? flags.serversConfig
          : Option.getOrElse(fromEnvPath, () => "servers_config.json"),
      ),
    )
    const file = yield* readJson(configPath).pipe(
      Effect.flatMap((json) =>
        Either.match(decodeServersConfig(json), {
          onLeft: (problems) =>
            Effect.fail(new ConfigError({ message: `${configPath}:\n${indent(problems)}` })),
          onRight: Effect.succeed,
        }),
      ),
    )

    const raw: Partial<Record<SettingKey, RawSetting>> = {}
    for (const [key, value] of Object.entries(file.gateway ?? {})) {
      raw[key as SettingKey] = { value, source: `${configPath}: gateway.${key}` }
    }
    Object.assign(raw, yield* readEnvironmentSettings)
    for (const key of settingKeys) {
      const value = flags[key]
      if (value !== undefined) raw[key] = { value, source: `--${flagName(key)}` }
    }
    const settings = yield* Either.match(decodeSettings(raw), {
      onLeft: (problems) =>
        Effect.fail(new ConfigError({ message: `invalid settings:\n${indent(problems)}` })),
      onRight: Effect.succeed,
    })

    const servers: Array<ChildServer> = []
    const problems: Array<string> = []
    for (const [name, spec] of Object.entries(file.mcpServers)) {
      if (spec.disabled === true) continue
      const env: Record<string, string> = {}
      for (const [variable, value] of Object.entries(spec.env ?? {})) {
        Either.match(expandEnvValue(value, environment), {
          onLeft: (problem) => problems.push(`mcpServers.${name}.env.${variable}: ${problem}`),
          onRight: (expanded) => {
            env[variable] = expanded
          },
        })
      }
      servers.push({
        name,
        command: spec.command,
        args: spec.args ?? [],
        env: childEnvironment(environment, env),
        cwd: spec.cwd === undefined ? undefined : resolve(dirname(configPath), expandHome(spec.cwd)),
      })
    }
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
    return { configPath, settings, servers } satisfies GatewayConfigShape
  })

const indent = (text: string): string =>
  text
    .split("\n")
    .map((line) => `  ${line}`)
    .join("\n")

export const layerGatewayConfig = (
  flags: FlagValues,
  environment: Readonly<Record<string, string | undefined>>,
) => Layer.effect(GatewayConfig, loadGatewayConfig(flags, environment))
