/**
 * A lean newline-delimited JSON-RPC client over any byte stream pair (a child's pipes, an ssh2
 * channel, an `ssh` process): numeric ids, one pending map, lines split without re-scanning, so the
 * client adds as little as possible to the figures it takes. The same client measures every path.
 */
import type { Readable, Writable } from "node:stream"

export type Json = null | boolean | number | string | ReadonlyArray<Json> | { readonly [key: string]: Json }
export type JsonObject = { readonly [key: string]: Json }

export interface Response {
  readonly id: number
  readonly result?: JsonObject
  readonly error?: { readonly code: number; readonly message: string }
}

interface Pending {
  readonly resolve: (response: Response) => void
  readonly reject: (error: Error) => void
  readonly timer: NodeJS.Timeout
}

const NEWLINE = 0x0a

const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

export class RpcClient {
  private nextId = 1
  private readonly pending = new Map<number, Pending>()
  private partial: Array<Buffer> = []
  private partialBytes = 0
  private closed: Error | undefined
  /** Notifications and requests from the server, counted (the bench ignores them otherwise). */
  unsolicited = 0
  /** The last stderr text of the peer, for error messages. */
  stderr = ""

  constructor(
    readonly label: string,
    input: Readable,
    private readonly output: Writable,
    stderr?: Readable,
  ) {
    input.on("data", (chunk: Buffer) => this.onData(chunk))
    const onEnd = () => this.fail(new Error(`${label}: the stream ended${this.stderrHint()}`))
    input.once("end", onEnd)
    input.once("close", onEnd)
    input.once("error", (error: Error) => this.fail(new Error(`${label}: ${error.message}`)))
    output.on("error", (error: Error) => this.fail(new Error(`${label}: ${error.message}`)))
    stderr?.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString("utf8")).slice(-2_000)
    })
  }

  private stderrHint() {
    return this.stderr.trim() === "" ? "" : ` (stderr: ${this.stderr.trim().slice(-500)})`
  }

  private fail(error: Error) {
    if (this.closed !== undefined) return
    this.closed = error
    for (const entry of this.pending.values()) {
      clearTimeout(entry.timer)
      entry.reject(error)
    }
    this.pending.clear()
  }

  private onData(chunk: Buffer) {
    let start = 0
    let newline = chunk.indexOf(NEWLINE, start)
    while (newline !== -1) {
      let line = chunk.subarray(start, newline)
      if (this.partialBytes > 0) {
        this.partial.push(line)
        line = Buffer.concat(this.partial, this.partialBytes + line.length)
        this.partial = []
        this.partialBytes = 0
      }
      if (line.length > 0) this.onLine(line)
      start = newline + 1
      newline = chunk.indexOf(NEWLINE, start)
    }
    if (start < chunk.length) {
      this.partial.push(chunk.subarray(start))
      this.partialBytes += chunk.length - start
    }
  }

  private onLine(line: Buffer) {
    let message: unknown
    try {
      message = JSON.parse(line.toString("utf8"))
    } catch {
      this.fail(new Error(`${this.label}: not JSON: ${line.subarray(0, 200).toString("utf8")}`))
      return
    }
    if (!isObject(message)) return
    const id = message.id
    if (typeof id !== "number" || !("result" in message || "error" in message) || "method" in message) {
      this.unsolicited++
      return
    }
    const entry = this.pending.get(id)
    if (entry === undefined) return
    this.pending.delete(id)
    clearTimeout(entry.timer)
    entry.resolve(message as unknown as Response)
  }

  /** Send a request; resolves with the response (result or error), rejects on timeout or a closed stream. */
  request(method: string, params?: JsonObject, timeoutMs = 30_000): Promise<Response> {
    if (this.closed !== undefined) return Promise.reject(this.closed)
    const id = this.nextId++
    return new Promise<Response>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new Error(`${this.label}: no answer to ${method} within ${timeoutMs} ms${this.stderrHint()}`))
      }, timeoutMs)
      this.pending.set(id, { resolve, reject, timer })
      this.output.write(
        `${JSON.stringify({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) })}\n`,
      )
    })
  }

  /** A request whose answer must be a result; an error response becomes a rejection. */
  async call(method: string, params?: JsonObject, timeoutMs?: number): Promise<JsonObject> {
    const response = await this.request(method, params, timeoutMs)
    if (response.error !== undefined || response.result === undefined) {
      throw new Error(`${this.label}: ${method} failed: ${JSON.stringify(response.error ?? response)}`)
    }
    return response.result
  }

  notify(method: string, params?: JsonObject): void {
    this.output.write(
      `${JSON.stringify({ jsonrpc: "2.0", method, ...(params === undefined ? {} : { params }) })}\n`,
    )
  }

  /** initialize + notifications/initialized, as an MCP client opens a session. */
  async initialize(timeoutMs = 30_000): Promise<JsonObject> {
    const result = await this.call(
      "initialize",
      {
        protocolVersion: "2025-06-18",
        capabilities: {},
        clientInfo: { name: "mcp-ssh-bench", version: "1" },
      },
      timeoutMs,
    )
    this.notify("notifications/initialized")
    return result
  }

  /** Ends the output side (EOF to the peer). */
  end(): void {
    if (!this.output.writableEnded) this.output.end()
  }
}

/** The text of the first content item of a tools/call result. */
export const resultText = (result: JsonObject): string => {
  const content = result.content
  if (!Array.isArray(content)) return ""
  const first: unknown = content[0]
  return isObject(first) && typeof first.text === "string" ? first.text : ""
}

/** Names of the tools in a tools/list result. */
export const toolNames = (result: JsonObject): Array<string> => {
  const tools = result.tools
  if (!Array.isArray(tools)) return []
  return tools.flatMap((tool: unknown) =>
    isObject(tool) && typeof tool.name === "string" ? [tool.name] : [],
  )
}
