/**
 * The relay between the MCP host (our stdin and stdout) and the gateway's session channel, byte for
 * byte: chunks are forwarded as they come (towards the host, whole lines only), never parsed into
 * messages and re-encoded, and each side is read only as fast as the other side takes the bytes
 * (backpressure both ways). A light scan of the passing lines (src/client/requestTracker.ts) keeps
 * the ids of the host's unanswered requests, so that when the gateway is lost each of them gets a
 * JSON-RPC error instead of silence. After a reconnect, the host's session is replayed first
 * (src/client/replay.ts).
 */
import type { Readable, Writable } from "node:stream"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import { isObject } from "../shared/jsonRpc.js"
import { chunkSource, forEachChunk, forEachChunkOf, writeWithBackpressure } from "../shared/streams.js"
import type { GatewaySession } from "./GatewayConnection.js"
import { LineGate } from "./lineGate.js"
import { connectionLostResponse, PendingRequests } from "./pendingRequests.js"
import { HostSessionState, listChangedLines, replaySteps } from "./replay.js"
import { LineScanner } from "./requestTracker.js"

export type BridgeOutcome =
  /** The host closed our stdin: the session was ended in order. */
  | { readonly _tag: "HostClosed" }
  /** The host stopped reading our stdout. */
  | { readonly _tag: "HostGone" }
  /**
   * The gateway went away first; `answered` pending requests got an error. `ended`: the gateway
   * ended the session itself (an exit status), rather than the connection being lost.
   */
  | {
      readonly _tag: "GatewayLost"
      readonly reason: string
      readonly answered: number
      readonly ended: boolean
    }

export interface HostStreams {
  readonly input: Readable
  readonly output: Writable
  /** Where the gateway's diagnostics (the channel's stderr) go. */
  readonly diagnostics: Writable
}

export class Bridge extends Context.Tag("mcp-ssh/Bridge")<
  Bridge,
  {
    /** Relay one gateway session; the host's side (stdin, its session's state) carries over to the next. */
    readonly relay: (session: GatewaySession, options: RelayOptions) => Effect.Effect<BridgeOutcome>
  }
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

/** How a relay runs: after a reconnect it first replays the host's session on the new one. */
export interface RelayOptions {
  /** This session replaces one that was lost: bring it to where the host's last one was. */
  readonly reconnected: boolean
  /**
   * When the gateway is lost, keep taking in the host's requests already on their way for a moment,
   * to answer them too (the bridge is about to exit); otherwise leave them for the next session.
   */
  readonly answerLateRequests: boolean
}

/** A new session could not be brought to where the host's last one was. */
const replayTimeoutMs = 30_000

const splitLines = (bytes: Uint8Array): Array<Uint8Array> => {
  const lines: Array<Uint8Array> = []
  let start = 0
  while (start < bytes.length) {
    const newline = bytes.indexOf(0x0a, start)
    const end = newline === -1 ? bytes.length : newline + 1
    lines.push(bytes.subarray(start, end))
    start = end
  }
  return lines
}

const parseResult = (line: Uint8Array): { result?: unknown; error?: string } => {
  try {
    const message: unknown = JSON.parse(Buffer.from(line).toString("utf8"))
    if (isObject(message) && isObject(message.error))
      return { error: String(message.error.message ?? "an error") }
    return { result: isObject(message) ? message.result : undefined }
  } catch {
    return { error: "an answer that is not JSON" }
  }
}

export const makeBridge = (host: HostStreams) => {
  // The host's side outlives each gateway session: one reader of stdin, one scan of its lines (a
  // line may span two sessions), and what its session asked for, to replay after a reconnect.
  const hostInput = chunkSource(host.input)
  const toGateway = new LineScanner()
  const hostSession = new HostSessionState()
  /** The host was mid-line when a gateway was lost: the rest of that line goes to no gateway. */
  let skippingRestOfLine = false

  const relay = (session: GatewaySession, options: RelayOptions): Effect.Effect<BridgeOutcome> =>
    Effect.gen(function* () {
      const { channel } = session
      const toHost = new LineScanner()
      const gate = new LineGate()
      const pending = new PendingRequests()
      let onDrained: (() => void) | undefined

      /** Set once the channel is gone: the host's lines are then only watched, for their ids. */
      let gatewayGone = false

      const steps = options.reconnected ? replaySteps(hostSession) : []
      const awaiting = new Set(
        steps.flatMap((step) => (step.id === undefined ? [] : [JSON.stringify(step.id)])),
      )
      const initializeId = steps[0]?.id === undefined ? undefined : JSON.stringify(steps[0].id)
      const replayed = yield* Deferred.make<unknown, string>()
      if (awaiting.size === 0) yield* Deferred.succeed(replayed, undefined)

      /** While the replay runs, the answers to it are taken out of what goes to the host. */
      const withoutReplayAnswers = (bytes: Uint8Array): Uint8Array => {
        const kept: Array<Uint8Array> = []
        for (const line of splitLines(bytes)) {
          const facts = toHost.push(line)
          const answer = facts.find((fact) => fact.method === undefined && fact.answers)
          if (answer?.id !== undefined && awaiting.has(answer.id)) {
            awaiting.delete(answer.id)
            if (answer.id === initializeId) {
              const { result, error } = parseResult(line)
              if (error !== undefined)
                Deferred.unsafeDone(replayed, Exit.fail(`it refused the host's initialize: ${error}`))
              else Deferred.unsafeDone(replayed, Exit.succeed(result))
            }
            if (awaiting.size === 0) Deferred.unsafeDone(replayed, Exit.succeed(undefined))
            continue
          }
          for (const fact of facts) pending.fromGateway(fact)
          kept.push(line)
        }
        return kept.length === 1 ? (kept[0] as Uint8Array) : Buffer.concat(kept)
      }

      // host -> gateway, until the host closes stdin.
      const upstream = forEachChunkOf(hostInput, (chunk) =>
        Effect.suspend(() => {
          let data: Uint8Array = chunk
          if (skippingRestOfLine) {
            // The head of this line went to the gateway that was lost: so does its request.
            const newline = chunk.indexOf(0x0a)
            const rest = newline === -1 ? chunk : chunk.subarray(0, newline + 1)
            hostSession.push(rest)
            const orphans = toGateway
              .push(rest)
              .flatMap((facts) => (facts.method !== undefined && facts.id !== undefined ? [facts.id] : []))
            if (newline === -1) return Effect.void
            skippingRestOfLine = false
            data = chunk.subarray(newline + 1)
            if (orphans.length > 0) {
              const lines = orphans
                .map((id) => connectionLostResponse(id, "it was lost while this request was being sent"))
                .join("")
              return writeWithBackpressure(host.output, lines).pipe(
                Effect.ignore,
                Effect.zipRight(forward(data)),
              )
            }
          }
          return forward(data)
        }),
      ).pipe(
        Effect.zipRight(
          Effect.sync(() => {
            for (const facts of toGateway.end()) pending.fromHost(facts)
            return "input-ended" as const
          }),
        ),
      )
      const forward = (data: Uint8Array) =>
        Effect.suspend(() => {
          if (data.length === 0) return Effect.void
          hostSession.push(data)
          for (const facts of toGateway.push(data)) pending.fromHost(facts)
          if (gatewayGone) return Effect.void
          return writeWithBackpressure(channel, data).pipe(
            Effect.catchAll(() =>
              Effect.sync(() => {
                gatewayGone = true
              }),
            ),
          )
        })

      // gateway -> host, whole lines only, until the channel ends (or the host stops reading).
      const downstream = forEachChunk(channel, (chunk) =>
        Effect.suspend(() => {
          const lines = gate.push(chunk)
          if (lines === undefined) return Effect.void
          if (awaiting.size > 0) {
            const kept = withoutReplayAnswers(lines)
            return kept.length === 0 ? Effect.void : writeWithBackpressure(host.output, kept)
          }
          for (const facts of toHost.push(lines)) pending.fromGateway(facts)
          if (pending.size === 0) onDrained?.()
          return writeWithBackpressure(host.output, lines)
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
      const down = yield* Effect.fork(downstream)

      // A new session after a reconnect first hears the host's initialize (and the rest), under the
      // bridge's own ids; the host's own requests wait in stdin until that is done.
      if (steps.length > 0) {
        const sent = Effect.forEach(steps, (step) => writeWithBackpressure(channel, step.line), {
          discard: true,
        })
        const outcome = yield* sent.pipe(
          Effect.zipRight(Deferred.await(replayed)),
          Effect.timeoutFail({
            duration: `${replayTimeoutMs} millis`,
            onTimeout: () => "no answer to the replayed initialize",
          }),
          Effect.raceFirst(Fiber.join(down).pipe(Effect.zipRight(Effect.fail("it closed the session")))),
          Effect.either,
        )
        if (outcome._tag === "Left") {
          const why = typeof outcome.left === "string" ? outcome.left : "it closed the session"
          yield* Fiber.interrupt(down)
          return {
            _tag: "GatewayLost",
            reason: `the new session failed: ${why}`,
            answered: 0,
            ended: session.exitStatus() !== undefined,
          } as const
        }
        const notices = listChangedLines(outcome.right)
        if (notices !== "") yield* writeWithBackpressure(host.output, notices).pipe(Effect.ignore)
      }

      const up = yield* Effect.fork(upstream)
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

      // The gateway is gone with the host still there: answer what it will never answer.
      gatewayGone = true
      const reason = yield* session.ended
      // About to exit: requests the host had already sent, still in our stdin, get an answer too.
      // Reconnecting: they stay in stdin, for the next session.
      if (options.answerLateRequests) yield* Effect.sleep(`${lateRequestsMs} millis`)
      yield* Fiber.interrupt(up)
      skippingRestOfLine = toGateway.midLine
      const ids = pending.list()
      // Only whole lines ever reached the host (LineGate), so the errors start on a line of their own.
      const lines = ids.map((id) => connectionLostResponse(id, reason)).join("")
      if (lines !== "") yield* writeWithBackpressure(host.output, lines).pipe(Effect.ignore)
      yield* flushed(host.output)
      return {
        _tag: "GatewayLost",
        reason,
        answered: ids.length,
        ended: session.exitStatus() !== undefined,
      } as const
    })

  return { relay }
}

export const BridgeLive = Layer.sync(Bridge, () => {
  // A host that goes away makes these fail (EPIPE); the relay notices a destroyed stream by itself,
  // and an 'error' nobody listens to would crash the process instead.
  for (const stream of [process.stdin, process.stdout, process.stderr]) stream.on("error", () => {})
  return makeBridge({ input: process.stdin, output: process.stdout, diagnostics: process.stderr })
})
