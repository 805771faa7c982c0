/**
 * 1. Round trip of tools/call `echo` on an established session, one call at a time. Every path talks
 * to the same server (mini-server, whose own cost is a few µs, so the path is what is measured):
 * directly over a pipe, through sshd as a forced command, and through the gateway, with the same
 * two clients (OpenSSH `ssh -T` and ssh2) for sshd and the gateway. The paths are measured in
 * interleaved rounds, so a noisy neighbour slows them all alike.
 */
import { prepareEcho, sequentialEchoes } from "../lib/calls.js"
import type { Context } from "../lib/context.js"
import { startGateway } from "../lib/gateway.js"
import { commandName, cpuMicrosOf, descendants } from "../lib/procs.js"
import { startRelay } from "../lib/relay.js"
import { compareP50, type Row } from "../lib/report.js"
import type { RpcClient } from "../lib/rpc.js"
import { openSsh2Session, type Ssh2Session, spawnDirect, spawnOpenSsh } from "../lib/ssh.js"
import { summarize } from "../lib/stats.js"
import { everythingServer, miniServer, shellCommand } from "../lib/workspace.js"

interface Path {
  readonly name: string
  /** How comparisons name it. */
  readonly short: string
  readonly rpc: RpcClient
  readonly tool: string
  readonly calls: number
  readonly baseline: boolean
  readonly samples: Array<number>
  /** The processes between the client and mini-server (for the direct pipe: mini-server itself). */
  readonly cpuPids: () => ReadonlyArray<number>
  /** Their CPU time over the measured calls, µs. */
  cpuMicros: number
}

export const latency = async (ctx: Context): Promise<void> => {
  const { warmup, calls, rounds, everythingCalls } = ctx.sizes.latency
  const { results } = ctx
  const cleanups: Array<() => Promise<void>> = []
  const paths: Array<Path> = []
  const add = (
    name: string,
    short: string,
    rpc: RpcClient,
    tool: string,
    baseline: boolean,
    cpuPids: () => ReadonlyArray<number>,
    count = calls,
  ) => {
    const path: Path = { name, short, rpc, tool, calls: count, baseline, samples: [], cpuPids, cpuMicros: 0 }
    paths.push(path)
    return path
  }
  // --metrics: every gateway counts and times its calls, as with --metrics-port in production.
  const flags = ctx.options.metrics ? ["--metrics-port", "0"] : []
  if (ctx.options.metrics) results.note("latency: every gateway runs with metrics on (--metrics-port 0)")
  try {
    // One gateway per measured path, so each gets the same warm-up and its CPU is its path's alone.
    const gateway = await startGateway(ctx.workspace, {
      servers: { mini: miniServer },
      clientKeys: [ctx.clientKey],
      name: "gateway",
      flags,
    })
    cleanups.push(gateway.stop)
    const openSshGateway = await startGateway(ctx.workspace, {
      servers: { mini: miniServer },
      clientKeys: [ctx.clientKey],
      name: "gateway-for-ssh",
      flags,
    })
    cleanups.push(openSshGateway.stop)
    const quietGateway = await startGateway(ctx.workspace, {
      servers: { mini: miniServer },
      clientKeys: [ctx.clientKey],
      logLevel: "WARNING",
      name: "gateway-warning",
      flags,
    })
    cleanups.push(quietGateway.stop)
    // Interleaved with the INFO gateway, so the cost of metrics is read within one run's noise.
    const meteredGateway = await startGateway(ctx.workspace, {
      servers: { mini: miniServer },
      clientKeys: [ctx.clientKey],
      name: "gateway-metrics",
      flags: ["--metrics-port", "0"],
    })
    cleanups.push(meteredGateway.stop)
    const everythingGateway = await startGateway(ctx.workspace, {
      servers: { everything: everythingServer },
      clientKeys: [ctx.clientKey],
      name: "gateway-everything",
      flags,
    })
    cleanups.push(everythingGateway.stop)
    const sshd = await ctx.sshd([{ key: ctx.clientKey, command: shellCommand(miniServer) }])
    if (sshd !== undefined) cleanups.push(sshd.stop)
    const relay = await startRelay(ctx.workspace, miniServer, ctx.clientKey)
    cleanups.push(relay.stop)

    const session = async (open: () => Promise<Ssh2Session>) => {
      const opened = await open()
      cleanups.push(opened.close)
      return opened.rpc
    }

    const direct = spawnDirect("direct pipe", miniServer.command, miniServer.args)
    cleanups.push(async () => direct.rpc.end())
    await direct.rpc.initialize()
    const directPath = add("direct pipe", "direct", direct.rpc, "echo", true, () => [direct.process.pid])

    // sshd's listener and per-connection processes, not the forced commands they run.
    const sshdPids = () =>
      sshd === undefined
        ? []
        : [sshd.pid, ...descendants(sshd.pid).filter((pid) => commandName(pid) === "sshd")]
    let sshdOpenSsh: Path | undefined
    let sshdSsh2: Path | undefined
    if (sshd !== undefined) {
      try {
        const viaSsh = spawnOpenSsh(sshd, ctx.clientKey, "sshd forced command via ssh -T")
        cleanups.push(async () => viaSsh.rpc.end())
        await viaSsh.rpc.initialize()
        sshdOpenSsh = add("sshd forced command, ssh -T", "sshd", viaSsh.rpc, "echo", true, sshdPids)
        const rpc = await session(() => openSsh2Session(sshd, ctx.clientKey, "sshd forced command via ssh2"))
        sshdSsh2 = add("sshd forced command, ssh2", "sshd", rpc, "echo", true, sshdPids)
      } catch (error) {
        results.note(`latency: the sshd path failed: ${error instanceof Error ? error.message : error}`)
      }
    }

    const relayViaSsh = spawnOpenSsh(relay, ctx.clientKey, "bare ssh2 relay via ssh -T")
    cleanups.push(async () => relayViaSsh.rpc.end())
    await relayViaSsh.rpc.initialize()
    const relayOpenSsh = add(
      "bare ssh2 relay (floor), ssh -T",
      "floor",
      relayViaSsh.rpc,
      "echo",
      true,
      () => [relay.pid],
    )
    const relaySsh2 = add(
      "bare ssh2 relay (floor), ssh2",
      "floor",
      await session(() => openSsh2Session(relay, ctx.clientKey, "bare ssh2 relay via ssh2")),
      "echo",
      true,
      () => [relay.pid],
    )

    const viaSsh = spawnOpenSsh(openSshGateway, ctx.clientKey, "gateway via ssh -T")
    cleanups.push(async () => viaSsh.rpc.end())
    await viaSsh.rpc.initialize()
    const gatewayOpenSsh = add("gateway, ssh -T", "gateway", viaSsh.rpc, "mini__echo", false, () => [
      openSshGateway.pid,
    ])
    const gatewaySsh2 = add(
      "gateway, ssh2",
      "INFO",
      await session(() => openSsh2Session(gateway, ctx.clientKey)),
      "mini__echo",
      false,
      () => [gateway.pid],
    )
    const gatewayQuiet = add(
      "gateway, ssh2, --log-level WARNING",
      "WARNING",
      await session(() => openSsh2Session(quietGateway, ctx.clientKey)),
      "mini__echo",
      false,
      () => [quietGateway.pid],
    )
    const gatewayMetered = add(
      "gateway, ssh2, --metrics-port",
      "metrics",
      await session(() => openSsh2Session(meteredGateway, ctx.clientKey)),
      "mini__echo",
      false,
      () => [meteredGateway.pid],
    )
    const everything = spawnDirect(
      "direct pipe (server-everything)",
      everythingServer.command,
      everythingServer.args,
    )
    cleanups.push(async () => everything.rpc.end())
    await everything.rpc.initialize()
    const everythingDirect = add(
      "server-everything: direct pipe",
      "direct",
      everything.rpc,
      "echo",
      true,
      () => [everything.process.pid],
      everythingCalls,
    )
    const everythingSsh2 = add(
      "server-everything: gateway, ssh2",
      "gateway",
      await session(() => openSsh2Session(everythingGateway, ctx.clientKey)),
      "everything__echo",
      false,
      () => [everythingGateway.pid],
      everythingCalls,
    )

    for (const path of paths) {
      ctx.checkTime()
      await prepareEcho(path.rpc, path.tool, warmup)
    }
    ctx.log(`latency: ${paths.length} paths, ${rounds} interleaved rounds`)
    for (let round = 0; round < rounds; round++) {
      for (const path of paths) {
        const share = Math.ceil(path.calls / rounds)
        const pids = path.cpuPids()
        const cpuBefore = cpuMicrosOf(pids)
        path.samples.push(...(await sequentialEchoes(path.rpc, path.tool, share, ctx.checkTime)))
        path.cpuMicros += cpuMicrosOf(pids) - cpuBefore
      }
    }

    const rows = new Map<Path, Row>()
    const rowOf = (path: Path | undefined) => (path === undefined ? undefined : rows.get(path))
    const compared = (path: Path, against: ReadonlyArray<Path | undefined>, note?: string) => {
      const summary = summarize(path.samples)
      const partial = { p50: summary.p50, unit: "µs" as const }
      const versus = against.flatMap((base) => {
        const baseRow = rowOf(base)
        return baseRow === undefined || base === undefined ? [] : [compareP50(partial, baseRow, base.short)]
      })
      const row = results.add({
        scenario: "latency",
        case: path.name,
        unit: "µs",
        p50: summary.p50,
        p99: summary.p99,
        n: summary.n,
        cpuPerCall: path.cpuMicros / path.samples.length,
        baseline: path.baseline,
        versus,
        ...(note === undefined ? {} : { note }),
      })
      rows.set(path, row)
      return row
    }
    compared(directPath, [], `${miniServer.description}`)
    if (sshdOpenSsh !== undefined) compared(sshdOpenSsh, [directPath])
    if (sshdSsh2 !== undefined) compared(sshdSsh2, [directPath])
    compared(
      relayOpenSsh,
      [directPath, sshdOpenSsh],
      "ssh2 server piping the channel to the child, nothing else",
    )
    compared(relaySsh2, [directPath, sshdSsh2])
    const viaOpenSshRow = compared(gatewayOpenSsh, [directPath, sshdOpenSsh, relayOpenSsh])
    const viaSsh2Row = compared(gatewaySsh2, [directPath, sshdSsh2, relaySsh2])
    compared(gatewayQuiet, [directPath, gatewaySsh2], "audit log off: the cost of one INFO line per call")
    compared(
      gatewayMetered,
      [directPath, gatewaySsh2],
      ctx.options.metrics
        ? "metrics on in both (--metrics)"
        : "metrics on: the cost of counting and timing each call",
    )
    compared(everythingDirect, [], everythingServer.description)
    compared(everythingSsh2, [everythingDirect])

    const directRow = rowOf(directPath)
    if (directRow !== undefined) {
      for (const row of [viaSsh2Row, viaOpenSshRow]) {
        const added = row.p50 - directRow.p50
        results.target({
          scenario: "latency",
          text: `gateway p50 adds at most 150 µs over the direct pipe (${row.case})`,
          status: added <= 150 ? "met" : "missed",
          detail: `+${added.toFixed(0)} µs (${row.p50.toFixed(0)} vs ${directRow.p50.toFixed(0)} µs)`,
        })
      }
    }
    for (const [row, base] of [
      [viaOpenSshRow, rowOf(sshdOpenSsh)],
      [viaSsh2Row, rowOf(sshdSsh2)],
    ] as const) {
      results.target({
        scenario: "latency",
        text: `gateway p50 no slower than the sshd forced command (${row.case})`,
        status: base === undefined ? "not measured" : row.p50 <= base.p50 ? "met" : "missed",
        detail:
          base === undefined
            ? "sshd baseline not available"
            : `${row.p50.toFixed(0)} vs ${base.p50.toFixed(0)} µs (${(row.p50 / base.p50).toFixed(2)}×)`,
      })
    }
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
}
