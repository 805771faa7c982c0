/**
 * The requests a child has not answered yet, under the ids the gateway gave them: each with its
 * caller's id, a deadline that progress extends, and one outcome. The per-call path: plain
 * callbacks and a Node timer, no fiber.
 */
import {
  ForwardedResponse,
  isObject,
  type JsonRpcId,
  type JsonRpcRequest,
  type OutgoingResponse,
} from "../../shared/jsonRpc.js"
import { UpstreamError } from "../errors.js"

/** A caller that took bytes may get a ForwardedResponse; others always get a parsed response. */
export type CallOutcome = OutgoingResponse | UpstreamError

interface Pending {
  readonly callerId: JsonRpcId
  readonly done: (outcome: CallOutcome) => void
  /** Fires when the request has been silent (no answer, no progress) for the whole timeout. */
  readonly timer: NodeJS.Timeout
  readonly progressKey: string | undefined
  /** The caller writes the answer as it is: it may have the child's bytes rather than a parse. */
  readonly takesBytes: boolean
}

const progressKeyOf = (token: unknown) => JSON.stringify(token)

export class PendingCalls {
  private readonly pending = new Map<number, Pending>()
  /** Progress tokens of pending requests: progress on one resets its deadline. */
  private readonly progressOwners = new Map<string, number>()
  private nextId = 1
  /** Called once when the last pending request is settled or withdrawn (a drain waits on it). */
  private idleWaiters: Array<() => void> = []
  /** Pending requests whose caller takes bytes: while none is, no answer is worth scanning. */
  private bytesTakers = 0

  constructor(
    private readonly timeoutMillis: number,
    /** The deadline passed: the error for the caller, and the child is told to give up. */
    private readonly timedOut: (id: number) => UpstreamError,
    private readonly cancelAtChild: (id: number, reason: string) => void,
  ) {}

  /**
   * Register a request; the id to send it to the child under. `done` gets the outcome, once: a
   * ForwardedResponse only when `takesBytes`.
   */
  open(request: JsonRpcRequest, done: (outcome: CallOutcome) => void, takesBytes = false): number {
    const id = this.nextId++
    const meta = request.params?._meta
    const token = isObject(meta) ? meta.progressToken : undefined
    const progressKey = token === undefined ? undefined : progressKeyOf(token)
    const timer = setTimeout(() => {
      if (this.settle(id, this.timedOut(id))) this.cancelAtChild(id, "request timed out at the gateway")
    }, this.timeoutMillis)
    timer.unref()
    this.pending.set(id, { callerId: request.id, done, timer, progressKey, takesBytes })
    if (takesBytes) this.bytesTakers++
    if (progressKey !== undefined) this.progressOwners.set(progressKey, id)
    return id
  }

  /** Hand a request its outcome (an answer gets the caller's id back); false when it is not pending. */
  settle(id: unknown, outcome: CallOutcome): boolean {
    const entry = typeof id === "number" ? this.pending.get(id) : undefined
    if (entry === undefined || typeof id !== "number") return false
    this.forget(id, entry)
    if (outcome instanceof UpstreamError) entry.done(outcome)
    else if (outcome instanceof ForwardedResponse) {
      entry.done(new ForwardedResponse(outcome.pieces, outcome.idStart, outcome.idEnd, entry.callerId))
    } else entry.done({ ...outcome, id: entry.callerId })
    return true
  }

  /** Whether some pending caller takes an answer as bytes (else scanning answers is wasted). */
  get takesBytes(): boolean {
    return this.bytesTakers > 0
  }

  /**
   * Settle `id` with the child's answer as bytes, the id at [idStart, idEnd) to be replaced by the
   * caller's; false (nothing done) when `id` is not pending or its caller wants a parsed answer.
   */
  settleBytes(
    id: number,
    line: Uint8Array | ReadonlyArray<Uint8Array>,
    idStart: number,
    idEnd: number,
  ): boolean {
    const entry = this.pending.get(id)
    if (entry === undefined || !entry.takesBytes) return false
    this.forget(id, entry)
    entry.done(new ForwardedResponse(line, idStart, idEnd, entry.callerId))
    return true
  }

  /** The caller gave up: true when the request was still pending, so the child should hear of it. */
  withdraw(id: number): boolean {
    const entry = this.pending.get(id)
    if (entry === undefined) return false
    this.forget(id, entry)
    return true
  }

  get size(): number {
    return this.pending.size
  }

  /** `callback` runs once no request is pending: at once if none is. */
  whenIdle(callback: () => void): void {
    if (this.pending.size === 0) callback()
    else this.idleWaiters.push(callback)
  }

  failAll(error: UpstreamError): void {
    for (const id of [...this.pending.keys()]) this.settle(id, error)
  }

  /** Progress on a pending request: its deadline starts again. */
  progressed(token: unknown): void {
    const owner = this.progressOwners.get(progressKeyOf(token))
    if (owner !== undefined) this.pending.get(owner)?.timer.refresh()
  }

  private forget(id: number, entry: Pending) {
    this.pending.delete(id)
    if (entry.takesBytes) this.bytesTakers--
    clearTimeout(entry.timer)
    if (entry.progressKey !== undefined) this.progressOwners.delete(entry.progressKey)
    if (this.pending.size === 0 && this.idleWaiters.length > 0) {
      const waiters = this.idleWaiters
      this.idleWaiters = []
      for (const waiter of waiters) waiter()
    }
  }
}
