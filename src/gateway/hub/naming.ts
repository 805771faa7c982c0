/**
 * Names of tools and prompts in the merged server: `<server>__<name>` by default, or `<prefix>__<name>`,
 * or the bare name when the prefix is "". They keep to the rule LLM APIs put on tool names,
 * `^[a-zA-Z0-9_-]{1,64}$`: other characters become `_`, and a name that is too long keeps a readable
 * head and ends in a short hash of the whole, so the same input always gives the same name.
 */
import { createHash } from "node:crypto"

export const maxNameLength = 64
export const separator = "__"
const validName = /^[a-zA-Z0-9_-]{1,64}$/

const shortHash = (text: string): string => createHash("sha256").update(text).digest("hex").slice(0, 8)

export const exposedName = (server: string, prefix: string | undefined, name: string): string => {
  const head = prefix === undefined ? `${server}${separator}` : prefix === "" ? "" : `${prefix}${separator}`
  const full = `${head}${name}`
  if (validName.test(full)) return full
  // Changed or too long: the hash of the original keeps distinct names distinct.
  const suffix = `_${shortHash(full)}`
  return `${full.replace(/[^a-zA-Z0-9_-]/g, "_").slice(0, maxNameLength - suffix.length)}${suffix}`
}

export interface NamedEntry {
  readonly server: string
  readonly name: string
  readonly exposed: string
}

/** Pairs of entries from different places that would be exposed under the same name. */
export const findCollisions = (
  entries: ReadonlyArray<NamedEntry>,
): Array<readonly [NamedEntry, NamedEntry]> => {
  const seen = new Map<string, NamedEntry>()
  const collisions: Array<readonly [NamedEntry, NamedEntry]> = []
  for (const entry of entries) {
    const first = seen.get(entry.exposed)
    if (first === undefined) seen.set(entry.exposed, entry)
    else if (first.server !== entry.server || first.name !== entry.name) collisions.push([first, entry])
  }
  return collisions
}
