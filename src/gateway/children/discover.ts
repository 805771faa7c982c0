/**
 * Which MCP generation a child speaks, found out as the spec's stdio guidance says: `server/discover`
 * first (with the 2026-07-28 envelope); a result that offers 2026-07-28 makes it modern, any other
 * answer, silence within the probe's time, or an exit makes it legacy (initialize). A `-32022` that
 * lists only versions the gateway does not speak leaves the child out. Pure: the supervisor does the IO.
 */
import { isObject, type JsonObject, type JsonRpcResponse } from "../../shared/jsonRpc.js"
import { handshakeVersions } from "../hub/mcp.js"
import { metaKey, modernErrorCode, modernVersion, tasksExtension } from "../hub/modern.js"

/** The versions of the initialize handshake the gateway speaks. */
const legacyVersions: ReadonlyArray<string> = handshakeVersions

/** What the probe found. */
export type ProbeVerdict =
  | { readonly _tag: "Modern"; readonly discover: JsonObject }
  | { readonly _tag: "Legacy"; readonly why: string }
  | { readonly _tag: "Unsupported"; readonly offered: ReadonlyArray<string> }

/** How long a child may take to answer server/discover before it is taken for a legacy one. */
export const probeMillis = 5_000

/** The probe request, with the envelope a 2026-07-28 server checks. */
export const discoverRequest = (clientCapabilities: JsonObject, clientInfo: JsonObject) => ({
  jsonrpc: "2.0" as const,
  id: "discover",
  method: "server/discover",
  params: {
    _meta: {
      [metaKey.protocolVersion]: modernVersion,
      [metaKey.clientCapabilities]: clientCapabilities,
      [metaKey.clientInfo]: clientInfo,
    },
  },
})

const stringList = (value: unknown): ReadonlyArray<string> | undefined =>
  Array.isArray(value) && value.every((item) => typeof item === "string") ? value : undefined

/** Read the child's answer to server/discover. */
export const classifyDiscover = (response: JsonRpcResponse): ProbeVerdict => {
  const error = response.error
  if (error !== undefined) {
    if (error.code !== modernErrorCode.UnsupportedProtocolVersion)
      return { _tag: "Legacy", why: `it answered server/discover with ${error.code}` }
    const offered = isObject(error.data) ? stringList(error.data.supported) : undefined
    // A -32022 without a list says nothing about modern support: the SDKs take it for legacy.
    if (offered === undefined) return { _tag: "Legacy", why: "it refused server/discover (-32022)" }
    if (offered.includes(modernVersion)) return { _tag: "Legacy", why: "it refused its own version" }
    if (offered.some((version) => legacyVersions.includes(version)))
      return { _tag: "Legacy", why: `it offers ${offered.join(", ")}` }
    return { _tag: "Unsupported", offered }
  }
  const result = isObject(response.result) ? response.result : undefined
  const offered = stringList(result?.supportedVersions)
  if (result === undefined || offered === undefined)
    return { _tag: "Legacy", why: "its answer to server/discover is not a discover result" }
  if (offered.includes(modernVersion)) return { _tag: "Modern", discover: result }
  if (offered.some((version) => legacyVersions.includes(version)))
    return { _tag: "Legacy", why: `it offers ${offered.join(", ")}` }
  return { _tag: "Unsupported", offered }
}

/** The versions a child that refused initialize with -32022 offers, if it says. */
export const refusedVersions = (response: JsonRpcResponse): ReadonlyArray<string> | undefined => {
  const error = response.error
  if (error?.code !== modernErrorCode.UnsupportedProtocolVersion || !isObject(error.data)) return undefined
  return stringList(error.data.supported)
}

/**
 * The client capabilities the gateway can relay to a modern child (it turns the child's input
 * requests into requests to the client): sampling, elicitation and roots, as the client declared
 * them, and the tasks extension. An elicitation capability that names no mode means form (as in 2025-11-25); a 2026 server
 * checks for `form` before it asks.
 */
export const relayableCapabilities = (capabilities: JsonObject): JsonObject => {
  const relayed: Record<string, unknown> = {}
  if (capabilities.sampling !== undefined) relayed.sampling = capabilities.sampling
  if (capabilities.roots !== undefined) relayed.roots = capabilities.roots
  // The tasks extension only a 2026 client declares: a modern child may answer it with task handles,
  // which the gateway passes through (namespaced) to that client.
  const extensions = capabilities.extensions
  if (isObject(extensions) && extensions[tasksExtension] !== undefined)
    relayed.extensions = { [tasksExtension]: extensions[tasksExtension] }
  const elicitation = capabilities.elicitation
  if (isObject(elicitation)) {
    relayed.elicitation =
      elicitation.form === undefined && elicitation.url === undefined
        ? { ...elicitation, form: {} }
        : elicitation
  }
  return relayed
}

export const describeOffered = (offered: ReadonlyArray<string>) =>
  `it speaks only MCP ${offered.join(", ") || "(no version named)"}, and mcp-ssh speaks ${[modernVersion, ...legacyVersions].join(", ")}`
