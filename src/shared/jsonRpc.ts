/**
 * JSON-RPC 2.0 as MCP uses it: classification of incoming lines and error values.
 * Messages are kept as the parsed objects so fields the gateway does not know pass through untouched.
 */

export type JsonRpcId = string | number
export type JsonObject = { readonly [key: string]: unknown }

export interface JsonRpcRequest extends JsonObject {
  readonly jsonrpc: "2.0"
  readonly id: JsonRpcId
  readonly method: string
  readonly params?: JsonObject
}

export interface JsonRpcNotification extends JsonObject {
  readonly jsonrpc: "2.0"
  readonly method: string
  readonly params?: JsonObject
}

export interface JsonRpcErrorObject {
  readonly code: number
  readonly message: string
  readonly data?: unknown
}

export interface JsonRpcResponse extends JsonObject {
  readonly jsonrpc: "2.0"
  readonly id: JsonRpcId | null
  readonly result?: unknown
  readonly error?: JsonRpcErrorObject
}

export type JsonRpcMessage = JsonRpcRequest | JsonRpcNotification | JsonRpcResponse

export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603,
  /** The child server behind the gateway is not running or stopped during the request. */
  ServerUnavailable: -32000,
  /** Same code the MCP SDKs use for a request that timed out. */
  RequestTimeout: -32001,
} as const

export type Classified =
  | { readonly _tag: "Request"; readonly message: JsonRpcRequest }
  | { readonly _tag: "Notification"; readonly message: JsonRpcNotification }
  | { readonly _tag: "Response"; readonly message: JsonRpcResponse }
  | { readonly _tag: "Invalid"; readonly id: JsonRpcId | null; readonly error: JsonRpcErrorObject }

const strictUtf8 = new TextDecoder("utf-8", { fatal: true })

/** A JSON object: not null, not an array. */
export const isObject = (value: unknown): value is JsonObject =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const isId = (value: unknown): value is JsonRpcId =>
  typeof value === "string" || (typeof value === "number" && Number.isFinite(value))

const invalid = (id: JsonRpcId | null, code: number, message: string): Classified => ({
  _tag: "Invalid",
  id,
  error: { code, message },
})

/** Decode one line (without its newline) into a JSON-RPC message, or say exactly why it is not one. */
export const classifyLine = (line: Uint8Array): Classified => {
  let text: string
  try {
    text = strictUtf8.decode(line)
  } catch {
    return invalid(null, ErrorCode.ParseError, "Parse error: message is not valid UTF-8")
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (error) {
    return invalid(
      null,
      ErrorCode.ParseError,
      `Parse error: ${error instanceof Error ? error.message : "invalid JSON"}`,
    )
  }
  return classifyValue(value)
}

export const classifyValue = (value: unknown): Classified => {
  if (Array.isArray(value)) {
    return invalid(
      null,
      ErrorCode.InvalidRequest,
      "Invalid Request: JSON-RPC batches are not supported by MCP",
    )
  }
  if (!isObject(value)) {
    return invalid(null, ErrorCode.InvalidRequest, "Invalid Request: a message must be a JSON object")
  }
  const id = isId(value.id) ? value.id : null
  if (value.jsonrpc !== "2.0") {
    return invalid(id, ErrorCode.InvalidRequest, 'Invalid Request: "jsonrpc" must be "2.0"')
  }
  if ("method" in value) {
    if (typeof value.method !== "string" || value.method.length === 0) {
      return invalid(id, ErrorCode.InvalidRequest, 'Invalid Request: "method" must be a non-empty string')
    }
    if ("params" in value && value.params !== undefined && !isObject(value.params)) {
      return invalid(id, ErrorCode.InvalidParams, 'Invalid params: "params" must be an object')
    }
    if (!("id" in value)) return { _tag: "Notification", message: value as JsonRpcNotification }
    if (id === null) {
      return invalid(null, ErrorCode.InvalidRequest, 'Invalid Request: "id" must be a string or a number')
    }
    return { _tag: "Request", message: value as JsonRpcRequest }
  }
  const hasResult = "result" in value
  const hasError = "error" in value
  if (hasResult === hasError) {
    return invalid(
      id,
      ErrorCode.InvalidRequest,
      'Invalid Request: expected "method", or exactly one of "result" and "error"',
    )
  }
  if (hasError && !isErrorObject(value.error)) {
    return invalid(
      id,
      ErrorCode.InvalidRequest,
      'Invalid Request: "error" must have a numeric "code" and a "message"',
    )
  }
  if (!("id" in value) || (value.id !== null && id === null)) {
    return invalid(null, ErrorCode.InvalidRequest, 'Invalid Request: a response needs an "id"')
  }
  return { _tag: "Response", message: value as JsonRpcResponse }
}

const isErrorObject = (value: unknown): value is JsonRpcErrorObject =>
  isObject(value) && typeof value.code === "number" && typeof value.message === "string"

/** MCP names every notification `notifications/...`: one sent with an id is a malformed request. */
export const isNotificationMethod = (method: string): boolean => method.startsWith("notifications/")

export const isRequest = (message: JsonRpcRequest | JsonRpcNotification): message is JsonRpcRequest =>
  "id" in message

export const errorResponse = (id: JsonRpcId | null, error: JsonRpcErrorObject): JsonRpcResponse => ({
  jsonrpc: "2.0",
  id,
  error,
})

const topLevelTrailingId = /"id"\s*:\s*(-?\d+(?:\.\d+)?|"(?:[^"\\]|\\.)*")\s*\}\s*$/
const topLevelLeadingId =
  /^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d+(?:\.\d+)?|"(?:[^"\\]|\\.)*")\s*,/

/**
 * Recover the id of a message too large to parse, from its first and last bytes only, so its sender
 * can be answered instead of left waiting. An id counts only where it is certainly a top-level member:
 * the first member (after "jsonrpc"), or the last one before the closing brace.
 */
export const recoverId = (head: string, tail: string): JsonRpcId | null => {
  const match = topLevelTrailingId.exec(tail) ?? topLevelLeadingId.exec(head)
  if (match?.[1] === undefined) return null
  try {
    const id: unknown = JSON.parse(match[1])
    return isId(id) ? id : null
  } catch {
    return null
  }
}

export const encodeMessage = (message: JsonRpcMessage): string => `${JSON.stringify(message)}\n`

/**
 * A child's successful answer kept as the bytes it wrote, to reach the client with only its id
 * replaced by the caller's: no parse, no re-encoding, no string copy of a large result. Only
 * answers that are certainly well-formed successes get here (jsonScan.forwardableAnswer).
 */
export class ForwardedResponse {
  /** The child's line, without its newline, as the pieces it arrived in (one for a short line). */
  readonly pieces: ReadonlyArray<Uint8Array>

  constructor(
    line: Uint8Array | ReadonlyArray<Uint8Array>,
    /** Where the child's id is in the line: [idStart, idEnd), offsets into the whole line. */
    readonly idStart: number,
    readonly idEnd: number,
    /** The caller's id, written in place of the child's. */
    readonly id: JsonRpcId,
  ) {
    this.pieces = line instanceof Uint8Array ? [line] : line
  }
}

/** An answer on its way to the client: a message the gateway made, or a child's answer as bytes. */
export type OutgoingResponse = JsonRpcResponse | ForwardedResponse

/** What goes to a client: any message, or a child's answer as bytes. */
export type OutgoingMessage = JsonRpcMessage | ForwardedResponse

/** The parsed form of an outgoing answer, for the few places that must look inside one. */
export const parsedResponse = (response: OutgoingResponse): JsonRpcResponse => {
  if (!(response instanceof ForwardedResponse)) return response
  const parsed = JSON.parse(Buffer.concat(response.pieces).toString("utf8")) as JsonRpcResponse
  return { ...parsed, id: response.id }
}

const newline = Buffer.from("\n")

/** The bytes [start, end) of a line held as pieces, as slices of them (no copy). */
const sliceOf = (
  pieces: ReadonlyArray<Uint8Array>,
  start: number,
  end: number,
  out: Array<string | Uint8Array>,
) => {
  let from = 0
  for (const piece of pieces) {
    const to = from + piece.length
    if (to > start && from < end)
      out.push(piece.subarray(Math.max(0, start - from), Math.min(piece.length, end - from)))
    from = to
  }
}

/**
 * An outgoing message as the pieces to write, in order: a forwarded answer is its bytes around the
 * caller's id (slices of the child's chunks, not copies); any other message its JSON text.
 */
export const encodePieces = (message: OutgoingMessage): ReadonlyArray<string | Uint8Array> => {
  if (!(message instanceof ForwardedResponse)) return [encodeMessage(message)]
  const pieces = message.pieces
  const only = pieces[0]
  if (pieces.length === 1 && only !== undefined) {
    return [
      only.subarray(0, message.idStart),
      JSON.stringify(message.id),
      only.subarray(message.idEnd),
      newline,
    ]
  }
  const out: Array<string | Uint8Array> = []
  sliceOf(pieces, 0, message.idStart, out)
  out.push(JSON.stringify(message.id))
  sliceOf(pieces, message.idEnd, Number.POSITIVE_INFINITY, out)
  out.push(newline)
  return out
}
