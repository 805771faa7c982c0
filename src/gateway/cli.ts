/** mcp-ssh-server: serve the MCP servers of servers_config.json to SSH clients. */
import { Command, Options } from "@effect/cli"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Console, Effect, Either, Option } from "effect"
import { checkTypedFlags, flagTypes, plainWhenNotTerminal, typedOption } from "../shared/cliFlags.js"
import { version } from "../shared/version.js"
import { serversCommand } from "./children/serversCommand.js"
import { type FlagValues, loadGatewayConfig } from "./config/GatewayConfig.js"
import { reloadCommand } from "./config/reloadCommand.js"
import {
  envName,
  flagName,
  flagType,
  gatewaySettings,
  type SettingKey,
  settingKeys,
} from "./config/settings.js"
import { keysCommand, tokensCommand } from "./keys/adminCommands.js"
import { KeyStore } from "./keys/KeyStore.js"
import { HostKey } from "./ssh/HostKey.js"

const describe = (key: SettingKey): string => {
  const spec = gatewaySettings[key]
  const fallback = spec.default === undefined ? "" : ` (default: ${String(spec.default)})`
  return `${spec.doc}${fallback}; env ${envName(key)}`
}

/**
 * One option per setting, typed as the setting is (integers, numbers, choices), so --help says what
 * each takes; "not given" stays distinguishable so env and the JSON file can fill it. The settings'
 * own rules (a port's range, a count's minimum) are checked with the other sources', naming the flag.
 */
const settingOptions = Object.fromEntries(
  settingKeys.map((key) => {
    const type = flagType(key)
    return [
      key,
      type._tag === "boolean"
        ? Options.boolean(flagName(key)).pipe(
            Options.withDescription(describe(key)),
            Options.map((on) => (on ? Option.some<FlagValue>(true) : Option.none())),
          )
        : typedOption(flagName(key), type).pipe(
            Options.withDescription(describe(key)),
            Options.optional,
            Options.map(Option.map((value): FlagValue => value)),
          ),
    ]
  }),
) as Record<SettingKey, Options.Options<Option.Option<FlagValue>>>

type FlagValue = string | number | boolean

/** Flags @effect/cli checks the type of, so that a wrong value is refused naming the flag. */
const typedFlags = {
  ...Object.fromEntries(settingKeys.map((key) => [flagName(key), flagType(key)])),
  "servers-config": flagTypes.text,
}

const serversConfigOption = Options.text("servers-config").pipe(
  Options.withDescription("servers config JSON (default: servers_config.json); env MCP_SSH_SERVERS_CONFIG"),
  Options.optional,
)

const command = Command.make(
  "mcp-ssh-server",
  { settings: Options.all(settingOptions), serversConfig: serversConfigOption },
  ({ settings, serversConfig }) => {
    const flags: FlagValues = {}
    for (const key of settingKeys) {
      const value = settings[key]
      if (Option.isSome(value)) flags[key] = value.value
    }
    if (Option.isSome(serversConfig)) flags.serversConfig = serversConfig.value
    return runGateway(flags)
  },
)

const runGateway = (flags: FlagValues) =>
  Effect.gen(function* () {
    const config = yield* loadGatewayConfig(flags, process.env)
    // Loaded here rather than at the top, so `keys` and `tokens` start without the gateway's modules.
    const { gatewayFromConfig, loggerLayer } = yield* Effect.promise(() => import("./layers.js"))
    const { SshServer } = yield* Effect.promise(() => import("./ssh/SshServer.js"))
    const { drainOnSigterm } = yield* Effect.promise(() => import("./ops/shutdown.js"))
    const app = gatewayFromConfig(config, loadGatewayConfig(flags, process.env))
    yield* Effect.gen(function* () {
      const { address } = yield* SshServer
      const hostKey = yield* HostKey
      const keyStore = yield* KeyStore
      yield* Effect.logInfo(
        `ready: ${config.servers.length} server(s) from ${config.configPath}; host key ${hostKey.fingerprint}; ` +
          `clients from ${keyStore.path}; connect with: ssh -T -p ${address.port} -i <your key> mcp@${address.address}`,
      )
      // SIGTERM from here on drains before the layers below close (ops/shutdown.ts).
      yield* drainOnSigterm
      return yield* Effect.never
    }).pipe(
      Effect.scoped,
      Effect.provide(app),
      Effect.provide(loggerLayer(config.settings.logLevel, config.settings.logFormat)),
    )
  }).pipe(
    Effect.catchTags({
      ConfigError: (error) => fail(`configuration error: ${error.message}`),
      HostKeyError: (error) => fail(error.message),
      ListenError: (error) => fail(error.message),
      // At start the key database must answer: an empty snapshot would say nothing about who may log in.
      StoreUnavailable: (error) => fail(`${error.message}; not starting without the keys`),
      StoreError: (error) => fail(`key store: ${error.message}`),
    }),
  )

const fail = (message: string) =>
  Console.error(`mcp-ssh-server: ${message}`).pipe(
    Effect.zipRight(
      Effect.sync(() => {
        process.exitCode = 1
      }),
    ),
  )

// Without a subcommand the root command runs the gateway; `keys` and `tokens` administer offline;
// `reload` asks a running gateway to reload; `servers list` lists its children.
const cli = Command.run(
  command.pipe(Command.withSubcommands([keysCommand, tokensCommand, reloadCommand, serversCommand])),
  {
    name: "mcp-ssh-server",
    version,
  },
)

// The gateway logs logfmt or JSON to stderr (loggerLayer); runMain's default pretty logger would repeat every
// line on stdout.
/** Run the gateway (or an admin subcommand) with the process's arguments. */
export const main = (): void =>
  Effect.suspend(() => {
    const [runtime = "node", script = "main.js", ...args] = process.argv
    return Either.match(checkTypedFlags(args, typedFlags), {
      onLeft: (problem) => fail(`configuration error: ${problem}`),
      onRight: (checked) => cli([runtime, script, ...checked]),
    })
  }).pipe(
    plainWhenNotTerminal,
    Effect.provide(NodeContext.layer),
    NodeRuntime.runMain({ disablePrettyLogger: true }),
  )
