import { Data } from "effect"

/** The gateway cannot start because its configuration is wrong; `message` names the source and the field. */
export class ConfigError extends Data.TaggedError("ConfigError")<{ readonly message: string }> {}

/** The host key could not be loaded, generated or trusted. */
export class HostKeyError extends Data.TaggedError("HostKeyError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `host key ${this.path}: ${this.reason}`
  }
}

/** The SSH listener could not be opened. */
export class ListenError extends Data.TaggedError("ListenError")<{
  readonly address: string
  readonly reason: string
}> {
  override get message(): string {
    return `cannot listen on ${this.address}: ${this.reason}`
  }
}

/**
 * A request to a child MCP server did not get the child's answer: the child could not start, exited,
 * timed out or answered something unusable. `code` is the JSON-RPC error code the client receives.
 */
export class UpstreamError extends Data.TaggedError("UpstreamError")<{
  readonly server: string
  readonly code: number
  readonly reason: string
}> {
  override get message(): string {
    return `server '${this.server}' ${this.reason}`
  }
}

/**
 * A child speaks none of the protocol versions the gateway speaks: it is left out (not restarted),
 * and the session's other servers work.
 */
export class ChildLeftOut extends Data.TaggedError("ChildLeftOut")<{
  readonly server: string
  readonly reason: string
  /** Found out before (no process was started this time): not worth another ERROR line. */
  readonly known?: boolean
}> {
  override get message(): string {
    return `server '${this.server}' is left out: ${this.reason}`
  }
}

/** The key store (authorized keys, enrollment tokens) could not be read, locked or written. */
export class StoreError extends Data.TaggedError("StoreError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `${this.path}: ${this.reason}`
  }
}

/**
 * The key database cannot be reached (down, refused, timed out): the gateway serves its last
 * snapshot, and writes are refused with this (503 on the key API). `store` is the URL without secrets.
 */
export class StoreUnavailable extends Data.TaggedError("StoreUnavailable")<{
  readonly store: string
  readonly reason: string
}> {
  override get message(): string {
    return `the key database ${this.store} is unavailable: ${this.reason}`
  }
}
