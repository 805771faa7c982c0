/**
 * Newline-delimited framing with a size cap. A line over the cap is never buffered whole: the framer
 * keeps only its first and last bytes (enough to recover a JSON-RPC id) and skips to the next newline.
 */

/**
 * A complete line, as the pieces of the chunks it came in. A reader that can take the pieces (the
 * forwarding of a large answer) avoids joining them, a second copy of the whole line; `bytes` joins
 * them on first use, and a line that came in one chunk is that one piece, no copy.
 */
export class LineFrame {
  readonly _tag = "Line"
  private joined: Uint8Array | undefined

  constructor(
    /** Non-empty, in order, without the newline or a trailing carriage return. */
    readonly pieces: ReadonlyArray<Uint8Array>,
    readonly size: number,
  ) {}

  get bytes(): Uint8Array {
    if (this.joined === undefined) {
      this.joined =
        this.pieces.length === 1 ? (this.pieces[0] as Uint8Array) : Buffer.concat(this.pieces, this.size)
    }
    return this.joined
  }
}

export type Frame =
  | LineFrame
  | { readonly _tag: "Oversized"; readonly size: number; readonly head: string; readonly tail: string }

const HEAD_BYTES = 4096
const TAIL_BYTES = 512
const NEWLINE = 0x0a
const CARRIAGE_RETURN = 0x0d

export class LineFramer {
  private pending: Array<Buffer> = []
  private pendingBytes = 0
  private discarding = false
  private discardedBytes = 0
  private discardHead = Buffer.alloc(0)
  private discardTail = Buffer.alloc(0)

  constructor(readonly maxLineBytes: number) {}

  /** Feed a chunk; returns the complete frames it finished, in order. */
  push(chunk: Buffer): Array<Frame> {
    const frames: Array<Frame> = []
    let start = 0
    while (start < chunk.length) {
      const newline = chunk.indexOf(NEWLINE, start)
      const end = newline === -1 ? chunk.length : newline
      const piece = chunk.subarray(start, end)
      if (this.discarding) {
        this.discardPiece(piece)
      } else if (this.pendingBytes + piece.length > this.maxLineBytes) {
        this.startDiscarding(piece)
      } else if (piece.length > 0) {
        this.pending.push(piece)
        this.pendingBytes += piece.length
      }
      if (newline === -1) break
      const frame = this.finishLine()
      if (frame !== undefined) frames.push(frame)
      start = newline + 1
    }
    return frames
  }

  /** Bytes of an unterminated last line, if the stream ended without a newline. */
  end(): Array<Frame> {
    const frame = this.finishLine()
    return frame === undefined ? [] : [frame]
  }

  private startDiscarding(piece: Buffer): void {
    // Piece by piece: joining what was buffered would copy up to the whole cap just to keep its ends.
    const buffered = this.pending
    this.pending = []
    this.pendingBytes = 0
    this.discarding = true
    this.discardedBytes = 0
    this.discardHead = Buffer.alloc(0)
    this.discardTail = Buffer.alloc(0)
    for (const bufferedPiece of buffered) this.discardPiece(bufferedPiece)
    this.discardPiece(piece)
  }

  private discardPiece(piece: Buffer): void {
    if (this.discardHead.length < HEAD_BYTES) {
      this.discardHead = Buffer.concat([
        this.discardHead,
        piece.subarray(0, HEAD_BYTES - this.discardHead.length),
      ])
    }
    const tail = Buffer.concat([this.discardTail, piece.subarray(Math.max(0, piece.length - TAIL_BYTES))])
    this.discardTail = tail.subarray(Math.max(0, tail.length - TAIL_BYTES))
    this.discardedBytes += piece.length
  }

  private finishLine(): Frame | undefined {
    if (this.discarding) {
      this.discarding = false
      return {
        _tag: "Oversized",
        size: this.discardedBytes,
        head: this.discardHead.toString("utf8"),
        tail: this.discardTail.toString("utf8"),
      }
    }
    if (this.pendingBytes === 0) return undefined
    const pieces = this.pending
    let size = this.pendingBytes
    this.pending = []
    this.pendingBytes = 0
    const last = pieces[pieces.length - 1] as Buffer
    if (last[last.length - 1] === CARRIAGE_RETURN) {
      size--
      if (last.length === 1) pieces.pop()
      else pieces[pieces.length - 1] = last.subarray(0, last.length - 1)
    }
    // A line of only white space carries no message; skip it like an empty one.
    if (pieces.every((piece) => piece.every((byte) => byte === 0x20 || byte === 0x09))) return undefined
    return new LineFrame(pieces, size)
  }
}
