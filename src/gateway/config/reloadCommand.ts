/**
 * `mcp-ssh-server reload`: ask the running gateway to reload servers_config.json, through the admin
 * API (POST /admin/reload with the admin token), and print what changed or why nothing did. The
 * address and the token come from the same flags, variables and config file the gateway reads.
 */
import { Command, Options } from "@effect/cli"
import { Console, Duration, Effect, Option } from "effect"
import { errorText } from "../../shared/errorText.js"
import { isObject } from "../../shared/jsonRpc.js"
import { urlHost } from "../../shared/net.js"
import { ConfigError } from "../errors.js"
import { loadSecret } from "../keys/files.js"
import { type FlagValues, loadStoreConfig } from "./GatewayConfig.js"

export const adminOptions = {
  serversConfig: Options.text("servers-config").pipe(
    Options.withDescription(
      "the gateway's servers config, for its `gateway` settings (default: servers_config.json)",
    ),
    Options.optional,
  ),
  keyServerHost: Options.text("key-server-host").pipe(
    Options.withDescription("host of the gateway's key API (default: as the gateway's settings say)"),
    Options.optional,
  ),
  keyServerPort: Options.integer("key-server-port").pipe(
    Options.withDescription("port of the gateway's key API (default: as the gateway's settings say)"),
    Options.optional,
  ),
  adminTokenFile: Options.text("admin-token-file").pipe(
    Options.withDescription(
      "file holding the admin token; env MCP_SSH_ADMIN_TOKEN_FILE or MCP_SSH_ADMIN_TOKEN",
    ),
    Options.optional,
  ),
}

/** Reloading probes new servers, which may take their whole startup timeout. */
const requestTimeout = Duration.minutes(2)

const strings = (value: unknown): ReadonlyArray<string> =>
  Array.isArray(value) ? value.filter((item): item is string => typeof item === "string") : []

/** What the gateway answered, as lines for the terminal; `ok` is false when nothing was applied. */
export const describeReloadAnswer = (
  status: number,
  body: unknown,
): { ok: boolean; lines: Array<string> } => {
  const answer = isObject(body) ? body : {}
  if (status === 200) {
    const parts = (["added", "removed", "changed"] as const).flatMap((key) => {
      const names = strings(answer[key])
      return names.length === 0 ? [] : [`${key}: ${names.join(", ")}`]
    })
    if (answer.access_changed === true) parts.push("the access policy changed")
    const ignored = strings(answer.ignored_settings)
    return {
      ok: true,
      lines: [
        `reloaded: ${parts.length === 0 ? "no server changed" : parts.join("; ")}`,
        ...(ignored.length === 0
          ? []
          : [`changed settings that take effect at the next start: ${ignored.join(", ")}`]),
      ],
    }
  }
  const error = typeof answer.error === "string" ? answer.error : `the gateway answered ${status}`
  return { ok: false, lines: [error, ...strings(answer.errors).map((problem) => `  ${problem}`)] }
}

export const fail = (message: string, command = "reload") =>
  Console.error(`mcp-ssh-server ${command}: ${message}`).pipe(
    Effect.zipRight(
      Effect.sync(() => {
        process.exitCode = 1
      }),
    ),
  )

/** Ask the running gateway's admin API: the address and token as the gateway's own settings say. */
export const askAdmin = (
  given: {
    readonly [K in keyof typeof adminOptions]: Option.Option<K extends "keyServerPort" ? number : string>
  },
  method: "GET" | "POST",
  path: string,
  timeout: Duration.Duration,
) =>
  Effect.gen(function* () {
    const flags: FlagValues = {}
    if (Option.isSome(given.serversConfig)) flags.serversConfig = given.serversConfig.value
    if (Option.isSome(given.keyServerHost)) flags.keyServerHost = given.keyServerHost.value
    if (Option.isSome(given.keyServerPort)) flags.keyServerPort = given.keyServerPort.value
    if (Option.isSome(given.adminTokenFile)) flags.adminTokenFile = given.adminTokenFile.value
    const { settings } = yield* loadStoreConfig(flags)
    const token = yield* loadSecret({
      value: settings.adminToken,
      file: settings.adminTokenFile,
      flag: "admin-token",
    })
    if (token === undefined) {
      return yield* new ConfigError({
        message: "no admin token: give --admin-token-file (or MCP_SSH_ADMIN_TOKEN_FILE, MCP_SSH_ADMIN_TOKEN)",
      })
    }
    const url = `http://${urlHost(settings.keyServerHost)}:${settings.keyServerPort}${path}`
    return yield* Effect.tryPromise({
      try: async (signal) => {
        const response = await fetch(url, {
          method,
          headers: { authorization: `Bearer ${token}` },
          signal,
        })
        const text = await response.text()
        let parsed: unknown
        try {
          parsed = JSON.parse(text)
        } catch {
          parsed = { error: text.slice(0, 200) }
        }
        return { status: response.status, body: parsed }
      },
      catch: (error) =>
        new ConfigError({ message: `cannot reach the gateway's key API at ${url}: ${errorText(error)}` }),
    }).pipe(
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () =>
          new ConfigError({ message: `${url} did not answer within ${Duration.format(timeout)}` }),
      }),
    )
  })

export const reloadCommand = Command.make("reload", adminOptions, (given) =>
  Effect.gen(function* () {
    const { status, body } = yield* askAdmin(given, "POST", "/admin/reload", requestTimeout)
    const answer = describeReloadAnswer(status, body)
    if (answer.ok) return yield* Effect.forEach(answer.lines, (line) => Console.log(line), { discard: true })
    return yield* fail(answer.lines.join("\n"))
  }).pipe(Effect.catchTag("ConfigError", (error) => fail(error.message))),
).pipe(
  Command.withDescription(
    "ask the running gateway to reload servers_config.json (through the key API's POST /admin/reload)",
  ),
)
