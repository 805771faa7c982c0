/**
 * Why mcp-ssh-client stops. Each has a one-line message: the client prints it on stderr and exits 1.
 * (Imported by sub-path: the client loads only the parts of effect it uses, to start fast.)
 */
import * as Data from "effect/Data"

/** The client key could not be loaded, generated or trusted. */
export class ClientKeyError extends Data.TaggedError("ClientKeyError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `client key ${this.path}: ${this.reason}`
  }
}

/** The known_hosts file could not be read. (A failed write only warns.) */
export class KnownHostsError extends Data.TaggedError("KnownHostsError")<{
  readonly path: string
  readonly reason: string
}> {
  override get message(): string {
    return `known hosts ${this.path}: ${this.reason}`
  }
}

/** The gateway's host key is not trusted: unknown, changed or revoked. `message` says what to do. */
export class HostKeyRefused extends Data.TaggedError("HostKeyRefused")<{ readonly message: string }> {}

/** The key API could not be reached, or answered something unusable, or refused the key. */
export class KeyServerError extends Data.TaggedError("KeyServerError")<{
  readonly url: string
  readonly reason: string
}> {
  override get message(): string {
    return `key server ${this.url}: ${this.reason}`
  }
}

/** The gateway did not accept the client key. */
export class AuthenticationRefused extends Data.TaggedError("AuthenticationRefused")<{
  readonly message: string
}> {}

/** The SSH connection could not be made, or the gateway refused the session channel. */
export class ConnectError extends Data.TaggedError("ConnectError")<{
  readonly target: string
  readonly reason: string
}> {
  override get message(): string {
    return `cannot connect to ${this.target}: ${this.reason}`
  }
}

/** A flag has a value that cannot work. */
export class ClientUsageError extends Data.TaggedError("ClientUsageError")<{ readonly message: string }> {}
