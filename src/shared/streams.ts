/** Effect wrappers for Node streams: writes that respect backpressure, reads that pull on demand. */
import type { Readable, Writable } from "node:stream"
import * as Effect from "effect/Effect"
import type { Frame, LineFramer } from "./lineFramer.js"

export class StreamClosed {
  readonly _tag = "StreamClosed"
}

/**
 * Call `then` once, at the stream's next 'drain' or its end ('close' or 'error'), saying which came
 * first; the function returned forgets it.
 */
const onceDrainedOrClosed = (stream: Writable, then: (outcome: "drained" | "closed") => void) => {
  const finish = (outcome: "drained" | "closed") => {
    cleanup()
    then(outcome)
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
  return cleanup
}

/** The stream's next 'drain', or its end ('close' or 'error'): which of the two came first. */
const nextDrain = (stream: Writable): Effect.Effect<"drained" | "closed"> =>
  Effect.async((resume) =>
    Effect.sync(onceDrainedOrClosed(stream, (outcome) => resume(Effect.succeed(outcome)))),
  )

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

/**
 * Backpressure as plain callbacks, for readers on the per-call path: whether whoever takes a
 * reader's output can take more.
 */
export interface OutputGate {
  /**
   * Undefined when there is room now (`resume` is not called). Otherwise `resume` runs once there is
   * room again (or the consumer is gone), and the function returned forgets it.
   */
  readonly wait: (resume: () => void) => (() => void) | undefined
}

/** A consumer that always has room (a probe, a shared child read as fast as it writes). */
export const openGate: OutputGate = { wait: () => undefined }

/** Room while the stream's buffer is under its mark; closed until its next 'drain' (or its end). */
export const gateOf = (stream: Writable): OutputGate => ({
  wait: (resume) => {
    if (!stream.writableNeedDrain || stream.destroyed) return undefined
    return onceDrainedOrClosed(stream, () => resume())
  },
})

/** Completes once the gate has room. */
export const whenOpen = (gate: OutputGate): Effect.Effect<void> =>
  Effect.async<void>((resume) => {
    const cancel = gate.wait(() => resume(Effect.void))
    if (cancel === undefined) return resume(Effect.void)
    return Effect.sync(cancel)
  })

/** How a frame was handled: at once (undefined), or by this Effect, before any later frame. */
export type Handled<R> = Effect.Effect<void, never, R> | undefined

/**
 * Read a stream's lines with plain 'data' callbacks: each chunk is framed and its frames handled
 * synchronously, so the per-call path wakes no fiber. A frame whose handling is an Effect pauses the
 * stream; the reader's fiber runs it and the rest of the chunk in order, then reads on. After each
 * chunk the gate is asked, and the stream stays paused while it is closed: a consumer that stops
 * taking output stops the producer too. Completes once the stream has ended and every frame (an
 * unterminated last line too) was handled. The stream is never destroyed here, so a duplex (an SSH
 * channel) can still be written to.
 *
 * State: `backlog` is set by the callbacks and taken by the fiber; while it is set the stream is
 * paused, so the callbacks do not run. `gateWait` belongs to the callbacks (or the fiber, after a
 * backlog): whoever paused the stream is the one that resumes it.
 */
export const readFrames = <R>(
  stream: Readable,
  framer: LineFramer,
  handle: (frame: Frame) => Handled<R>,
  gate: OutputGate,
): Effect.Effect<void, never, R> =>
  Effect.suspend(() => {
    let backlog:
      | {
          readonly first: Effect.Effect<void, never, R>
          readonly frames: ReadonlyArray<Frame>
          readonly from: number
        }
      | undefined
    let ended = stream.readableEnded || stream.destroyed
    let wake: (() => void) | undefined
    let gateWait: (() => void) | undefined
    const signal = () => {
      const waiting = wake
      wake = undefined
      waiting?.()
    }
    const reopened = () => {
      gateWait = undefined
      stream.resume()
    }
    const onData = (chunk: Buffer) => {
      const frames = framer.push(chunk)
      for (let index = 0; index < frames.length; index++) {
        let effect: Handled<R>
        try {
          effect = handle(frames[index] as Frame)
        } catch (defect) {
          // A bug in a handler ends this reader as a defect, as it did in a fiber, not the process.
          effect = Effect.die(defect)
        }
        if (effect !== undefined) {
          stream.pause()
          backlog = { first: effect, frames, from: index + 1 }
          return signal()
        }
      }
      gateWait = gate.wait(reopened)
      if (gateWait !== undefined) stream.pause()
    }
    const onEnd = () => {
      ended = true
      signal()
    }
    const attach = Effect.sync(() => {
      stream.on("data", onData)
      // A 'data' listener starts the flow only on a stream nobody paused.
      if (!ended && stream.readableFlowing === false) stream.resume()
      stream.once("end", onEnd)
      stream.once("close", onEnd)
      stream.once("error", onEnd)
    })
    const detach = Effect.sync(() => {
      stream.off("data", onData)
      stream.off("end", onEnd)
      stream.off("close", onEnd)
      stream.off("error", onEnd)
      gateWait?.()
      gateWait = undefined
    })
    /** The frames from `from` on, each at once where it can be. */
    const rest = (frames: ReadonlyArray<Frame>, from: number): Effect.Effect<void, never, R> =>
      Effect.suspend(() => {
        for (let index = from; index < frames.length; index++) {
          const effect = handle(frames[index] as Frame)
          if (effect !== undefined) return Effect.zipRight(effect, rest(frames, index + 1))
        }
        return Effect.void
      })
    const next = Effect.async<void>((resume) => {
      if (backlog !== undefined || ended) return resume(Effect.void)
      wake = () => resume(Effect.void)
      return Effect.sync(() => {
        wake = undefined
      })
    })
    const loop: Effect.Effect<void, never, R> = Effect.flatMap(next, () => {
      const work = backlog
      if (work === undefined) return rest(framer.end(), 0)
      backlog = undefined
      return work.first.pipe(
        Effect.zipRight(rest(work.frames, work.from)),
        Effect.zipRight(whenOpen(gate)),
        Effect.zipRight(Effect.sync(() => stream.resume())),
        Effect.zipRight(loop),
      )
    })
    return Effect.acquireUseRelease(
      attach,
      () => loop,
      () => detach,
    )
  })
