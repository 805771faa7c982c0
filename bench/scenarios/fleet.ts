/**
 * 7. A fleet behind HAProxy (TCP mode, send-proxy-v2), as the README's "Running several gateways"
 * runs it: 3 replicas sharing one host key, trusting HAProxy's address (HAProxy connects from
 * 127.0.0.2, so the bench's own clients, on 127.0.0.1, still reach a replica directly).
 *   logins/s    ssh2 connect + ed25519 authentication + close, N at once for a few seconds: through
 *               HAProxy to 3 replicas, through HAProxy to 1 replica, and to 1 replica directly (the
 *               baseline); interleaved rounds
 *   round trip  tools/call echo on an established session, sequential, through HAProxy against
 *               directly, to the same replica process: the hop's cost, p50 and p99
 * Skipped, with a note, when haproxy is not installed.
 */
import { prepareEcho, sequentialEchoes } from "../lib/calls.js"
import type { Context } from "../lib/context.js"
import { type Gateway, startGateway } from "../lib/gateway.js"
import { haproxyPath, startHaproxy } from "../lib/haproxy.js"
import { cpuMicrosOf } from "../lib/procs.js"
import { compareP50, type Row, withUnit } from "../lib/report.js"
import { closeSsh2, connectSsh2, openSsh2Session, type SshTarget } from "../lib/ssh.js"
import { elapsedMicros, now, summarize } from "../lib/stats.js"
import { miniServer } from "../lib/workspace.js"

const percentOfCore = (cpuMicros: number, seconds: number) =>
  `${((cpuMicros / 1e6 / seconds) * 100).toFixed(0)}% of a core`

/** Where HAProxy connects to the replicas from: the one address they trust. */
const proxySource = "127.0.0.2"

interface LoginPath {
  readonly name: string
  readonly target: SshTarget
  readonly baseline: boolean
  readonly samples: Array<number>
  logins: number
  seconds: number
  /** CPU time over its runs, µs: the bench's own (the ssh2 clients), and the replicas' with HAProxy's. */
  clientCpu: number
  serverCpu: number
}

export const fleet = async (ctx: Context): Promise<void> => {
  const { results } = ctx
  if (haproxyPath === undefined) {
    results.note("fleet: skipped: haproxy is not installed (apt-get install haproxy; .ci/run installs it)")
    ctx.log("fleet: haproxy is not installed: skipped")
    return
  }
  const sizes = ctx.sizes.fleet
  const cleanups: Array<() => Promise<void>> = []
  try {
    // One host key for every replica: a client pins it once, whichever replica answers.
    const hostKey = ctx.workspace.key("fleet-host-key")
    const replicas: Array<Gateway> = []
    for (let index = 1; index <= 3; index++) {
      const replica = await startGateway(ctx.workspace, {
        servers: { mini: miniServer },
        clientKeys: [ctx.clientKey],
        hostKeyPath: hostKey.privatePath,
        // The startup caps count per replica; the bench's logins must not meet them.
        flags: [
          "--trusted-proxies",
          proxySource,
          "--max-startups",
          "1000",
          "--max-startups-per-source",
          "1000",
        ],
        name: `replica${index}`,
      })
      cleanups.push(replica.stop)
      replicas.push(replica)
    }
    const [first] = replicas
    if (first === undefined) throw new Error("no replica")
    const backend = (replica: Gateway, index: number) => ({ name: `replica${index + 1}`, port: replica.port })
    const toAll = await startHaproxy(ctx.workspace, "haproxy-3", {
      backends: replicas.map(backend),
      sourceAddress: proxySource,
    })
    cleanups.push(toAll.stop)
    const toOne = await startHaproxy(ctx.workspace, "haproxy-1", {
      backends: [backend(first, 0)],
      sourceAddress: proxySource,
    })
    cleanups.push(toOne.stop)
    const through = (port: number, label: string): SshTarget => ({ ...first, port, label })
    const serverPids = () => [...replicas.map((replica) => replica.pid), toAll.process.pid, toOne.process.pid]

    // Logins: interleaved rounds, each path N logins at once for a few seconds.
    const paths: Array<LoginPath> = [
      {
        name: "1 replica, direct",
        target: first,
        baseline: true,
        samples: [],
        logins: 0,
        seconds: 0,
        clientCpu: 0,
        serverCpu: 0,
      },
      {
        name: "HAProxy to 1 replica",
        target: through(toOne.port, "HAProxy to 1 replica"),
        baseline: false,
        samples: [],
        logins: 0,
        seconds: 0,
        clientCpu: 0,
        serverCpu: 0,
      },
      {
        name: "HAProxy to 3 replicas",
        target: through(toAll.port, "HAProxy to 3 replicas"),
        baseline: false,
        samples: [],
        logins: 0,
        seconds: 0,
        clientCpu: 0,
        serverCpu: 0,
      },
    ]
    for (const path of paths) await closeSsh2(await connectSsh2(path.target, ctx.clientKey))
    ctx.log(
      `fleet: logins, ${sizes.loginConcurrency} at once, ${sizes.loginRounds} round(s) of ${sizes.loginSeconds} s per path`,
    )
    for (let round = 0; round < sizes.loginRounds; round++) {
      for (const path of paths) {
        ctx.checkTime()
        const stopAt = Date.now() + sizes.loginSeconds * 1_000
        const start = now()
        const clientBefore = process.cpuUsage()
        const serverBefore = cpuMicrosOf(serverPids())
        const worker = async () => {
          while (Date.now() < stopAt) {
            const began = now()
            const client = await connectSsh2(path.target, ctx.clientKey)
            path.samples.push(elapsedMicros(began) / 1_000)
            path.logins++
            await closeSsh2(client)
          }
        }
        await Promise.all(Array.from({ length: sizes.loginConcurrency }, worker))
        path.seconds += elapsedMicros(start) / 1e6
        const client = process.cpuUsage(clientBefore)
        path.clientCpu += client.user + client.system
        path.serverCpu += cpuMicrosOf(serverPids()) - serverBefore
      }
    }
    let baselineRow: Row | undefined
    for (const path of paths) {
      const summary = summarize(path.samples)
      const rate = path.logins / path.seconds
      // On a small machine the bench's own clients may be the bound, not the replicas: say who was busy.
      const busy = `CPU: bench clients ${percentOfCore(path.clientCpu, path.seconds)}, replicas and HAProxy ${percentOfCore(path.serverCpu, path.seconds)}`
      const row = results.add({
        scenario: "fleet",
        case: `logins: ${path.name} (${sizes.loginConcurrency} at once)`,
        unit: "ms",
        p50: summary.p50,
        p99: summary.p99,
        n: summary.n,
        rate,
        baseline: path.baseline,
        versus:
          baselineRow === undefined
            ? []
            : [
                {
                  against: baselineRow.case,
                  ratio: rate / (baselineRow.rate ?? Number.NaN),
                  text: `${(rate / (baselineRow.rate ?? Number.NaN)).toFixed(2)}× the logins/s of 1 replica direct`,
                },
              ],
        note: path.baseline
          ? `p50/p99: one login (connect to authenticated); the calls/s column: logins per second; ${busy}`
          : busy,
      })
      if (path.baseline) baselineRow = row
    }

    // The hop's cost on a call: the same replica, directly and through HAProxy, in short interleaved
    // rounds (50 calls each in the full run), so the machine's other load falls on both alike.
    const direct = await openSsh2Session(first, ctx.clientKey, "replica1 directly")
    cleanups.push(direct.close)
    const proxied = await openSsh2Session(
      through(toOne.port, "HAProxy"),
      ctx.clientKey,
      "replica1 via HAProxy",
    )
    cleanups.push(proxied.close)
    await prepareEcho(direct.rpc, "mini__echo", sizes.warmup)
    await prepareEcho(proxied.rpc, "mini__echo", sizes.warmup)
    const directSamples: Array<number> = []
    const proxiedSamples: Array<number> = []
    const perRound = Math.ceil(sizes.calls / sizes.rounds)
    ctx.log(`fleet: ${sizes.calls} calls per path in ${sizes.rounds} rounds`)
    for (let round = 0; round < sizes.rounds; round++) {
      directSamples.push(...(await sequentialEchoes(direct.rpc, "mini__echo", perRound, ctx.checkTime)))
      proxiedSamples.push(...(await sequentialEchoes(proxied.rpc, "mini__echo", perRound, ctx.checkTime)))
    }
    const directSummary = summarize(directSamples)
    const directRow = results.add({
      scenario: "fleet",
      case: "round trip: replica directly, ssh2",
      unit: "µs",
      p50: directSummary.p50,
      p99: directSummary.p99,
      n: directSummary.n,
      baseline: true,
      versus: [],
      note: "tools/call echo (mini-server), sequential, on an established session",
    })
    const proxiedSummary = summarize(proxiedSamples)
    const p99Delta = proxiedSummary.p99 - directSummary.p99
    results.add({
      scenario: "fleet",
      case: "round trip: through HAProxy (send-proxy-v2), ssh2",
      unit: "µs",
      p50: proxiedSummary.p50,
      p99: proxiedSummary.p99,
      n: proxiedSummary.n,
      versus: [compareP50({ p50: proxiedSummary.p50, unit: "µs" }, directRow, "direct")],
      note: `p99 ${p99Delta >= 0 ? "+" : "−"}${withUnit(Math.abs(p99Delta), "µs")} vs direct; the same replica process`,
    })
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
}
