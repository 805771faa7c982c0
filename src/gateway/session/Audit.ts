/**
 * One audit line per call: who (key fingerprint, identity and groups; for a certificate its serial and
 * CA), which server, method and target, from which address, how long, and the outcome; never arguments
 * or results. Written
 * synchronously in logfmt like the rest of the log, as it sits on every call's path and a fiber per
 * line would cost more than the call.
 */
import { Context, Effect, Layer } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.js"
import type { ClientIdentity } from "../hub/types.js"

export interface AuditEntry {
  readonly client: ClientIdentity
  readonly server: string
  readonly method: string
  readonly target: string | undefined
  readonly millis: number
  readonly outcome: string
}

export class Audit extends Context.Tag("mcp-ssh/Audit")<
  Audit,
  { readonly record: (entry: AuditEntry) => void }
>() {}

/** logfmt value: bare when it can be, quoted and escaped otherwise. */
export const logfmtValue = (value: string): string =>
  /^[^\s="\\]+$/.test(value) ? value : JSON.stringify(value)

/** The who of a line, made once per session's identity rather than once per call. */
const whoCache = new WeakMap<ClientIdentity, string>()
const whoOf = (client: ClientIdentity): string => {
  const cached = whoCache.get(client)
  if (cached !== undefined) return cached
  const who = [
    `client=${logfmtValue(client.fingerprint)}`,
    `identity=${logfmtValue(client.identity)}`,
    `groups=${logfmtValue(client.groups.join(","))}`,
    ...(client.certificate === undefined
      ? []
      : [`cert_serial=${client.certificate.serial}`, `ca=${logfmtValue(client.certificate.caFingerprint)}`]),
  ].join(" ")
  whoCache.set(client, who)
  return who
}

export const formatAudit = (entry: AuditEntry, now: Date): string =>
  [
    `timestamp=${now.toISOString()}`,
    "level=INFO",
    "message=call",
    "audit=true",
    whoOf(entry.client),
    `server=${logfmtValue(entry.server)}`,
    `method=${logfmtValue(entry.method)}`,
    ...(entry.target === undefined ? [] : [`target=${logfmtValue(entry.target)}`]),
    // The client's address:port; behind a trusted proxy, the one its PROXY header named.
    `remote=${logfmtValue(entry.client.address)}`,
    `ms=${entry.millis}`,
    `outcome=${logfmtValue(entry.outcome)}`,
  ].join(" ")

/** The same line for --log-format json, in the shape of the gateway's other JSON log lines. */
export const formatAuditJson = (entry: AuditEntry, now: Date): string =>
  JSON.stringify({
    message: "call",
    logLevel: "INFO",
    timestamp: now.toISOString(),
    annotations: {
      audit: true,
      client: entry.client.fingerprint,
      identity: entry.client.identity,
      groups: entry.client.groups.join(","),
      ...(entry.client.certificate === undefined
        ? {}
        : { cert_serial: entry.client.certificate.serial, ca: entry.client.certificate.caFingerprint }),
      server: entry.server,
      method: entry.method,
      ...(entry.target === undefined ? {} : { target: entry.target }),
      remote: entry.client.address,
      ms: entry.millis,
      outcome: entry.outcome,
    },
  })

const quietLevels: ReadonlyArray<string> = ["WARNING", "WARN", "ERROR", "CRITICAL", "FATAL", "NONE"]

/**
 * Lines are written after the current turn of the event loop, all at once: a write is a system call,
 * and the answer to the client should not wait behind the log line about it. `close` writes what is
 * still buffered and makes later lines go out at once: a stopping gateway may not get another turn.
 */
const bufferedWriter = (write: (text: string) => void) => {
  let buffered: Array<string> = []
  let closed = false
  const flush = () => {
    if (buffered.length === 0) return
    const lines = buffered
    buffered = []
    write(lines.join(""))
  }
  return {
    writeLine: (line: string) => {
      if (closed) return write(`${line}\n`)
      if (buffered.length === 0) setImmediate(flush)
      buffered.push(`${line}\n`)
    },
    close: () => {
      closed = true
      flush()
    },
  }
}

/**
 * Scoped so the gateway's stop flushes the last lines: it is built before the sessions that record to
 * it, so its finalizer runs after theirs, once the calls they ended have been recorded.
 */
export const AuditLive = Layer.scoped(
  Audit,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    if (quietLevels.includes(settings.logLevel)) return { record: () => {} }
    const writer = yield* Effect.acquireRelease(
      Effect.sync(() => bufferedWriter((text) => process.stderr.write(text))),
      (opened) => Effect.sync(opened.close),
    )
    const format = settings.logFormat === "json" ? formatAuditJson : formatAudit
    return { record: (entry: AuditEntry) => writer.writeLine(format(entry, new Date())) }
  }),
)
