/**
 * `mcp-ssh-server servers list`: the running gateway's child servers, through the admin API
 * (GET /admin/servers with the admin token), one line each.
 */
import { Command } from "@effect/cli"
import { Console, Duration, Effect } from "effect"
import { isObject } from "../../shared/jsonRpc.js"
import { adminOptions, askAdmin, fail } from "../config/reloadCommand.js"

const columns = [
  "server",
  "scope",
  "state",
  "pid",
  "identity",
  "sessions",
  "uptime",
  "restarts",
  "rss",
] as const

const cell = (value: unknown) => (value === null || value === undefined ? "-" : String(value))

/** The answer of GET /admin/servers as a table for the terminal; undefined when it is not one. */
export const formatServers = (body: unknown): Array<string> | undefined => {
  const children = isObject(body) && Array.isArray(body.children) ? body.children : undefined
  if (children === undefined) return undefined
  const rows = children
    .filter(isObject)
    .map((child) => [
      cell(child.server),
      cell(child.scope),
      cell(child.state),
      cell(child.pid),
      cell(child.identity),
      cell(child.sessions),
      typeof child.uptime_seconds === "number" ? `${child.uptime_seconds}s` : "-",
      cell(child.restarts),
      typeof child.rss_bytes === "number" ? `${Math.round(child.rss_bytes / 1024 / 1024)}MiB` : "-",
    ])
  const table = [[...columns], ...rows]
  const widths = columns.map((_, index) => Math.max(...table.map((row) => (row[index] ?? "").length)))
  return table.map((row) =>
    row
      .map((text, index) => text.padEnd(widths[index] ?? 0))
      .join("  ")
      .trimEnd(),
  )
}

const listCommand = Command.make("list", adminOptions, (given) =>
  Effect.gen(function* () {
    const { status, body } = yield* askAdmin(given, "GET", "/admin/servers", Duration.seconds(30))
    const lines = status === 200 ? formatServers(body) : undefined
    if (lines === undefined) {
      const error =
        isObject(body) && typeof body.error === "string" ? body.error : `the gateway answered ${status}`
      return yield* fail(error, "servers list")
    }
    return yield* Effect.forEach(lines, (line) => Console.log(line), { discard: true })
  }).pipe(Effect.catchTag("ConfigError", (error) => fail(error.message, "servers list"))),
).pipe(
  Command.withDescription(
    "list the running gateway's child servers: scope, pid, identity, sessions, uptime, restarts, RSS",
  ),
)

export const serversCommand = Command.make("servers").pipe(
  Command.withDescription("the running gateway's child servers (through the key API's admin endpoints)"),
  Command.withSubcommands([listCommand]),
)
