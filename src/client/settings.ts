/**
 * mcp-ssh-client's settings: the original client's flags and defaults, plus enrollment and server
 * selection, checked without IO.
 */
import { isLoopbackHost, urlHost } from "../shared/net.js"

export const clientDefaults = {
  host: "localhost",
  port: 8022,
  username: "mcp",
  /** The original client's key, under ~/.ssh; generated (ed25519) when missing. */
  clientKey: "~/.ssh/mcp_ssh_client_ed25519",
  knownHosts: "~/.ssh/known_hosts",
  keyServerPort: 8000,
  logLevel: "INFO",
  reconnectTimeout: "5m",
} as const

/** Environment variables for the secrets, so they need not show in `ps` or in the host's config. */
export const enrollTokenVariable = "MCP_SSH_ENROLL_TOKEN"
export const passphraseVariable = "MCP_SSH_CLIENT_PASSPHRASE"

export const clientLogLevels = ["TRACE", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL", "NONE"] as const
export type ClientLogLevel = (typeof clientLogLevels)[number]

export interface ClientSettings {
  readonly host: string
  readonly port: number
  readonly username: string
  /** Absolute path of the private key. */
  readonly clientKey: string
  readonly knownHosts: string
  readonly disableHostKeyChecking: boolean
  /** Base URL of the key API, when the client fetches the host key and enrolls through it. */
  readonly keyServerUrl: string | undefined
  readonly enrollToken: string | undefined
  readonly passphrase: string | undefined
  /** Servers of the gateway's config to use (the `exec` command); empty: all of them. */
  readonly servers: ReadonlyArray<string>
  /** Undefined: the level in effect (INFO, or what @effect/cli's own --log-level set). */
  readonly logLevel: ClientLogLevel | undefined
  /** Connect again when the gateway is lost (else exit, as the original client does). */
  readonly reconnect: boolean
  /** How long to keep trying after a loss before giving up. */
  readonly reconnectTimeoutMs: number
}

export type SettingsProblem = { readonly problem: string }
export const isProblem = (value: unknown): value is SettingsProblem =>
  typeof value === "object" && value !== null && "problem" in value

export const parseLogLevel = (text: string): ClientLogLevel | SettingsProblem => {
  const upper = text.trim().toUpperCase()
  const level = upper === "WARN" ? "WARNING" : upper === "FATAL" ? "CRITICAL" : upper
  return (clientLogLevels as ReadonlyArray<string>).includes(level)
    ? (level as ClientLogLevel)
    : { problem: `--log-level: '${text}' is not one of ${clientLogLevels.join(", ")}` }
}

export const parsePort = (flag: string, value: number): number | SettingsProblem =>
  Number.isInteger(value) && value >= 1 && value <= 65535
    ? value
    : { problem: `--${flag}: ${value} is not a port number (1-65535)` }

/** Server names, as the gateway's config allows them; given as `a,b` (or blanks between). */
const serverName = /^[A-Za-z0-9_-]{1,64}$/
export const parseServers = (text: string): ReadonlyArray<string> | SettingsProblem => {
  const names = text.split(/[\s,]+/).filter((name) => name !== "")
  const bad = names.find((name) => !serverName.test(name))
  return bad === undefined
    ? [...new Set(names)]
    : { problem: `--servers: '${bad}' is not a server name (letters, digits, _ and -)` }
}

/** The `exec` command that selects the servers, or undefined for a `shell` (all of them). */
export const sessionCommand = (servers: ReadonlyArray<string>): string | undefined =>
  servers.length === 0 ? undefined : servers.join(",")

/**
 * The key API's base URL: --key-server-url as given (https or http, nothing else), or the original
 * client's `http://<host>:<key-server-port>`. Never a guess that changes the scheme.
 */
export const keyServerBase = (
  explicit: string | undefined,
  host: string,
  keyServerPort: number,
): string | SettingsProblem => {
  if (explicit === undefined) return `http://${urlHost(host)}:${keyServerPort}/`
  let url: URL
  try {
    url = new URL(explicit)
  } catch {
    return { problem: `--key-server-url: '${explicit}' is not a URL` }
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    return { problem: `--key-server-url: the scheme must be https or http, not ${url.protocol.slice(0, -1)}` }
  }
  if (url.username !== "" || url.password !== "") {
    return { problem: "--key-server-url: credentials in the URL are not supported; use --enroll-token" }
  }
  url.search = ""
  url.hash = ""
  if (!url.pathname.endsWith("/")) url.pathname = `${url.pathname}/`
  return url.toString()
}

/** Is the key API reached in clear text over a network (where the host key could be swapped)? */
export const isPlainHttpOverNetwork = (base: string): boolean => {
  const url = new URL(base)
  return url.protocol === "http:" && !isLoopbackHost(url.hostname)
}

/** Where a redirect may lead: never from https down to http. */
export const redirectProblem = (from: string, to: string): string | undefined =>
  new URL(from).protocol === "https:" && new URL(to).protocol !== "https:"
    ? `refusing a redirect from https to ${new URL(to).protocol.slice(0, -1)} (${to})`
    : undefined

/** `300`, `90s`, `5m`, `1h`: a duration in milliseconds. */
export const parseDuration = (flag: string, text: string): number | SettingsProblem => {
  const match = /^(\d+)(s|m|h)?$/.exec(text.trim())
  const amount = Number(match?.[1])
  if (match === null || !Number.isSafeInteger(amount) || amount === 0)
    return { problem: `--${flag}: '${text}' is not a duration (seconds, or a number with s, m or h)` }
  const unit = match[2] === "h" ? 3_600_000 : match[2] === "m" ? 60_000 : 1_000
  return amount * unit
}
