/**
 * Holds back the part of a byte stream after its last newline, so that only whole lines are passed
 * on: when the gateway is lost mid-message, the host never sees half of it. Chunks are passed on as
 * they are whenever they end a line, which is nearly always; a line split over chunks waits for its end.
 */
const NEWLINE = 0x0a

export class LineGate {
  private held: Array<Uint8Array> = []

  /** The bytes that may go on now: everything up to and including the last newline seen. */
  push(chunk: Uint8Array): Uint8Array | undefined {
    const last = chunk.lastIndexOf(NEWLINE)
    if (last === -1) {
      this.held.push(chunk)
      return undefined
    }
    const complete = last === chunk.length - 1 ? chunk : chunk.subarray(0, last + 1)
    const out = this.held.length === 0 ? complete : Buffer.concat([...this.held, complete])
    this.held = last === chunk.length - 1 ? [] : [chunk.subarray(last + 1)]
    return out
  }

  /** Whether part of a line is held back (it is dropped when the stream is lost). */
  get midLine(): boolean {
    return this.held.length > 0
  }
}
