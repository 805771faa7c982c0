/**
 * The per-call reader (readFrames) over an in-memory stream: frames handled in order whether at
 * once or by an Effect, the stream paused while the gate is closed, the last unterminated line, and
 * a handler's bug ending the reader rather than the process.
 */
import { PassThrough } from "node:stream"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber } from "effect"
import { type Frame, LineFramer } from "../src/shared/lineFramer.js"
import { type Handled, type OutputGate, openGate, readFrames } from "../src/shared/streams.js"

const text = (frame: Frame) => (frame._tag === "Line" ? Buffer.from(frame.bytes).toString() : "oversized")

describe("readFrames", () => {
  it.live("handles every frame in order, those that need an Effect too, and the last line", () =>
    Effect.gen(function* () {
      const stream = new PassThrough()
      const seen: Array<string> = []
      const handle = (frame: Frame): Handled<never> => {
        const line = text(frame)
        if (!line.startsWith("slow")) {
          seen.push(line)
          return undefined
        }
        return Effect.sleep("5 millis").pipe(Effect.zipRight(Effect.sync(() => void seen.push(line))))
      }
      const reader = yield* Effect.fork(readFrames(stream, new LineFramer(1024), handle, openGate))
      stream.write("a\nslow b\nc\n")
      stream.write("slow d\ne\nf")
      stream.end()
      yield* Fiber.join(reader)
      expect(seen).toEqual(["a", "slow b", "c", "slow d", "e", "f"])
    }),
  )

  it.live("reads no further while the gate is closed, and on once it opens", () =>
    Effect.gen(function* () {
      const stream = new PassThrough()
      const seen: Array<string> = []
      let open = false
      let reopen: (() => void) | undefined
      const gate: OutputGate = {
        wait: (resume) => {
          if (open) return undefined
          reopen = resume
          return () => {
            reopen = undefined
          }
        },
      }
      const handle = (frame: Frame): Handled<never> => {
        seen.push(text(frame))
        return undefined
      }
      const reader = yield* Effect.fork(readFrames(stream, new LineFramer(1024), handle, gate))
      stream.write("one\n")
      yield* Effect.sleep("10 millis")
      stream.write("two\n")
      yield* Effect.sleep("10 millis")
      expect(seen).toEqual(["one"])
      expect(stream.isPaused()).toBe(true)
      open = true
      reopen?.()
      stream.end()
      yield* Fiber.join(reader)
      expect(seen).toEqual(["one", "two"])
    }),
  )

  it.live("ends the reader with a defect when a handler throws", () =>
    Effect.gen(function* () {
      const stream = new PassThrough()
      const failed = yield* Deferred.make<void>()
      const handle = (): Handled<never> => {
        throw new Error("a bug")
      }
      const reader = yield* Effect.fork(
        readFrames(stream, new LineFramer(1024), handle, openGate).pipe(
          Effect.onExit(() => Deferred.succeed(failed, undefined)),
        ),
      )
      stream.write("x\n")
      yield* Deferred.await(failed)
      const exit = yield* Fiber.await(reader)
      expect(Exit.isFailure(exit)).toBe(true)
    }),
  )
})
