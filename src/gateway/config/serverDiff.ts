/**
 * What a reload changes among the configured servers: which are new, which are gone, and which must
 * restart because anything a child is started with (or named by) differs. Pure.
 */
import type { ChildServer } from "./GatewayConfig.js"

export interface ServerDiff {
  readonly added: ReadonlyArray<ChildServer>
  readonly removed: ReadonlyArray<ChildServer>
  /** The new versions of servers whose config changed. */
  readonly changed: ReadonlyArray<ChildServer>
  readonly unchanged: ReadonlyArray<ChildServer>
}

const sameEntries = (a: Readonly<Record<string, string>>, b: Readonly<Record<string, string>>) => {
  const keys = Object.keys(a)
  return (
    keys.length === Object.keys(b).length && keys.every((key) => Object.hasOwn(b, key) && a[key] === b[key])
  )
}

/** Everything a child is started with, or that names what it offers, is the same. */
export const sameServer = (a: ChildServer, b: ChildServer): boolean =>
  a.name === b.name &&
  a.command === b.command &&
  a.args.length === b.args.length &&
  a.args.every((arg, index) => arg === b.args[index]) &&
  sameEntries(a.env, b.env) &&
  a.cwd === b.cwd &&
  a.prefix === b.prefix &&
  a.requestTimeout === b.requestTimeout &&
  a.scope === b.scope &&
  a.instances === b.instances &&
  a.idleTimeout === b.idleTimeout &&
  a.start === b.start &&
  a.spares === b.spares &&
  a.protocol === b.protocol

export const diffServers = (
  before: ReadonlyArray<ChildServer>,
  after: ReadonlyArray<ChildServer>,
): ServerDiff => {
  const previous = new Map(before.map((server) => [server.name, server]))
  const next = new Set(after.map((server) => server.name))
  const added: Array<ChildServer> = []
  const changed: Array<ChildServer> = []
  const unchanged: Array<ChildServer> = []
  for (const server of after) {
    const old = previous.get(server.name)
    if (old === undefined) added.push(server)
    else if (sameServer(old, server)) unchanged.push(old)
    else changed.push(server)
  }
  const removed = before.filter((server) => !next.has(server.name))
  return { added, removed, changed, unchanged }
}

export const isEmptyDiff = (diff: ServerDiff): boolean =>
  diff.added.length === 0 && diff.removed.length === 0 && diff.changed.length === 0

/** One line for the log and the reload answer: `added: a; removed: b; changed: c`, or `no change`. */
export const describeDiff = (diff: ServerDiff): string => {
  const parts = (
    [
      ["added", diff.added],
      ["removed", diff.removed],
      ["changed", diff.changed],
    ] as const
  ).flatMap(([label, servers]) =>
    servers.length === 0 ? [] : [`${label}: ${servers.map((server) => server.name).join(", ")}`],
  )
  return parts.length === 0 ? "no server changed" : parts.join("; ")
}
