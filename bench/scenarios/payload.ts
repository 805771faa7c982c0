/**
 * 5. Large payloads: one tools/call whose result is 1 MiB or 10 MiB of text (payload-server's `blob`),
 * timed from request to the parsed answer; and the gateway's peak RSS over the series (VmHWM, reset
 * before it). Baselines: the same server over a direct pipe, and through sshd as a forced command
 * (its per-connection processes' peak RSS likewise).
 */
import type { Context } from "../lib/context.js"
import { startGateway } from "../lib/gateway.js"
import { commandName, descendants, peakRssKiB, resetPeak, rssKiB, sampleMedian, sleep } from "../lib/procs.js"
import { compareP50, type Row } from "../lib/report.js"
import { type RpcClient, resultText } from "../lib/rpc.js"
import { openSsh2Session, spawnDirect } from "../lib/ssh.js"
import { elapsedMicros, now, summarize } from "../lib/stats.js"
import { payloadServer, shellCommand } from "../lib/workspace.js"

const mib = (bytes: number) => `${bytes / (1 << 20)} MiB`

/** One blob call, in ms; checks the size of what came back. */
const timedBlob = async (rpc: RpcClient, tool: string, bytes: number): Promise<number> => {
  const start = now()
  const response = await rpc.request("tools/call", { name: tool, arguments: { bytes } }, 120_000)
  const ms = elapsedMicros(start) / 1_000
  const length = response.result === undefined ? -1 : resultText(response.result).length
  if (length !== bytes) {
    throw new Error(
      `${rpc.label}: expected ${bytes} bytes, got ${length}: ${JSON.stringify(response.error ?? {})}`,
    )
  }
  return ms
}

/** Peak RSS growth over `run` of these processes (KiB, summed): VmHWM after, minus VmRSS before. */
const peakGrowth = async (pids: ReadonlyArray<number>, run: () => Promise<void>): Promise<number> => {
  const before = new Map(pids.map((pid) => [pid, rssKiB(pid)]))
  const resettable = pids.length > 0 && pids.every((pid) => resetPeak(pid))
  await run()
  if (!resettable) return Number.NaN
  let growth = 0
  for (const pid of pids) growth += Math.max(0, peakRssKiB(pid) - (before.get(pid) ?? 0))
  return growth
}

interface Path {
  readonly name: string
  readonly short: string
  readonly rpc: RpcClient
  readonly tool: string
  readonly baseline: boolean
  /** The server-side processes whose peak RSS is watched. */
  readonly pids: () => ReadonlyArray<number>
}

export const payload = async (ctx: Context): Promise<void> => {
  const { sizes } = ctx.sizes.payload
  const { results } = ctx
  const cleanups: Array<() => Promise<void>> = []
  try {
    const sshd = await ctx.sshd([{ key: ctx.clientKey, command: shellCommand(payloadServer) }])
    if (sshd !== undefined) cleanups.push(sshd.stop)
    const direct = spawnDirect("direct pipe", payloadServer.command, payloadServer.args)
    cleanups.push(async () => direct.rpc.end())
    await direct.rpc.initialize()
    const viaSshd = sshd === undefined ? undefined : await openSsh2Session(sshd, ctx.clientKey)
    if (viaSshd !== undefined) cleanups.push(viaSshd.close)
    const baselines: Array<Path> = [
      { name: "direct pipe", short: "direct", rpc: direct.rpc, tool: "blob", baseline: true, pids: () => [] },
      ...(viaSshd === undefined || sshd === undefined
        ? []
        : [
            {
              name: "sshd forced command, ssh2",
              short: "sshd",
              rpc: viaSshd.rpc,
              tool: "blob",
              baseline: true,
              // sshd's per-connection processes (not the listener, not the server they run).
              pids: () => descendants(sshd.pid).filter((pid) => commandName(pid) === "sshd"),
            },
          ]),
    ]
    for (const path of baselines)
      for (let index = 0; index < 3; index++) await timedBlob(path.rpc, path.tool, 64 * 1024)

    for (const { bytes, reps } of sizes) {
      // A fresh gateway per size, so its peak is measured from the same idle state each time.
      const gateway = await startGateway(ctx.workspace, {
        servers: { payload: payloadServer },
        clientKeys: [ctx.clientKey],
        name: `gateway-${mib(bytes).replace(" ", "")}`,
      })
      const viaGateway = await openSsh2Session(gateway, ctx.clientKey)
      try {
        for (let index = 0; index < 3; index++) await timedBlob(viaGateway.rpc, "payload__blob", 64 * 1024)
        await sleep(500)
        const idleRss = await sampleMedian(() => rssKiB(gateway.pid), 3, 100)
        const paths: Array<Path> = [
          ...baselines,
          {
            name: "gateway, ssh2",
            short: "gateway",
            rpc: viaGateway.rpc,
            tool: "payload__blob",
            baseline: false,
            pids: () => [gateway.pid],
          },
        ]
        const rows: Array<Row> = []
        for (const path of paths) {
          ctx.checkTime()
          ctx.log(`payload: ${path.name}, ${mib(bytes)} × ${reps}`)
          await sleep(200)
          const samples: Array<number> = []
          const growth = await peakGrowth(path.pids(), async () => {
            for (let index = 0; index < reps; index++)
              samples.push(await timedBlob(path.rpc, path.tool, bytes))
          })
          const summary = summarize(samples)
          const rate = bytes / (1 << 20) / (summary.p50 / 1_000)
          const peakNote = Number.isNaN(growth)
            ? ""
            : `; peak RSS +${(growth / 1024).toFixed(1)} MiB (${(growth / 1024 / (bytes / (1 << 20))).toFixed(1)}× the payload)`
          rows.push(
            results.add({
              scenario: "payload",
              case: `${path.name}: ${mib(bytes)} result`,
              unit: "ms",
              p50: summary.p50,
              p99: summary.max,
              n: summary.n,
              baseline: path.baseline,
              versus: path.baseline
                ? []
                : rows
                    .filter((row) => row.baseline === true)
                    .map((base) =>
                      compareP50(
                        { p50: summary.p50, unit: "ms" },
                        base,
                        paths.find((candidate) => base.case.startsWith(candidate.name))?.short,
                      ),
                    ),
              note: `${rate.toFixed(0)} MiB/s${peakNote}`,
            }),
          )
          if (!path.baseline && !Number.isNaN(growth)) {
            results.add({
              scenario: "payload",
              case: `gateway peak RSS, ${mib(bytes)} results`,
              unit: "MiB",
              p50: (idleRss + growth) / 1024,
              n: 1,
              versus: [],
              note: `idle ${(idleRss / 1024).toFixed(1)} MiB, +${(growth / 1024).toFixed(1)} MiB`,
            })
          }
        }
      } finally {
        await viaGateway.close()
        await gateway.stop()
      }
    }
    results.note(
      "payload: p99 of the large-payload rows is the slowest call (few samples); peak RSS growth is VmHWM over the series minus VmRSS before it, on a gateway started for each size",
    )
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
}
