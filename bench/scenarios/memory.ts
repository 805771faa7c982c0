/**
 * 4. Memory. (a) The gateway's RSS (VmRSS) with 0, 100 and 1,000 idle authenticated SSH connections
 * (no session channel); baseline: sshd's PSS, summed over the listener and its per-connection
 * processes, with 0 and 100 idle connections. (b) Per session with its child: the gateway's RSS
 * growth and the children's RSS per session; baseline: sshd's processes and the forced command per
 * session (PSS), and one mini-server started directly. RSS is sampled after a settle delay (the
 * median of a few samples): a GC cannot be forced from outside, so garbage not yet collected counts.
 */
import type { Client as Ssh2Client } from "ssh2"
import { mapLimit } from "../lib/calls.js"
import type { Context } from "../lib/context.js"
import { startGateway } from "../lib/gateway.js"
import {
  commandName,
  descendants,
  pssKiB,
  rssKiB,
  sampleMedian,
  sessionProcesses,
  sleep,
  stopTracked,
  waitSessionsGone,
} from "../lib/procs.js"
import { compareP50, type Row } from "../lib/report.js"
import { RpcClient } from "../lib/rpc.js"
import { closeSsh2, connectSsh2, openChannel, type SshTarget, spawnDirect } from "../lib/ssh.js"
import { miniServer, shellCommand } from "../lib/workspace.js"

/** PSS of sshd's own processes (listener and per-connection), and of what they run (the forced commands). */
const sshdPss = (pid: number) => {
  let sshd = pssKiB(pid)
  let commands = 0
  for (const child of descendants(pid)) {
    const pss = pssKiB(child)
    if (Number.isNaN(pss)) continue
    if (commandName(child) === "sshd") sshd += pss
    else commands += pss
  }
  return { sshd, commands }
}

export const memory = async (ctx: Context): Promise<void> => {
  const sizes = ctx.sizes.memory
  const { results } = ctx
  const cleanups: Array<() => Promise<void>> = []
  const clients: Array<Ssh2Client> = []
  const closeClients = async () => {
    const open = clients.splice(0)
    await mapLimit(open, 50, (client) => closeSsh2(client, 3_000))
  }
  /** Open idle connections until there are `count` (25 handshakes at a time). */
  const connectUpTo = async (target: SshTarget, count: number) => {
    const missing = Math.max(0, count - clients.length)
    await mapLimit(Array.from({ length: missing }), 25, async () => {
      ctx.checkTime()
      const client = await connectSsh2(target, ctx.clientKey, 60_000)
      client.on("error", () => {})
      clients.push(client)
    })
  }
  const settle = () => sleep(sizes.settleMs)
  const add = (row: Omit<Row, "scenario" | "versus"> & { versus?: Row["versus"] }) =>
    results.add({ scenario: "memory", versus: [], ...row })

  try {
    const sshd = await ctx.sshd([{ key: ctx.clientKey, command: shellCommand(miniServer) }])
    if (sshd !== undefined) cleanups.push(sshd.stop)
    /** Open an MCP session on every connection (4 at a time) and make one call on each. */
    const openSessions = (target: SshTarget, tool: string) =>
      mapLimit(clients, 4, async (client) => {
        const channel = await openChannel(client, target)
        const rpc = new RpcClient(`${target.label} session`, channel, channel, channel.stderr)
        await rpc.initialize()
        await rpc.call("tools/list")
        await rpc.call("tools/call", { name: tool, arguments: { message: "hello" } })
      })
    const count = sizes.sessions

    // (b) Per session. Baselines first: one mini-server alone, then sshd's sessions.
    const direct = spawnDirect("direct mini-server", miniServer.command, miniServer.args)
    try {
      await direct.rpc.initialize()
      await direct.rpc.call("tools/list")
      await settle()
      add({
        case: "one mini-server started directly: PSS",
        unit: "KiB",
        p50: await sampleMedian(() => pssKiB(direct.process.pid), sizes.samples),
        n: sizes.samples,
        baseline: true,
        note: `RSS ${rssKiB(direct.process.pid).toFixed(0)} KiB (RSS counts shared pages in full)`,
      })
    } finally {
      direct.rpc.end()
      await stopTracked(direct.process, 2_000)
    }
    let sshdTotal: Row | undefined
    if (sshd !== undefined) {
      try {
        ctx.log(`memory: ${count} sessions through sshd`)
        await connectUpTo(sshd, count)
        await settle()
        const idle = sshdPss(sshd.pid)
        await openSessions(sshd, "echo")
        await settle()
        const busy = sshdPss(sshd.pid)
        add({
          case: `sshd: its processes' PSS growth per session (${count} sessions)`,
          unit: "KiB",
          p50: (busy.sshd - idle.sshd) / count,
          n: 1,
          baseline: true,
          note: "a session runs in the connection's process",
        })
        add({
          case: "sshd: forced commands' PSS per session",
          unit: "KiB",
          p50: busy.commands / count,
          n: 1,
          baseline: true,
          note: "the user's shell exec'd into mini-server",
        })
        sshdTotal = add({
          case: "sshd: per session in all (growth + forced command)",
          unit: "KiB",
          p50: (busy.sshd - idle.sshd + busy.commands) / count,
          n: 1,
          baseline: true,
        })
      } finally {
        await closeClients()
        await waitSessionsGone(sshd.pid, sshd.helpers)
      }
    }
    // On a fresh gateway, so the heap is not the one 1,000 handshakes left behind.
    {
      const gateway = await startGateway(ctx.workspace, {
        servers: { mini: miniServer },
        clientKeys: [ctx.clientKey],
        flags: ["--max-startups", "2000", "--max-startups-per-source", "2000"],
        name: "gateway-sessions",
      })
      try {
        ctx.log(`memory: ${count} sessions with children through the gateway`)
        await connectUpTo(gateway, count)
        await settle()
        const before = await sampleMedian(() => rssKiB(gateway.pid), sizes.samples)
        await openSessions(gateway, "mini__echo")
        await settle()
        const after = await sampleMedian(() => rssKiB(gateway.pid), sizes.samples)
        const childrenPss = await sampleMedian(
          () =>
            sessionProcesses(gateway.pid, gateway.helpers).reduce((sum, pid) => sum + (pssKiB(pid) || 0), 0),
          sizes.samples,
        )
        const children = sessionProcesses(gateway.pid, gateway.helpers)
        const childrenRss = children.reduce((sum, pid) => sum + (rssKiB(pid) || 0), 0)
        const childCount = children.length
        const growth = (after - before) / count
        add({
          case: `gateway: RSS growth per session (${count} sessions, ${childCount} children)`,
          unit: "KiB",
          p50: growth,
          n: sizes.samples,
          note: `${(before / 1024).toFixed(1)} → ${(after / 1024).toFixed(1)} MiB`,
        })
        add({
          case: "gateway: children's PSS per session",
          unit: "KiB",
          p50: childrenPss / count,
          n: sizes.samples,
          note: `one mini-server per session; RSS ${(childrenRss / count).toFixed(0)} KiB`,
        })
        const total = growth + childrenPss / count
        add({
          case: "gateway: per session in all (growth + child)",
          unit: "KiB",
          p50: total,
          n: sizes.samples,
          versus: sshdTotal === undefined ? [] : [compareP50({ p50: total, unit: "KiB" }, sshdTotal, "sshd")],
        })
      } finally {
        await closeClients()
        await gateway.stop()
      }
    }

    // (a) Idle authenticated connections: sshd first (the baseline), then the gateway.
    let sshdPerIdle: Row | undefined
    if (sshd !== undefined) {
      const level = sizes.sshdIdle
      ctx.log(`memory: 0 and ${level} idle connections to sshd`)
      await settle()
      const base = sshdPss(sshd.pid).sshd
      add({
        case: "sshd: PSS of all its processes, 0 connections",
        unit: "MiB",
        p50: base / 1024,
        n: 1,
        baseline: true,
      })
      await connectUpTo(sshd, level)
      await settle()
      const loaded = sshdPss(sshd.pid).sshd
      add({
        case: `sshd: PSS of all its processes, ${level} idle connections`,
        unit: "MiB",
        p50: loaded / 1024,
        n: 1,
        baseline: true,
        note: `${descendants(sshd.pid).length} processes`,
      })
      sshdPerIdle = add({
        case: `sshd: per idle connection (0 → ${level})`,
        unit: "KiB",
        p50: (loaded - base) / level,
        n: 1,
        baseline: true,
      })
      await closeClients()
      await waitSessionsGone(sshd.pid, sshd.helpers)
    }
    const gateway = await startGateway(ctx.workspace, {
      servers: { mini: miniServer },
      clientKeys: [ctx.clientKey],
      flags: ["--max-startups", "2000", "--max-startups-per-source", "2000"],
      name: "gateway-idle",
    })
    cleanups.push(gateway.stop)
    const levels = new Map<number, number>()
    for (const level of sizes.idle) {
      ctx.log(`memory: ${level} idle connections to the gateway`)
      await connectUpTo(gateway, level)
      await settle()
      const rss = await sampleMedian(() => rssKiB(gateway.pid), sizes.samples)
      levels.set(level, rss)
      const zero = levels.get(0)
      const perConnection = zero === undefined || level === 0 ? undefined : (rss - zero) / level
      add({
        case: `gateway: RSS, ${level} idle connections`,
        unit: "MiB",
        p50: rss / 1024,
        n: sizes.samples,
        ...(perConnection === undefined
          ? {}
          : { note: `${perConnection.toFixed(1)} KiB per connection over 0` }),
      })
    }
    const zero = levels.get(0)
    const top = Math.max(...sizes.idle)
    const topRss = levels.get(top)
    let perIdle: number | undefined
    if (zero !== undefined && topRss !== undefined && top > 0) {
      perIdle = (topRss - zero) / top
      add({
        case: `gateway: per idle connection (0 → ${top})`,
        unit: "KiB",
        p50: perIdle,
        n: sizes.samples,
        versus:
          sshdPerIdle === undefined ? [] : [compareP50({ p50: perIdle, unit: "KiB" }, sshdPerIdle, "sshd")],
      })
    }
    await closeClients()
    const sshdPerIdleValue = sshdPerIdle?.p50

    results.target({
      scenario: "memory",
      text: "gateway under 100 KiB per idle connection",
      status: perIdle === undefined ? "not measured" : perIdle < 100 ? "met" : "missed",
      detail:
        perIdle === undefined
          ? "no level above 0 measured"
          : `${perIdle.toFixed(1)} KiB (RSS ${((zero ?? 0) / 1024).toFixed(1)} → ${((topRss ?? 0) / 1024).toFixed(1)} MiB at ${top})` +
            (sshdPerIdleValue === undefined ? "" : `; sshd ${sshdPerIdleValue.toFixed(0)} KiB`),
    })
  } finally {
    await closeClients().catch(() => {})
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
}
