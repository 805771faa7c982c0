/**
 * Load: 200 concurrent SSH sessions calling tools for 30 s while one server's children crash every few
 * seconds. Runs on its own (`vitest.load.config.ts`) so that it does not slow the other suites' timing.
 */
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  disposeGateway,
  fixture,
  type RunningGateway,
  repoRoot,
  type ServerEntry,
  startGateway,
} from "../support/gateway.js"
import {
  childrenOf,
  memoryKiB,
  openDescriptorCount,
  waitForDescriptorsBackTo,
  waitUntil,
} from "../support/processes.js"
import { connect } from "../support/ssh.js"

const sessionCount = 200
const flakySessionCount = 4
const callingMillis = 30_000
const crashAfterSeconds = 3
/** A call unanswered this long counts as lost: far above any latency the load produces. */
const lostAfterMillis = 20_000
/** Connections being set up at once, below the per-source cap on unauthenticated connections. */
const connectingAtOnce = 8

const python = (...args: Array<string>): ServerEntry => ({
  command: "python3",
  args: ["-S", fixture("echo-server.py"), ...args],
})

interface Reply {
  readonly id: number
  readonly result?: { readonly content?: ReadonlyArray<{ readonly text?: string }> }
  readonly error?: { readonly code: number; readonly message: string }
}

/** One session: newline-delimited JSON-RPC over an exec channel, with a deadline per call. */
const openSession = async (gateway: RunningGateway, servers: string) => {
  const connection = await connect(gateway)
  const channel = await new Promise<import("ssh2").ClientChannel>((resolve, reject) =>
    connection.exec(servers, (error, opened) => (error ? reject(error) : resolve(opened))),
  )
  const waiting = new Map<number, (reply: Reply | "lost") => void>()
  let buffered = ""
  channel.on("data", (chunk: Buffer) => {
    buffered += chunk.toString("utf8")
    let newline = buffered.indexOf("\n")
    while (newline !== -1) {
      const message = JSON.parse(buffered.slice(0, newline)) as Reply & { method?: string }
      buffered = buffered.slice(newline + 1)
      newline = buffered.indexOf("\n")
      if (message.method !== undefined) continue // list_changed and other notifications
      waiting.get(message.id)?.(message)
      waiting.delete(message.id)
    }
  })
  let nextId = 0
  const call = (method: string, params: Record<string, unknown>) =>
    new Promise<Reply | "lost">((resolve) => {
      const id = nextId++
      const timer = setTimeout(() => {
        waiting.delete(id)
        resolve("lost")
      }, lostAfterMillis)
      waiting.set(id, (reply) => {
        clearTimeout(timer)
        resolve(reply)
      })
      channel.write(`${JSON.stringify({ jsonrpc: "2.0", id, method, params })}\n`)
    })
  const initialized = await call("initialize", {
    protocolVersion: "2025-06-18",
    capabilities: {},
    clientInfo: { name: "load-test", version: "1" },
  })
  if (initialized === "lost" || initialized.error !== undefined) {
    throw new Error(`initialize failed: ${JSON.stringify(initialized)}`)
  }
  channel.write(`${JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" })}\n`)
  const close = () =>
    new Promise<void>((resolve) => {
      connection.once("close", () => resolve())
      channel.end()
      connection.end()
    })
  return { call, close }
}

interface Tally {
  steadyAnswered: number
  steadyWrong: Array<string>
  flakyAnswered: number
  flakyErrors: Array<string>
  lost: Array<string>
  latencies: Array<number>
}

const echo = (server: string, message: string) => ({
  name: `${server}__echo`,
  arguments: { message },
})

/** Call each of the session's servers in turn until the deadline, tallying every outcome. */
const callUntil = async (
  session: Awaited<ReturnType<typeof openSession>>,
  label: string,
  servers: ReadonlyArray<string>,
  deadline: number,
  tally: Tally,
) => {
  for (let round = 0; Date.now() < deadline; round++) {
    for (const server of servers) {
      const message = `${label}-${round}`
      const started = performance.now()
      const reply = await session.call("tools/call", echo(server, message))
      tally.latencies.push(performance.now() - started)
      if (reply === "lost") tally.lost.push(`${label} ${server} round ${round}`)
      else if (server === "steady") {
        if (reply.result?.content?.[0]?.text === message) tally.steadyAnswered++
        else tally.steadyWrong.push(JSON.stringify(reply))
      } else if (reply.error !== undefined) tally.flakyErrors.push(reply.error.message)
      else if (reply.result?.content?.[0]?.text === message) tally.flakyAnswered++
      else tally.steadyWrong.push(`flaky answered wrongly: ${JSON.stringify(reply)}`)
    }
  }
}

const percentile = (sorted: ReadonlyArray<number>, p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN

/** Run `work` over `items` with at most `limit` at once. */
const inBatches = async <A, B>(items: ReadonlyArray<A>, limit: number, work: (item: A) => Promise<B>) => {
  const results: Array<B> = []
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await work(items[index] as A)
    }
  }
  await Promise.all(Array.from({ length: limit }, worker))
  return results
}

let gateway: RunningGateway

/** What must survive any load untouched: the keys, the host key and the config. */
const readFiles = (running: RunningGateway) =>
  [running.authorizedKeysPath, running.hostKeyPath, join(running.dir, "servers_config.json")].map((path) =>
    readFileSync(path, "utf8"),
  )

/** Collect the gateway's garbage and read its memory (test/support/memory-probe.cjs), in MiB. */
const probeMemory = async () => {
  const probesBefore = gateway.log().match(/memory-probe /g)?.length ?? 0
  gateway.process.kill("SIGUSR2")
  await waitUntil(
    () => (gateway.log().match(/memory-probe /g)?.length ?? 0) > probesBefore,
    10_000,
    "the memory probe",
  )
  const [rss, heapUsed] = [...gateway.log().matchAll(/memory-probe rss=(\d+) heapUsed=(\d+)/g)]
    .at(-1)
    ?.slice(1)
    .map((bytes) => Number(bytes) / 2 ** 20) ?? [Number.NaN, Number.NaN]
  return { rss: rss ?? Number.NaN, heapUsed: heapUsed ?? Number.NaN }
}

beforeAll(async () => {
  gateway = await startGateway({
    servers: { steady: python(), flaky: python("--crash-after", String(crashAfterSeconds)) },
    env: { NODE_OPTIONS: `--require ${repoRoot}/test/support/memory-probe.cjs` },
  })
})
afterAll(() => disposeGateway(gateway))

describe(`${sessionCount} concurrent sessions for ${callingMillis / 1000} s`, () => {
  it("answers every request, loses nothing of the healthy server while another crashes, and gives back what it took", async () => {
    // A first session warms the gateway up, so the baseline is that of a gateway in use.
    const warmUp = await openSession(gateway, "steady flaky")
    for (let i = 0; i < 50; i++) await warmUp.call("tools/call", echo("steady", `warm-${i}`))
    await warmUp.close()
    await waitUntil(
      () => childrenOf(gateway.pid).length === 0,
      15_000,
      "the warm-up session's children to end",
    )
    const baseline = await probeMemory()
    const filesBefore = readFiles(gateway)
    const baselineDescriptors = openDescriptorCount(gateway.pid)

    const labels = Array.from({ length: sessionCount }, (_, index) => index)
    const sessions = await inBatches(labels, connectingAtOnce, (index) =>
      openSession(gateway, index < flakySessionCount ? "steady flaky" : "steady"),
    )
    const childrenAtPeak = childrenOf(gateway.pid).length
    const tally: Tally = {
      steadyAnswered: 0,
      steadyWrong: [],
      flakyAnswered: 0,
      flakyErrors: [],
      lost: [],
      latencies: [],
    }
    const deadline = Date.now() + callingMillis
    await Promise.all(
      sessions.map((session, index) =>
        callUntil(
          session,
          `s${index}`,
          index < flakySessionCount ? ["steady", "flaky"] : ["steady"],
          deadline,
          tally,
        ),
      ),
    )
    const peakMiB = memoryKiB(gateway.pid, "VmHWM") / 1024
    await inBatches(sessions, 50, (session) => session.close())
    await waitUntil(() => childrenOf(gateway.pid).length === 0, 30_000, "every child to end")
    await waitForDescriptorsBackTo(gateway.pid, baselineDescriptors, 15_000)
    const after = await probeMemory()

    const sorted = [...tally.latencies].sort((a, b) => a - b)
    const crashes = gateway.log().match(/server 'flaky' exited/g)?.length ?? 0
    console.log(
      [
        `${sessionCount} sessions, ${childrenAtPeak} children at peak, ${callingMillis / 1000} s of calls:`,
        `  steady answered ${tally.steadyAnswered}, flaky answered ${tally.flakyAnswered}, flaky errors ${tally.flakyErrors.length}, lost ${tally.lost.length}`,
        `  ${Math.round(tally.latencies.length / (callingMillis / 1000))} calls/s, latency p50 ${percentile(sorted, 50).toFixed(1)} ms, p99 ${percentile(sorted, 99).toFixed(1)} ms`,
        `  flaky crashes logged: ${crashes}`,
        `  gateway RSS: ${baseline.rss.toFixed(0)} MiB at start, ${peakMiB.toFixed(0)} MiB peak, ${after.rss.toFixed(0)} MiB after the sessions closed`,
        `  gateway heap in use: ${baseline.heapUsed.toFixed(1)} MiB at start, ${after.heapUsed.toFixed(1)} MiB after`,
      ].join("\n"),
    )

    // Every session has its steady child; a flaky one may be between crash and restart.
    expect(childrenAtPeak).toBeGreaterThanOrEqual(sessionCount)
    expect(childrenAtPeak).toBeLessThanOrEqual(sessionCount + flakySessionCount)
    expect(tally.lost).toEqual([])
    expect(tally.steadyWrong).toEqual([])
    expect(tally.steadyAnswered).toBeGreaterThan(sessionCount * 10)
    // The flaky server crashed again and again; its calls failed with errors naming it, and worked between.
    expect(crashes).toBeGreaterThanOrEqual(flakySessionCount * 3)
    expect(tally.flakyErrors.length).toBeGreaterThan(0)
    for (const reason of new Set(tally.flakyErrors)) expect(reason).toMatch(/flaky/)
    expect(tally.flakyAnswered).toBeGreaterThan(0)
    expect(gateway.process.exitCode).toBeNull()
    expect(readFiles(gateway)).toEqual(filesBefore)
    // Nothing of the sessions stays reachable, and the process gives most of its peak back.
    expect(after.heapUsed - baseline.heapUsed).toBeLessThan(8)
    expect(after.rss - baseline.rss).toBeLessThan(32)
  }, 240_000)
})
