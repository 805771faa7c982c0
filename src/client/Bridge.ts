/**
 * The relay between the MCP host (our stdin and stdout) and the gateway's session channel, byte for
 * byte: chunks are forwarded as they come, never parsed into messages and re-encoded, and each side
 * is read only as fast as the other side takes the bytes (backpressure both ways). A light scan of
 * the passing lines (src/client/requestTracker.ts) keeps the ids of the host's unanswered requests, so
 * that when the gateway is lost each of them gets a JSON-RPC error instead of silence.
 */
import type { Readable, Writable } from "node:stream"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { forEachChunk, writeWithBackpressure } from "../shared/streams.js"
import type { GatewaySession } from "./GatewayConnection.js"
import { connectionLostResponse, PendingRequests } from "./pendingRequests.js"
import { LineScanner } from "./requestTracker.js"

export type BridgeOutcome =
  /** The host closed our stdin: the session was ended in order. */
  | { readonly _tag: "HostClosed" }
  /** The host stopped reading our stdout. */
  | { readonly _tag: "HostGone" }
  /** The gateway went away first; `answered` pending requests got an error. */
  | { readonly _tag: "GatewayLost"; readonly reason: string; readonly answered: number }

export interface HostStreams {
  readonly input: Readable
  readonly output: Writable
  /** Where the gateway's diagnostics (the channel's stderr) go. */
  readonly diagnostics: Writable
}

export class Bridge extends Context.Tag("mcp-ssh/Bridge")<
  Bridge,
  { readonly relay: (session: GatewaySession) => Effect.Effect<BridgeOutcome> }
>() {}

/** After the host closes stdin, how long answers still in flight may take before the session ends. */
export const drainTimeoutMs = 5_000
/** When the gateway is lost, how long requests already on their way from the host are still taken in. */
const lateRequestsMs = 100
/** How long the last bytes for the host may take to leave before the process exits anyway. */
const flushTimeoutMs = 2_000

/** Wait until everything written to the stream has been handed to the OS (or it is gone). */
const flushed = (output: Writable): Effect.Effect<void> =>
  Effect.gen(function* () {
    const until = Date.now() + flushTimeoutMs
    while (output.writableLength > 0 && !output.destroyed && Date.now() < until) {
      yield* Effect.sleep("10 millis")
    }
  })

export const makeBridge = (host: HostStreams) => ({
  relay: (session: GatewaySession): Effect.Effect<BridgeOutcome> =>
    Effect.gen(function* () {
      const { channel } = session
      const toGateway = new LineScanner()
      const toHost = new LineScanner()
      const pending = new PendingRequests()
      let onDrained: (() => void) | undefined

      /** Set once the channel is gone: the host's lines are then only watched, for their ids. */
      let gatewayGone = false

      // host -> gateway, until the host closes stdin.
      const upstream = forEachChunk(host.input, (chunk) =>
        Effect.suspend(() => {
          for (const facts of toGateway.push(chunk)) pending.fromHost(facts)
          if (gatewayGone) return Effect.void
          return writeWithBackpressure(channel, chunk).pipe(
            Effect.catchAll(() =>
              Effect.sync(() => {
                gatewayGone = true
              }),
            ),
          )
        }),
      ).pipe(
        Effect.zipRight(
          Effect.sync(() => {
            for (const facts of toGateway.end()) pending.fromHost(facts)
            return "input-ended" as const
          }),
        ),
      )

      // gateway -> host, until the channel ends (or the host stops reading).
      const downstream = forEachChunk(channel, (chunk) =>
        Effect.suspend(() => {
          for (const facts of toHost.push(chunk)) pending.fromGateway(facts)
          if (pending.size === 0) onDrained?.()
          return writeWithBackpressure(host.output, chunk)
        }),
      ).pipe(
        Effect.as("channel-ended" as const),
        Effect.catchAll(() => Effect.succeed("output-closed" as const)),
      )

      // The gateway's diagnostics, as they are, on our stderr.
      yield* Effect.fork(
        forEachChunk(channel.stderr, (chunk) => writeWithBackpressure(host.diagnostics, chunk)).pipe(
          Effect.ignore,
        ),
      )
      const up = yield* Effect.fork(upstream)
      const down = yield* Effect.fork(downstream)
      const first = yield* Effect.raceFirst(Fiber.join(up), Fiber.join(down))

      if (first === "input-ended") {
        // The host is done: tell the gateway (EOF), let it answer what is in flight, then end.
        channel.end()
        if (pending.size > 0) {
          const drained = Effect.async<void>((resume) => {
            onDrained = () => resume(Effect.void)
            if (pending.size === 0) resume(Effect.void)
          })
          yield* Effect.raceFirst(drained, Fiber.join(down).pipe(Effect.asVoid)).pipe(
            Effect.timeout(`${drainTimeoutMs} millis`),
            Effect.ignore,
          )
        }
        yield* flushed(host.output)
        return { _tag: "HostClosed" } as const
      }
      if (first === "output-closed") return { _tag: "HostGone" } as const

      // The gateway is gone with the host still there: answer what it will never answer, including
      // requests the host had already sent that were still in our stdin.
      gatewayGone = true
      const reason = yield* session.ended
      yield* Effect.sleep(`${lateRequestsMs} millis`)
      yield* Fiber.interrupt(up)
      const ids = pending.list()
      // A message cut off mid-line must not swallow the first error line.
      const lines = `${toHost.midLine && ids.length > 0 ? "\n" : ""}${ids.map((id) => connectionLostResponse(id, reason)).join("")}`
      if (lines !== "") yield* writeWithBackpressure(host.output, lines).pipe(Effect.ignore)
      yield* flushed(host.output)
      return { _tag: "GatewayLost", reason, answered: ids.length } as const
    }),
})

export const BridgeLive = Layer.sync(Bridge, () => {
  // A host that goes away makes these fail (EPIPE); the relay notices a destroyed stream by itself,
  // and an 'error' nobody listens to would crash the process instead.
  for (const stream of [process.stdin, process.stdout, process.stderr]) stream.on("error", () => {})
  return makeBridge({ input: process.stdin, output: process.stdout, diagnostics: process.stderr })
})
