/**
 * mcp-ssh-client: the stdio MCP server an MCP host starts to reach a gateway. It checks the gateway's
 * host key, enrolls its key if asked, and relays MCP both ways, byte for byte. stdout carries MCP
 * only; everything else goes to stderr. Exit status: 0 when the host closes stdin, 1 when the
 * gateway is lost or refuses (one line on stderr says why), 2 on a command-line error.
 *
 * Modules are imported by sub-path, so the client loads only what it uses and starts fast.
 */
import { homedir } from "node:os"
import { resolve } from "node:path"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { checkTypedFlags, type FlagType, flagTypes, plainWhenNotTerminal } from "../shared/cliFlags.js"
import { expandHome } from "../shared/paths.js"
import { version } from "../shared/version.js"
import { ClientUsageError } from "./errors.js"
import { clientFromSettings, clientLogger } from "./layers.js"
import { serveHost } from "./reconnect.js"
import {
  type ClientSettings,
  clientDefaults,
  clientLogLevels,
  enrollTokenVariable,
  isProblem,
  keyServerBase,
  parseDuration,
  parseLogLevel,
  parsePort,
  parseServers,
  passphraseVariable,
} from "./settings.js"

/** The levels, and the aliases the gateway also takes. */
const logLevelChoices = [...clientLogLevels, "WARN", "FATAL"]

const text = (name: string, description: string) =>
  Options.text(name).pipe(Options.withDescription(description), Options.optional)

const options = {
  host: Options.text("host").pipe(
    Options.withDescription(`the gateway's host name or address (default: ${clientDefaults.host})`),
    Options.withDefault(clientDefaults.host),
  ),
  port: Options.integer("port").pipe(
    Options.withDescription(`the gateway's SSH port (default: ${clientDefaults.port})`),
    Options.withDefault(clientDefaults.port),
  ),
  username: Options.text("username").pipe(
    Options.withDescription(
      `SSH user name; the gateway identifies clients by key (default: ${clientDefaults.username})`,
    ),
    Options.withDefault(clientDefaults.username),
  ),
  clientKey: Options.text("client-key").pipe(
    Options.withDescription(
      `private key to log in with; generated (ed25519, 0600) if missing (default: ${clientDefaults.clientKey})`,
    ),
    Options.withDefault(clientDefaults.clientKey),
  ),
  knownHosts: Options.text("known-hosts").pipe(
    Options.withDescription(
      `OpenSSH known_hosts file that vouches for the gateway's host key (default: ${clientDefaults.knownHosts})`,
    ),
    Options.withDefault(clientDefaults.knownHosts),
  ),
  disableHostKeyChecking: Options.boolean("disable-host-key-checking").pipe(
    Options.withDescription(
      "accept any host key (dangerous: anyone in the middle can read and change MCP traffic)",
    ),
  ),
  useKeyServer: Options.boolean("use-key-server").pipe(
    Options.withDescription(
      "fetch the host key from the gateway's key API (pinning it in --known-hosts) and enroll the client key there if the gateway refuses it",
    ),
  ),
  keyServerPort: Options.integer("key-server-port").pipe(
    Options.withDescription(
      `port of the key API, at http://<host>:<port>/ (default: ${clientDefaults.keyServerPort})`,
    ),
    Options.withDefault(clientDefaults.keyServerPort),
  ),
  keyServerUrl: text(
    "key-server-url",
    "base URL of the key API (https or http; never downgraded), instead of http://<host>:<key-server-port>/; implies --use-key-server",
  ),
  enrollToken: text(
    "enroll-token",
    `enrollment token for POST /register; implies --use-key-server; env ${enrollTokenVariable}`,
  ),
  passphrase: text("passphrase", `passphrase of the client key; env ${passphraseVariable}`),
  servers: text("servers", "servers of the gateway to use, NAME[,NAME...] (default: all)"),
  noReconnect: Options.boolean("no-reconnect").pipe(
    Options.withDescription("exit when the connection to the gateway is lost, instead of connecting again"),
  ),
  reconnectTimeout: Options.text("reconnect-timeout").pipe(
    Options.withDescription(
      `how long to keep trying to reconnect after a loss before giving up: seconds, or with s, m or h (default: ${clientDefaults.reconnectTimeout})`,
    ),
    Options.withDefault(clientDefaults.reconnectTimeout),
  ),
  logLevel: Options.choice("log-level", logLevelChoices).pipe(
    Options.withDescription(`least severe level of the lines logged (default: ${clientDefaults.logLevel})`),
    Options.optional,
  ),
}

/** Flags whose values are checked before @effect/cli parses them, so a refusal names the flag. */
const typedFlags: Readonly<Record<string, FlagType>> = {
  ...Object.fromEntries(
    [
      "host",
      "username",
      "client-key",
      "known-hosts",
      "key-server-url",
      "enroll-token",
      "passphrase",
      "servers",
      "reconnect-timeout",
    ].map((flag) => [flag, flagTypes.text]),
  ),
  port: flagTypes.integer,
  "key-server-port": flagTypes.integer,
  "log-level": flagTypes.choice(logLevelChoices),
}

interface Flags {
  readonly host: string
  readonly port: number
  readonly username: string
  readonly clientKey: string
  readonly knownHosts: string
  readonly disableHostKeyChecking: boolean
  readonly useKeyServer: boolean
  readonly keyServerPort: number
  readonly keyServerUrl: Option.Option<string>
  readonly enrollToken: Option.Option<string>
  readonly passphrase: Option.Option<string>
  readonly servers: Option.Option<string>
  readonly logLevel: Option.Option<string>
  readonly noReconnect: boolean
  readonly reconnectTimeout: string
}

const orEnvironment = (value: Option.Option<string>, variable: string): string | undefined =>
  Option.getOrElse(value, () => {
    const fromEnvironment = process.env[variable]
    return fromEnvironment === undefined || fromEnvironment === "" ? undefined : fromEnvironment
  })

const settingsOf = (flags: Flags): Effect.Effect<ClientSettings, ClientUsageError> => {
  const usage = (problem: string) => Effect.fail(new ClientUsageError({ message: problem }))
  const port = parsePort("port", flags.port)
  if (isProblem(port)) return usage(port.problem)
  const keyServerPort = parsePort("key-server-port", flags.keyServerPort)
  if (isProblem(keyServerPort)) return usage(keyServerPort.problem)
  const logLevel = Option.isSome(flags.logLevel) ? parseLogLevel(flags.logLevel.value) : undefined
  if (isProblem(logLevel)) return usage(logLevel.problem)
  const servers = Option.isSome(flags.servers) ? parseServers(flags.servers.value) : []
  if (isProblem(servers)) return usage(servers.problem)
  const reconnectTimeoutMs = parseDuration("reconnect-timeout", flags.reconnectTimeout)
  if (isProblem(reconnectTimeoutMs)) return usage(reconnectTimeoutMs.problem)
  const host = flags.host.trim()
  if (host === "") return usage("--host: empty")
  const enrollToken = orEnvironment(flags.enrollToken, enrollTokenVariable)
  const explicitUrl = Option.getOrUndefined(flags.keyServerUrl)
  const useKeyServer = flags.useKeyServer || explicitUrl !== undefined || enrollToken !== undefined
  const base = useKeyServer ? keyServerBase(explicitUrl, host, keyServerPort) : undefined
  if (isProblem(base)) return usage(base.problem)
  const path = (given: string) => resolve(expandHome(given, homedir()))
  return Effect.succeed({
    host,
    port,
    username: flags.username,
    clientKey: path(flags.clientKey),
    knownHosts: path(flags.knownHosts),
    disableHostKeyChecking: flags.disableHostKeyChecking,
    keyServerUrl: base,
    enrollToken,
    passphrase: orEnvironment(flags.passphrase, passphraseVariable),
    servers,
    logLevel,
    reconnect: !flags.noReconnect,
    reconnectTimeoutMs,
  })
}

/** One line on stderr, and the exit status: 1 (refused, lost), or 2 for a command-line error. */
const fail = (message: string, code = 1) =>
  Effect.sync(() => {
    process.stderr.write(`mcp-ssh-client: ${message.replace(/\s*\n\s*/g, " ")}\n`)
    process.exitCode = code
  })

const runClient = (flags: Flags) =>
  Effect.gen(function* () {
    const settings = yield* settingsOf(flags)
    const outcome = yield* serveHost.pipe(
      Effect.provide(clientFromSettings(settings)),
      Effect.provide(clientLogger(settings.logLevel)),
    )
    if (outcome._tag === "GaveUp") {
      return yield* fail(
        `gave up reconnecting to the gateway after ${flags.reconnectTimeout}: ${outcome.reason}`,
      )
    }
    if (outcome._tag === "GatewayLost") {
      return yield* fail(
        `connection to the gateway lost: ${outcome.reason}${outcome.answered > 0 ? ` (${outcome.answered} pending request(s) answered with an error)` : ""}`,
      )
    }
  }).pipe(Effect.catchAll((error) => fail(error.message, error._tag === "ClientUsageError" ? 2 : 1)))

const command = Command.make("mcp-ssh-client", options, runClient).pipe(
  Command.withDescription(
    "Bridge an MCP host (stdio) to an mcp-ssh gateway over SSH. stdout carries MCP only; logs go to stderr.",
  ),
)

const cli = Command.run(command, { name: "mcp-ssh-client", version })

const cliEnvironment = Layer.mergeAll(NodeFileSystem.layer, NodePath.layer, NodeTerminal.layer)

/** Exit once what was written to stdout has left, so no MCP message is cut off. */
const exitWhenFlushed = (code: number) => {
  const until = Date.now() + 2000
  const attempt = () => {
    if (process.stdout.writableLength === 0 || Date.now() > until) process.exit(code)
    else setTimeout(attempt, 10)
  }
  attempt()
}

/** Run the client with the process's arguments; the process exits when it is done. */
export const main = (): void =>
  Effect.suspend(() => {
    const [runtime = "node", script = "client.js", ...args] = process.argv
    return Either.match(checkTypedFlags(args, typedFlags), {
      onLeft: (problem) => fail(problem, 2),
      onRight: (checked) => cli([runtime, script, ...checked]),
    })
  }).pipe(
    // @effect/cli has already printed what is wrong with the command line (on stderr).
    Effect.catchIf(ValidationError.isValidationError, (error) =>
      Effect.sync(() => {
        process.exitCode = ValidationError.isHelpRequested(error) ? 0 : 2
      }),
    ),
    plainWhenNotTerminal,
    Effect.provide(cliEnvironment),
    NodeRuntime.runMain({
      disablePrettyLogger: true,
      // Exit explicitly: the host may keep our stdin open after we are done with it.
      teardown: (exit) =>
        exitWhenFlushed(
          Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause) ? 1 : Number(process.exitCode ?? 0),
        ),
    }),
  )
