/**
 * MCP 2026-07-28 ("modern"), as the gateway speaks it to clients: no initialize handshake, an envelope
 * of reserved `_meta` keys on every request, `resultType` and cache hints on results, `input_required`
 * instead of server-to-client requests, and change notifications only through `subscriptions/listen`.
 * Pure helpers; the session logic is in the Hub.
 */
import {
  ErrorCode,
  isObject,
  type JsonObject,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../../shared/jsonRpc.js"

export const modernVersion = "2026-07-28"
export const modernVersions: ReadonlyArray<string> = [modernVersion]

export const metaKey = {
  protocolVersion: "io.modelcontextprotocol/protocolVersion",
  clientCapabilities: "io.modelcontextprotocol/clientCapabilities",
  clientInfo: "io.modelcontextprotocol/clientInfo",
  logLevel: "io.modelcontextprotocol/logLevel",
  serverInfo: "io.modelcontextprotocol/serverInfo",
  subscriptionId: "io.modelcontextprotocol/subscriptionId",
} as const

export const modernErrorCode = {
  MissingRequiredClientCapability: -32021,
  UnsupportedProtocolVersion: -32022,
} as const

export interface Envelope {
  readonly protocolVersion: string
  readonly clientCapabilities: JsonObject
  readonly clientInfo: JsonObject | undefined
  readonly logLevel: string | undefined
}

/** The envelope of a request, if it has one (its protocolVersion key marks a modern request). */
export const readEnvelope = (
  params: JsonObject | undefined,
): Envelope | "none" | { readonly problem: string } => {
  const meta = params?._meta
  if (!isObject(meta) || meta[metaKey.protocolVersion] === undefined) return "none"
  const version = meta[metaKey.protocolVersion]
  if (typeof version !== "string") return { problem: `${metaKey.protocolVersion} must be a string` }
  const capabilities = meta[metaKey.clientCapabilities]
  if (!isObject(capabilities))
    return { problem: `${metaKey.clientCapabilities} is required and must be an object` }
  const clientInfo = meta[metaKey.clientInfo]
  const logLevel = meta[metaKey.logLevel]
  return {
    protocolVersion: version,
    clientCapabilities: capabilities,
    clientInfo: isObject(clientInfo) ? clientInfo : undefined,
    logLevel: typeof logLevel === "string" ? logLevel : undefined,
  }
}

const reservedMetaKeys: ReadonlyArray<string> = [
  metaKey.protocolVersion,
  metaKey.clientCapabilities,
  metaKey.clientInfo,
  metaKey.logLevel,
]

/** The request's params without the envelope, for a child that speaks the 2025 protocol. */
export const withoutEnvelope = (params: JsonObject | undefined): JsonObject | undefined => {
  const meta = params?._meta
  if (params === undefined || !isObject(meta)) return params
  const rest = Object.fromEntries(Object.entries(meta).filter(([key]) => !reservedMetaKeys.includes(key)))
  const { _meta: _dropped, ...others } = params
  return Object.keys(rest).length === 0 ? others : { ...others, _meta: rest }
}

/** Results whose 2026 form must carry cache hints. */
const cacheableMethods: ReadonlyArray<string> = [
  "tools/list",
  "prompts/list",
  "resources/list",
  "resources/templates/list",
  "resources/read",
]

/** Methods whose result may be `input_required`. */
export const interactiveMethods: ReadonlyArray<string> = ["tools/call", "prompts/get", "resources/read"]

/** Requests that do not exist in 2026 (tasks/get and tasks/cancel do, in the tasks extension). */
export const legacyOnlyMethods: ReadonlyArray<string> = [
  "ping",
  "logging/setLevel",
  "resources/subscribe",
  "resources/unsubscribe",
  "tasks/list",
  "tasks/result",
]

const dropTaskExecution = (tools: unknown): unknown =>
  Array.isArray(tools)
    ? tools.map((tool) => {
        if (!isObject(tool) || tool.execution === undefined) return tool
        const { execution: _execution, ...rest } = tool
        return rest
      })
    : tools

/**
 * A 2025 answer dressed for a 2026 client: `resultType`, cache hints where required (never cached:
 * the merged lists change with the children), serverInfo in `_meta`; `-32002` becomes `-32602`.
 */
export const toModernResponse = (
  method: string,
  response: JsonRpcResponse,
  serverInfo: JsonObject,
): JsonRpcResponse => {
  const error = response.error
  if (error !== undefined) {
    return error.code === -32002
      ? { ...response, error: { ...error, code: ErrorCode.InvalidParams, data: error.data ?? {} } }
      : response
  }
  const result = isObject(response.result) ? response.result : {}
  const meta = isObject(result._meta) ? result._meta : {}
  const dressed: Record<string, unknown> = {
    ...result,
    resultType: typeof result.resultType === "string" ? result.resultType : "complete",
    _meta: { ...meta, [metaKey.serverInfo]: serverInfo },
  }
  if (cacheableMethods.includes(method)) {
    dressed.ttlMs = typeof result.ttlMs === "number" ? result.ttlMs : 0
    dressed.cacheScope = result.cacheScope === "public" ? "public" : "private"
  }
  if (method === "tools/list") dressed.tools = dropTaskExecution(result.tools)
  return { ...response, result: dressed }
}

/** What `server/discover` says of the merged server. */
export const discoverResult = (
  capabilities: JsonObject,
  instructions: string | undefined,
  serverInfo: JsonObject,
): JsonObject => {
  const { tasks: _tasks, ...modernCapabilities } = capabilities
  return {
    resultType: "complete",
    supportedVersions: [...modernVersions],
    capabilities: modernCapabilities,
    ...(instructions === undefined ? {} : { instructions }),
    ttlMs: 0,
    cacheScope: "private",
    _meta: { [metaKey.serverInfo]: serverInfo },
  }
}

/** The change notifications a `subscriptions/listen` asks for. */
export interface ListenFilter {
  readonly toolsListChanged: boolean
  readonly promptsListChanged: boolean
  readonly resourcesListChanged: boolean
  readonly resourceSubscriptions: ReadonlyArray<string>
}

export const readListenFilter = (params: JsonObject | undefined): ListenFilter | undefined => {
  const notifications = params?.notifications
  if (!isObject(notifications)) return undefined
  const uris = notifications.resourceSubscriptions
  if (uris !== undefined && !(Array.isArray(uris) && uris.every((uri) => typeof uri === "string")))
    return undefined
  return {
    toolsListChanged: notifications.toolsListChanged === true,
    promptsListChanged: notifications.promptsListChanged === true,
    resourcesListChanged: notifications.resourcesListChanged === true,
    resourceSubscriptions: (uris as ReadonlyArray<string> | undefined) ?? [],
  }
}

/** The part of a filter the merged server can honour, given its capabilities. */
export const honouredFilter = (filter: ListenFilter, capabilities: JsonObject): ListenFilter => {
  const listChanged = (name: string) => {
    const capability = capabilities[name]
    return isObject(capability) && capability.listChanged === true
  }
  const resources = capabilities.resources
  return {
    toolsListChanged: filter.toolsListChanged && listChanged("tools"),
    promptsListChanged: filter.promptsListChanged && listChanged("prompts"),
    resourcesListChanged: filter.resourcesListChanged && listChanged("resources"),
    resourceSubscriptions:
      isObject(resources) && resources.subscribe === true ? filter.resourceSubscriptions : [],
  }
}

/** Does a change notification belong on a listen with this filter? */
export const filterWants = (
  filter: ListenFilter,
  method: string,
  params: JsonObject | undefined,
): boolean => {
  switch (method) {
    case "notifications/tools/list_changed":
      return filter.toolsListChanged
    case "notifications/prompts/list_changed":
      return filter.promptsListChanged
    case "notifications/resources/list_changed":
      return filter.resourcesListChanged
    case "notifications/resources/updated":
      return typeof params?.uri === "string" && filter.resourceSubscriptions.includes(params.uri)
    default:
      return false
  }
}

export const unsupportedVersion = (requested: string) => ({
  code: modernErrorCode.UnsupportedProtocolVersion,
  message: `Unsupported protocol version: ${requested}`,
  data: { supported: [...modernVersions], requested },
})

/**
 * A modern child's requestState as the client sees it: prefixed with the server's name, so a retry
 * is checked to reach the child that asked (a requestState is opaque to the client either way).
 */
export const namespacedState = (server: string, state: string): string => `${server}:${state}`

/** The child's own requestState from the client's, or undefined when it is not this server's. */
export const childState = (server: string, state: string): string | undefined =>
  state.startsWith(`${server}:`) ? state.slice(server.length + 1) : undefined

/**
 * The `_meta` key by which the Hub asks a modern child's connection to give the answer back as the
 * child gave it (a 2026 client's call: input_required, a task handle, resultType), instead of asking
 * the client itself and dressing the answer as a 2025 child's. Never leaves the gateway.
 */
export const answerAsGiven = "mcp-ssh/answerAsGiven"

/**
 * A 2026 client's interactive request on its way to a modern child: marked so the child's
 * input_required comes back as it is, its requestState (if any) the child's own again. A string
 * says why it cannot go: the requestState is not one this server gave.
 */
export const toModernChild = (server: string, request: JsonRpcRequest): JsonRpcRequest | string => {
  const params = request.params ?? {}
  const meta = isObject(params._meta) ? params._meta : {}
  const state = params.requestState
  if (state !== undefined && (typeof state !== "string" || childState(server, state) === undefined))
    return `Invalid params: requestState was not given by server '${server}'`
  return {
    ...request,
    params: {
      ...params,
      ...(typeof state === "string" ? { requestState: childState(server, state) } : {}),
      _meta: { ...meta, [answerAsGiven]: true },
    },
  }
}

/**
 * A modern child's answer to a 2026 client: an input_required result's requestState and the task ids
 * of the tasks extension (a task handle, a task's state) namespaced by server.
 */
export const fromModernChild = (server: string, response: JsonRpcResponse): JsonRpcResponse => {
  const result = response.result
  if (!isObject(result)) return response
  const namespaced: Record<string, unknown> = { ...result }
  if (result.resultType === "input_required" && typeof result.requestState === "string")
    namespaced.requestState = namespacedState(server, result.requestState)
  if (typeof result.taskId === "string") namespaced.taskId = namespacedState(server, result.taskId)
  const task = result.task
  if (isObject(task) && typeof task.taskId === "string")
    namespaced.task = { ...task, taskId: namespacedState(server, task.taskId) }
  return { ...response, result: namespaced }
}

/** The tasks extension of 2026-07-28: its identifier, and its requests, which name a task by id. */
export const tasksExtension = "io.modelcontextprotocol/tasks"
export const taskMethods: ReadonlyArray<string> = ["tasks/get", "tasks/update", "tasks/cancel"]

/**
 * A 2026 client's task request on its way to the modern child whose task it names: the child's own
 * task id, and the mark to answer as given. A string says why it cannot go.
 */
export const toTaskOwner = (
  servers: ReadonlyArray<string>,
  request: JsonRpcRequest,
): { readonly server: string; readonly request: JsonRpcRequest } | string => {
  const taskId = request.params?.taskId
  if (typeof taskId !== "string") return "Invalid params: taskId is missing"
  const server = servers.find((name) => childState(name, taskId) !== undefined)
  const own = server === undefined ? undefined : childState(server, taskId)
  if (server === undefined || own === undefined) return `Invalid params: unknown task ${taskId}`
  const params = request.params ?? {}
  const meta = isObject(params._meta) ? params._meta : {}
  return {
    server,
    request: { ...request, params: { ...params, taskId: own, _meta: { ...meta, [answerAsGiven]: true } } },
  }
}

/**
 * The `_meta` key by which the multiplexer tells a shared modern child's connection whose call a
 * request is; the connection puts it on the input requests it makes of that call, so they go to the
 * session that made it. Never leaves the gateway.
 */
export const callOwner = "mcp-ssh/callOwner"
