/**
 * 2. Throughput with mini-server: (a) 1, 8 and 64 calls in flight on one session; (b) 1, 16 and 128
 * sessions (each its own SSH connection and its own child) each making one call at a time. Baselines:
 * the same load on direct pipes (the same number of mini-server processes), on sshd with the server
 * as a forced command, and on the bare ssh2 relay (bench/fixtures/ssh2-relay.mjs). The clients are
 * ssh2, in the bench process (which shares the 2 cores).
 */
import { closedLoop, type LoopResult, mapLimit, prepareEcho } from "../lib/calls.js"
import type { Context } from "../lib/context.js"
import { startGateway } from "../lib/gateway.js"
import { waitSessionsGone, within } from "../lib/procs.js"
import { startRelay } from "../lib/relay.js"
import { compareRate, type Row } from "../lib/report.js"
import type { RpcClient } from "../lib/rpc.js"
import { openSsh2Session, type Ssh2Session, type SshTarget, spawnDirect } from "../lib/ssh.js"
import { miniServer, shellCommand } from "../lib/workspace.js"

interface Session {
  readonly rpc: RpcClient
  readonly tool: string
  readonly close: () => Promise<void>
}

export const throughput = async (ctx: Context): Promise<void> => {
  const sizes = ctx.sizes.throughput
  const { results } = ctx
  const cleanups: Array<() => Promise<void>> = []
  try {
    const gateway = await startGateway(ctx.workspace, {
      servers: { mini: miniServer },
      clientKeys: [ctx.clientKey],
      flags: ["--max-startups", "1000", "--max-startups-per-source", "1000"],
      name: "gateway",
    })
    cleanups.push(gateway.stop)
    const sshd = await ctx.sshd([{ key: ctx.clientKey, command: shellCommand(miniServer) }])
    if (sshd !== undefined) cleanups.push(sshd.stop)
    const relay = await startRelay(ctx.workspace, miniServer, ctx.clientKey)
    cleanups.push(relay.stop)

    const directSession = async (): Promise<Session> => {
      const direct = spawnDirect("direct pipe", miniServer.command, miniServer.args)
      await direct.rpc.initialize()
      return {
        rpc: direct.rpc,
        tool: "echo",
        close: async () => {
          direct.rpc.end()
          await within(direct.process.exited, 2_000)
        },
      }
    }
    const sshSession = (target: SshTarget, tool: string) => async (): Promise<Session> => {
      const opened: Ssh2Session = await openSsh2Session(target, ctx.clientKey)
      return { rpc: opened.rpc, tool, close: opened.close }
    }
    type Opener = () => Promise<Session>
    const paths: Array<{ name: string; short: string; open: Opener; baseline: boolean; server?: SshTarget }> =
      [
        { name: "direct pipe", short: "direct", open: directSession, baseline: true },
        ...(sshd === undefined
          ? []
          : [
              {
                name: "sshd forced command, ssh2",
                short: "sshd",
                open: sshSession(sshd, "echo"),
                baseline: true,
                server: sshd,
              },
            ]),
        {
          name: "bare ssh2 relay (floor), ssh2",
          short: "floor",
          open: sshSession(relay, "echo"),
          baseline: true,
          server: relay,
        },
        {
          name: "gateway, ssh2",
          short: "gateway",
          open: sshSession(gateway, "mini__echo"),
          baseline: false,
          server: gateway,
        },
      ]
    const shortName = (row: Row) => paths.find((path) => row.case.startsWith(path.name))?.short ?? row.case

    /** Open `count` sessions (8 at a time), warm each up; closes them all if one fails. */
    const openMany = async (open: Opener, count: number): Promise<Array<Session>> => {
      const opened: Array<Session> = []
      try {
        await mapLimit(
          Array.from({ length: count }, (_, index) => index),
          8,
          async () => {
            ctx.checkTime()
            const session = await open()
            opened.push(session)
            await prepareEcho(session.rpc, session.tool, 20)
          },
        )
        return opened
      } catch (error) {
        await Promise.all(opened.map((session) => session.close().catch(() => {})))
        throw error
      }
    }
    const closeMany = async (sessions: ReadonlyArray<Session>, server: SshTarget | undefined) => {
      await Promise.all(sessions.map((session) => session.close().catch(() => {})))
      // Let the children of closed sessions stop before the next run measures anything.
      if (server !== undefined) await waitSessionsGone(server.pid, server.helpers)
    }

    const addRow = (name: string, baseline: boolean, result: LoopResult, against: ReadonlyArray<Row>) =>
      results.add({
        scenario: "throughput",
        case: name,
        unit: "µs",
        p50: result.summary.p50,
        p99: result.summary.p99,
        n: result.summary.n,
        rate: result.callsPerSecond,
        baseline,
        versus: against.map((base) => compareRate({ rate: result.callsPerSecond }, base, shortName(base))),
      })

    // (a) One session, more and more calls in flight.
    {
      const open = await Promise.all(
        paths.map(async (path) => ({ path, session: (await openMany(path.open, 1))[0] })),
      )
      try {
        for (const inFlight of sizes.concurrency) {
          const rows: Array<Row> = []
          for (const { path, session } of open) {
            if (session === undefined) continue
            ctx.checkTime()
            ctx.log(`throughput: ${path.name}, ${inFlight} in flight`)
            // Warm-up (JIT, buffers): a tenth of the run, not counted.
            await closedLoop(
              [{ rpc: session.rpc, tool: session.tool, inFlight }],
              sizes.callsPerRun / 10,
              sizes.maxRunMs / 10,
            )
            const result = await closedLoop(
              [{ rpc: session.rpc, tool: session.tool, inFlight }],
              sizes.callsPerRun,
              sizes.maxRunMs,
            )
            const baseRows = rows.filter((row) => row.baseline === true)
            rows.push(
              addRow(
                `${path.name}: 1 session, ${inFlight} in flight`,
                path.baseline,
                result,
                path.baseline ? [] : baseRows,
              ),
            )
          }
        }
      } finally {
        for (const { path, session } of open)
          if (session !== undefined) await closeMany([session], path.server)
      }
    }

    // (b) Many sessions, one call at a time each.
    for (const count of sizes.sessions) {
      const rows: Array<Row> = []
      for (const path of paths) {
        ctx.checkTime()
        ctx.log(`throughput: ${path.name}, ${count} sessions`)
        const sessions = await openMany(path.open, count)
        try {
          const loop = sessions.map((session) => ({ rpc: session.rpc, tool: session.tool, inFlight: 1 }))
          await closedLoop(loop, Number.MAX_SAFE_INTEGER, sizes.sessionRunMs / 5)
          const result = await closedLoop(loop, Number.MAX_SAFE_INTEGER, sizes.sessionRunMs)
          const baseRows = rows.filter((row) => row.baseline === true)
          rows.push(
            addRow(
              `${path.name}: ${count} session${count === 1 ? "" : "s"} × 1 in flight`,
              path.baseline,
              result,
              path.baseline ? [] : baseRows,
            ),
          )
        } finally {
          await closeMany(sessions, path.server)
        }
      }
    }
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
}
