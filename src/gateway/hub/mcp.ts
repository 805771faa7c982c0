/** MCP facts the gateway needs, without IO: versions, capabilities, the lists it merges. */
import { isObject, type JsonObject } from "../../shared/jsonRpc.js"

/** Versions of the initialize handshake the gateway speaks, newest first. */
export const handshakeVersions = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"] as const
export const latestHandshakeVersion = handshakeVersions[0]

/** The client's version when the gateway speaks it, else the newest it does (the client decides). */
export const negotiateVersion = (requested: unknown): string =>
  typeof requested === "string" && (handshakeVersions as ReadonlyArray<string>).includes(requested)
    ? requested
    : latestHandshakeVersion

const mergeObjects = (left: JsonObject, right: JsonObject): JsonObject => {
  const out: Record<string, unknown> = { ...left }
  for (const [key, value] of Object.entries(right)) {
    const existing = out[key]
    out[key] = isObject(existing) && isObject(value) ? mergeObjects(existing, value) : (existing ?? value)
  }
  return out
}

/**
 * The union of the children's capabilities, and only those. A merged list changes whenever a child
 * comes or goes, so every list capability the gateway declares says listChanged.
 */
export const mergeCapabilities = (all: ReadonlyArray<JsonObject>): JsonObject => {
  const merged = all.reduce<JsonObject>((acc, next) => mergeObjects(acc, next), {})
  const out: Record<string, unknown> = { ...merged }
  for (const list of ["tools", "prompts", "resources"]) {
    const capability = out[list]
    if (isObject(capability)) out[list] = { ...capability, listChanged: true }
  }
  const resources = out.resources
  if (isObject(resources)) {
    const subscribe = all.some((caps) => isObject(caps.resources) && caps.resources.subscribe === true)
    out.resources = { ...resources, subscribe }
  }
  return out
}

/** Each child's instructions under a heading with its name, so the model knows whose they are. */
export const mergeInstructions = (
  entries: ReadonlyArray<{ readonly server: string; readonly instructions: string | undefined }>,
): string | undefined => {
  const parts = entries
    .filter((entry) => entry.instructions !== undefined && entry.instructions.trim() !== "")
    .map((entry) => `## ${entry.server}\n\n${entry.instructions?.trim()}`)
  return parts.length === 0 ? undefined : parts.join("\n\n")
}

/** The paginated lists the gateway merges, with the capability a child needs to have one. */
export const mergedLists = {
  "tools/list": { items: "tools", capability: "tools", named: "tool" },
  "prompts/list": { items: "prompts", capability: "prompts", named: "prompt" },
  "resources/list": { items: "resources", capability: "resources", named: undefined },
  "resources/templates/list": { items: "resourceTemplates", capability: "resources", named: undefined },
} as const
export type MergedListMethod = keyof typeof mergedLists

export const isMergedListMethod = (method: string): method is MergedListMethod => method in mergedLists

/** Which list-changed notification a capability's list sends. */
export const listChangedMethod = {
  tools: "notifications/tools/list_changed",
  prompts: "notifications/prompts/list_changed",
  resources: "notifications/resources/list_changed",
} as const
