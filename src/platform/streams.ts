/** Effect wrappers for Node streams: writes that respect backpressure, reads that pull on demand. */
import type { Readable, Writable } from "node:stream"
import { Effect, Option, Stream } from "effect"

export class StreamClosed {
  readonly _tag = "StreamClosed"
}

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
    return Effect.async<void, StreamClosed>((resume) => {
      const done = () => {
        cleanup()
        resume(Effect.void)
      }
      const closed = () => {
        cleanup()
        resume(Effect.fail(new StreamClosed()))
      }
      const cleanup = () => {
        stream.off("drain", done)
        stream.off("close", closed)
        stream.off("error", closed)
      }
      stream.on("drain", done)
      stream.once("close", closed)
      stream.once("error", closed)
      return Effect.sync(cleanup)
    })
  })

/**
 * The next chunk of a readable in paused mode: whatever is buffered, or the next that arrives; None at
 * the end (EOF, error or destroy). Interrupting it only removes its listeners, so a stream can always
 * be abandoned; it is never destroyed here, so a duplex (an SSH channel) can still be written to.
 */
const readChunk = (stream: Readable): Effect.Effect<Buffer, Option.Option<never>> =>
  Effect.async<Buffer, Option.Option<never>>((resume) => {
    const tryRead = (): boolean => {
      const chunk: Buffer | null = stream.read()
      if (chunk !== null) {
        resume(Effect.succeed(chunk))
        return true
      }
      if (stream.readableEnded || stream.destroyed) {
        resume(Effect.fail(Option.none()))
        return true
      }
      return false
    }
    if (tryRead()) return
    const onReadable = () => {
      if (tryRead()) cleanup()
    }
    const onEnd = () => {
      cleanup()
      resume(Effect.fail(Option.none()))
    }
    const cleanup = () => {
      stream.off("readable", onReadable)
      stream.off("end", onEnd)
      stream.off("close", onEnd)
      stream.off("error", onEnd)
    }
    stream.on("readable", onReadable)
    stream.once("end", onEnd)
    stream.once("close", onEnd)
    stream.once("error", onEnd)
    return Effect.sync(cleanup)
  })

/** The chunks of a readable, pulled only as fast as they are consumed, until its end. */
export const readChunks = (stream: Readable): Stream.Stream<Buffer> =>
  Stream.repeatEffectOption(readChunk(stream))
