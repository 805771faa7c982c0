/** Timed tool calls: one at a time, or a closed loop keeping N in flight. */

import { type RpcClient, resultText, toolNames } from "./rpc.js"
import { elapsedMicros, now, type Summary, summarize } from "./stats.js"

/** One tools/call of an echo tool; returns its round trip in µs, and checks the answer. */
export const timedEcho = async (rpc: RpcClient, tool: string, message: string): Promise<number> => {
  const start = now()
  const response = await rpc.request("tools/call", { name: tool, arguments: { message } })
  const micros = elapsedMicros(start)
  if (response.result === undefined || !resultText(response.result).endsWith(message)) {
    throw new Error(`${rpc.label}: unexpected answer to ${tool}: ${JSON.stringify(response).slice(0, 300)}`)
  }
  return micros
}

/** Checks that tools/list names `tool`, then warms the path up with `count` calls. */
export const prepareEcho = async (rpc: RpcClient, tool: string, count: number): Promise<void> => {
  const names = toolNames(await rpc.call("tools/list"))
  if (!names.includes(tool)) throw new Error(`${rpc.label}: no tool ${tool} in ${names.join(", ")}`)
  for (let index = 0; index < count; index++) await timedEcho(rpc, tool, `warm-up ${index}`)
}

/** `count` sequential calls; their round trips in µs. */
export const sequentialEchoes = async (
  rpc: RpcClient,
  tool: string,
  count: number,
  checkTime: () => void,
): Promise<Array<number>> => {
  const samples: Array<number> = []
  for (let index = 0; index < count; index++) {
    if (index % 100 === 0) checkTime()
    samples.push(await timedEcho(rpc, tool, `hello ${index}`))
  }
  return samples
}

export interface LoopResult {
  readonly summary: Summary
  readonly callsPerSecond: number
  readonly samples: ReadonlyArray<number>
}

export interface LoopTarget {
  readonly rpc: RpcClient
  readonly tool: string
  /** Calls kept in flight on this session. */
  readonly inFlight: number
}

/**
 * A closed loop over one or more sessions: each keeps `inFlight` calls outstanding and sends the next
 * as soon as one returns, until `maxCalls` calls in all were made or `maxMs` passed.
 */
export const closedLoop = async (
  targets: ReadonlyArray<LoopTarget>,
  maxCalls: number,
  maxMs: number,
): Promise<LoopResult> => {
  const samples: Array<number> = []
  let issued = 0
  const stopAt = Date.now() + maxMs
  const start = now()
  const worker = async (target: LoopTarget, workerIndex: number) => {
    let sequence = 0
    while (issued < maxCalls && Date.now() < stopAt) {
      issued++
      samples.push(await timedEcho(target.rpc, target.tool, `w${workerIndex}-${sequence++}`))
    }
  }
  await Promise.all(
    targets.flatMap((target, targetIndex) =>
      Array.from({ length: target.inFlight }, (_, index) => worker(target, targetIndex * 1_000 + index)),
    ),
  )
  const seconds = elapsedMicros(start) / 1e6
  return { summary: summarize(samples), callsPerSecond: samples.length / seconds, samples }
}

/** Run `task` over `items` with at most `limit` at once. */
export const mapLimit = async <A, B>(
  items: ReadonlyArray<A>,
  limit: number,
  task: (item: A, index: number) => Promise<B>,
): Promise<Array<B>> => {
  const results: Array<B> = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await task(items[index] as A, index)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return results
}
