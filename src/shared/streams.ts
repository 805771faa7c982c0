/** Effect wrappers for Node streams: writes that respect backpressure, reads that pull on demand. */
import type { Readable, Writable } from "node:stream"
import * as Effect from "effect/Effect"

export class StreamClosed {
  readonly _tag = "StreamClosed"
}

/** The stream's next 'drain', or its end ('close' or 'error'): which of the two came first. */
const nextDrain = (stream: Writable): Effect.Effect<"drained" | "closed"> =>
  Effect.async((resume) => {
    const finish = (outcome: "drained" | "closed") => {
      cleanup()
      resume(Effect.succeed(outcome))
    }
    const drained = () => finish("drained")
    const closed = () => finish("closed")
    const cleanup = () => {
      stream.off("drain", drained)
      stream.off("close", closed)
      stream.off("error", closed)
    }
    stream.once("drain", drained)
    stream.once("close", closed)
    stream.once("error", closed)
    return Effect.sync(cleanup)
  })

/**
 * Write and, when the stream's buffer is full, wait for 'drain' so a slow reader slows the writer
 * instead of growing memory. Fails with StreamClosed when the stream is gone.
 */
export const writeWithBackpressure = (
  stream: Writable,
  data: string | Uint8Array,
): Effect.Effect<void, StreamClosed> =>
  Effect.suspend(() => {
    if (stream.destroyed || stream.writableEnded) return Effect.fail(new StreamClosed())
    if (stream.write(data)) return Effect.void
    return Effect.flatMap(nextDrain(stream), (outcome) =>
      outcome === "closed" ? Effect.fail(new StreamClosed()) : Effect.void,
    )
  })

/**
 * Reads a readable in paused mode, one chunk (all that is buffered) at a time. Its listeners are set
 * once, so a read costs no listener bookkeeping; interrupting a read only forgets the reader waiting.
 * The stream is never destroyed here, so a duplex (an SSH channel) can still be written to.
 */
class ChunkReader {
  private waiting: ((chunk: Buffer | undefined) => void) | undefined
  private ended = false

  constructor(private readonly stream: Readable) {
    const wake = () => {
      const resume = this.waiting
      if (resume === undefined) return
      const chunk = this.take()
      if (chunk !== null) {
        this.waiting = undefined
        resume(chunk)
      }
    }
    const end = () => {
      this.ended = true
      wake()
    }
    stream.on("readable", wake)
    stream.once("end", end)
    stream.once("close", end)
    stream.once("error", end)
  }

  /** A chunk, undefined at the end, or null when nothing is there yet. */
  private take(): Buffer | undefined | null {
    const chunk: Buffer | null = this.stream.read()
    if (chunk !== null) return chunk
    return this.ended || this.stream.readableEnded || this.stream.destroyed ? undefined : null
  }

  readonly next: Effect.Effect<Buffer | undefined> = Effect.async<Buffer | undefined>((resume) => {
    const chunk = this.take()
    if (chunk !== null) return resume(Effect.succeed(chunk))
    this.waiting = (value) => resume(Effect.succeed(value))
    return Effect.sync(() => {
      this.waiting = undefined
    })
  })
}

/** A readable's chunks, one `next` at a time: for a reader that outlives one loop over it. */
export interface ChunkSource {
  /** The next chunk, or undefined at the stream's end. Interrupting it loses nothing. */
  readonly next: Effect.Effect<Buffer | undefined>
}

export const chunkSource = (stream: Readable): ChunkSource => new ChunkReader(stream)

/** Run `f` on each chunk of the source, pulling the next only when `f` is done, until its end. */
export const forEachChunkOf = <E, R>(
  source: ChunkSource,
  f: (chunk: Buffer) => Effect.Effect<void, E, R>,
): Effect.Effect<void, E, R> => {
  const loop: Effect.Effect<void, E, R> = Effect.flatMap(source.next, (chunk) =>
    chunk === undefined ? Effect.void : Effect.zipRight(f(chunk), loop),
  )
  return loop
}

/** Run `f` on each chunk of the readable, pulling the next only when `f` is done, until its end. */
export const forEachChunk = <E, R>(
  stream: Readable,
  f: (chunk: Buffer) => Effect.Effect<void, E, R>,
): Effect.Effect<void, E, R> => forEachChunkOf(chunkSource(stream), f)

/** Completes at once while the stream's buffer has room, else at its next 'drain' (or when it closes). */
export const whenDrained = (stream: Writable): Effect.Effect<void> =>
  Effect.suspend(() =>
    !stream.writableNeedDrain || stream.destroyed ? Effect.void : Effect.asVoid(nextDrain(stream)),
  )
