/**
 * The host's requests still unanswered, learnt from the lines the bridge relays (requestTracker's
 * scan), so that they can be answered with an error when the gateway is lost.
 */
import type { LineFacts } from "./requestTracker.js"

/**
 * The host's requests the gateway has not answered yet. Only ids are kept; a cancelled request is
 * forgotten, since the gateway may rightly never answer it.
 */
export class PendingRequests {
  private readonly ids = new Set<string>()

  /** A line the host sent towards the gateway. */
  fromHost(facts: LineFacts): void {
    if (facts.method === undefined) return
    if (facts.id !== undefined) this.ids.add(facts.id)
    else if (facts.method === "notifications/cancelled" && facts.cancels !== undefined) {
      this.ids.delete(facts.cancels)
    }
  }

  /** A line the gateway sent towards the host. */
  fromGateway(facts: LineFacts): void {
    if (facts.method === undefined && facts.answers && facts.id !== undefined) this.ids.delete(facts.id)
  }

  get size(): number {
    return this.ids.size
  }

  /** The ids, as canonical JSON, in the order the requests were made. */
  list(): ReadonlyArray<string> {
    return [...this.ids]
  }
}

/** JSON-RPC's implementation-defined server error, used for "the gateway is gone". */
export const connectionLostCode = -32000

/** The error line answering a request the gateway will never answer. `id` is canonical JSON. */
export const connectionLostResponse = (id: string, reason: string): string =>
  `{"jsonrpc":"2.0","id":${id},"error":{"code":${connectionLostCode},"message":${JSON.stringify(
    `connection to the gateway lost: ${reason}`,
  )}}}\n`
