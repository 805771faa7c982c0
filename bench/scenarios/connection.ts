/**
 * 3. Connection cost: from TCP connect to the first answers on a new session, whose child is started
 * for it, phase by phase (each phase from the end of the previous one):
 *   handshake+auth    TCP connect, key exchange, ed25519 public-key authentication (ssh2 "ready")
 *   session open      the session channel and its subsystem/exec request
 *   initialize        the initialize answer
 *   tools/list        the first tools/list answer
 *   first tools/call  the first tools/call answer: the child must be up by then (the gateway may
 *                     answer initialize and tools/list before its child is, from what it learned
 *                     about the server at startup)
 *   total             TCP connect to the first tools/list answer
 *   child ready       session open to the first tools/call answer: the child's start, and what the
 *                     gateway does around it
 * Baselines: sshd running the same server as a forced command (same ssh2 client, same phases), and
 * the server spawned directly from a small Node process (bench/fixtures/spawn-timer.mjs: spawn to
 * the same answers). Extra rows: handshake+auth alone over many connections (also against the bare
 * ssh2 relay, the floor for ssh2), OpenSSH `ssh -T` from process start as an MCP host runs it, and
 * the reference server (server-everything) as the child.
 */
import { execFileSync } from "node:child_process"
import { join } from "node:path"
import type { Client as Ssh2Client } from "ssh2"
import { timedEcho } from "../lib/calls.js"
import type { Context } from "../lib/context.js"
import { startGateway } from "../lib/gateway.js"
import { spawnTracked, stopTracked, waitSessionsGone, within } from "../lib/procs.js"
import { startRelay } from "../lib/relay.js"
import { compareP50, type Row } from "../lib/report.js"
import { RpcClient } from "../lib/rpc.js"
import {
  closeSsh2,
  connectSsh2,
  openChannel,
  opensshHandshake,
  type SshTarget,
  spawnOpenSsh,
} from "../lib/ssh.js"
import { elapsedMicros, now, summarize } from "../lib/stats.js"
import { everythingServer, miniServer, repoRoot, type ServerSpec, shellCommand } from "../lib/workspace.js"

const spawnTimerScript = join(repoRoot, "bench/fixtures/spawn-timer.mjs")

const phases = [
  "handshake+auth",
  "session open",
  "initialize",
  "tools/list",
  "first tools/call",
  "total",
  "child ready",
] as const
type Phase = (typeof phases)[number]
type Timings = Record<Phase, Array<number>>

const emptyTimings = (): Timings => ({
  "handshake+auth": [],
  "session open": [],
  initialize: [],
  "tools/list": [],
  "first tools/call": [],
  total: [],
  "child ready": [],
})

/** The MCP part of a session, timed from `opened` (µs since `start`): initialize, tools/list, first call. */
const timedMcp = async (rpc: RpcClient, tool: string, start: bigint, opened: number, into: Timings) => {
  await rpc.initialize()
  const initialized = elapsedMicros(start)
  await rpc.call("tools/list")
  const listed = elapsedMicros(start)
  await timedEcho(rpc, tool, "first")
  const called = elapsedMicros(start)
  into.initialize.push((initialized - opened) / 1_000)
  into["tools/list"].push((listed - initialized) / 1_000)
  into["first tools/call"].push((called - listed) / 1_000)
  into.total.push(listed / 1_000)
  into["child ready"].push((called - opened) / 1_000)
}

/** Wait until the server has no child processes left (the last session's child stopped). */
const settle = (target: SshTarget) => waitSessionsGone(target.pid, target.helpers)

/** One new connection and session over ssh2, timed phase by phase (ms). */
const timedSession = async (target: SshTarget, tool: string, ctx: Context, into: Timings) => {
  const start = now()
  const client: Ssh2Client = await connectSsh2(target, ctx.clientKey)
  client.on("error", () => {})
  try {
    const ready = elapsedMicros(start)
    const channel = await openChannel(client, target)
    const opened = elapsedMicros(start)
    into["handshake+auth"].push(ready / 1_000)
    into["session open"].push((opened - ready) / 1_000)
    const rpc = new RpcClient(`${target.label} new session`, channel, channel, channel.stderr)
    await timedMcp(rpc, tool, start, opened, into)
  } finally {
    await closeSsh2(client)
  }
}

interface SpawnTimings {
  readonly initialize: ReadonlyArray<number>
  readonly toolsList: ReadonlyArray<number>
  readonly firstCall: ReadonlyArray<number>
}

/**
 * Spawn the server directly `count` times from bench/fixtures/spawn-timer.mjs, a small Node process
 * like the gateway (spawning from the bench's own, much larger, process would cost more), and take
 * its timings (ms from spawn).
 */
const timedDirect = async (server: ServerSpec, tool: string, count: number, into: Timings) => {
  const timer = spawnTracked("spawn-timer", process.execPath, [
    spawnTimerScript,
    String(count),
    tool,
    server.command,
    ...server.args,
  ])
  try {
    let output = ""
    timer.child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8")
    })
    timer.child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8")
    })
    const finished = await within(timer.exited, 60_000)
    if (!finished) throw new Error(`spawn-timer took over 60 s: ${output.slice(0, 300)}`)
    const parsed = (() => {
      try {
        return JSON.parse(output.trim().split("\n").pop() ?? "") as Partial<SpawnTimings>
      } catch {
        return {}
      }
    })()
    const { initialize, toolsList, firstCall } = parsed
    if (initialize === undefined || toolsList === undefined || firstCall === undefined) {
      throw new Error(`spawn-timer gave no timings: ${output.slice(0, 300)}`)
    }
    initialize.forEach((initialized, index) => {
      const listed = toolsList[index] ?? Number.NaN
      const called = firstCall[index] ?? Number.NaN
      into.initialize.push(initialized)
      into["tools/list"].push(listed - initialized)
      into["first tools/call"].push(called - listed)
      into.total.push(listed)
      into["child ready"].push(called)
    })
  } finally {
    await stopTracked(timer, 1_000)
  }
}

/** `ssh -T` started, to the first tools/list answer (ms): what an MCP host waits for. */
const timedOpenSsh = async (target: SshTarget, ctx: Context, into: Array<number>) => {
  const start = now()
  const ssh = spawnOpenSsh(target, ctx.clientKey)
  try {
    await ssh.rpc.initialize()
    await ssh.rpc.call("tools/list")
    into.push(elapsedMicros(start) / 1_000)
  } finally {
    ssh.rpc.end()
    await within(ssh.process.exited, 3_000)
    await stopTracked(ssh.process, 1_000)
  }
}

export const connection = async (ctx: Context): Promise<void> => {
  const sizes = ctx.sizes.connection
  const { results } = ctx
  const cleanups: Array<() => Promise<void>> = []
  try {
    // A CA (cert-authority line) and a certificate of the client key, made by ssh-keygen -s.
    const ca = ctx.workspace.key("bench-ca")
    const certificatePath = `${ctx.clientKey.privatePath}-cert.pub`
    execFileSync("ssh-keygen", [
      "-q",
      "-s",
      ca.privatePath,
      "-I",
      "bench-runner",
      "-n",
      "bench",
      "-V",
      "-5m:+1d",
      "-z",
      "1",
      "-f",
      certificatePath,
      `${ctx.clientKey.privatePath}.pub`,
    ])
    const gateway = await startGateway(ctx.workspace, {
      servers: { mini: miniServer },
      clientKeys: [ctx.clientKey],
      authorizedLines: [`cert-authority,principals="bench",mcp-groups="ci" ${ca.publicLine}`],
      name: "gateway",
    })
    cleanups.push(gateway.stop)
    const everythingGateway = await startGateway(ctx.workspace, {
      servers: { everything: everythingServer },
      clientKeys: [ctx.clientKey],
      name: "gateway-everything",
    })
    cleanups.push(everythingGateway.stop)
    const sshd = await ctx.sshd([{ key: ctx.clientKey, command: shellCommand(miniServer) }])
    if (sshd !== undefined) cleanups.push(sshd.stop)
    const relay = await startRelay(ctx.workspace, miniServer, ctx.clientKey)
    cleanups.push(relay.stop)

    const row = (
      name: string,
      samples: ReadonlyArray<number>,
      baseline: boolean,
      against: ReadonlyArray<Row | undefined>,
      note?: string,
    ) => {
      const summary = summarize(samples)
      return results.add({
        scenario: "connection",
        case: name,
        unit: "ms",
        p50: summary.p50,
        p99: summary.p99,
        n: summary.n,
        baseline,
        versus: against.flatMap((base) =>
          base === undefined
            ? []
            : [
                compareP50(
                  { p50: summary.p50, unit: "ms" },
                  base,
                  base.case.replace(/^server-everything: /, "").split(":")[0] ?? base.case,
                ),
              ],
        ),
        ...(note === undefined ? {} : { note }),
      })
    }

    // Handshake and authentication alone: connect, "ready", disconnect; interleaved gateway/relay/sshd.
    const handshakeTargets: Array<{ name: string; target: SshTarget; samples: Array<number> }> = [
      { name: "gateway", target: gateway, samples: [] },
      { name: "relay", target: relay, samples: [] },
      ...(sshd === undefined ? [] : [{ name: "sshd", target: sshd as SshTarget, samples: [] }]),
    ]
    for (const { target } of handshakeTargets) await closeSsh2(await connectSsh2(target, ctx.clientKey))
    ctx.log(`connection: ${sizes.handshakes} handshakes per server`)
    for (let index = 0; index < sizes.handshakes; index++) {
      ctx.checkTime()
      for (const { target, samples } of handshakeTargets) {
        const start = now()
        const client = await connectSsh2(target, ctx.clientKey)
        samples.push(elapsedMicros(start) / 1_000)
        await closeSsh2(client)
      }
    }
    const handshakeSamples = (name: string) =>
      handshakeTargets.find((entry) => entry.name === name)?.samples ?? []
    const sshdHandshake =
      sshd === undefined
        ? undefined
        : row("sshd: handshake+auth only (ssh2, ed25519)", handshakeSamples("sshd"), true, [])
    const relayHandshake = row(
      "bare ssh2 relay (floor): handshake+auth only",
      handshakeSamples("relay"),
      true,
      [],
      "the same ssh2 server code, algorithms and key check, nothing else",
    )
    const gatewayHandshake = row(
      "gateway: handshake+auth only (ssh2, ed25519)",
      handshakeSamples("gateway"),
      false,
      [sshdHandshake, relayHandshake],
    )

    // Handshake and authentication with an OpenSSH certificate against a plain key: OpenSSH's ssh from
    // process start to authenticated, interleaved, same client and overhead for both.
    const opensshCount = Math.max(5, Math.min(sizes.handshakes, 40))
    const plainKeySamples: Array<number> = []
    const certificateSamples: Array<number> = []
    await opensshHandshake(gateway, ctx.clientKey)
    await opensshHandshake(gateway, ctx.clientKey, certificatePath)
    ctx.log(`connection: ${opensshCount} OpenSSH handshakes with a plain key and with a certificate`)
    for (let index = 0; index < opensshCount; index++) {
      ctx.checkTime()
      plainKeySamples.push(await opensshHandshake(gateway, ctx.clientKey))
      certificateSamples.push(await opensshHandshake(gateway, ctx.clientKey, certificatePath))
    }
    const plainKeyHandshake = row(
      "gateway: ssh start to authenticated, plain key (OpenSSH ssh, ed25519)",
      plainKeySamples,
      true,
      [],
      "ssh -N, ended by a LocalCommand once authenticated: includes starting ssh",
    )
    const certificateHandshake = row(
      "gateway: ssh start to authenticated, certificate (ssh-keygen -s, ed25519 CA)",
      certificateSamples,
      false,
      [plainKeyHandshake],
    )

    // A new session with its child, phase by phase; interleaved direct / sshd / gateway.
    const timings = { gateway: emptyTimings(), sshd: emptyTimings(), direct: emptyTimings() }
    await timedDirect(miniServer, "echo", 1, emptyTimings())
    ctx.log(`connection: ${sizes.sessions} new sessions per path`)
    for (let index = 0; index < sizes.sessions; index++) {
      ctx.checkTime()
      await timedDirect(miniServer, "echo", 1, timings.direct)
      if (sshd !== undefined) {
        await timedSession(sshd, "echo", ctx, timings.sshd)
        await settle(sshd)
      }
      await timedSession(gateway, "mini__echo", ctx, timings.gateway)
      await settle(gateway)
    }
    const directPhases: ReadonlyArray<Phase> = [
      "initialize",
      "tools/list",
      "first tools/call",
      "total",
      "child ready",
    ]
    const directRows = new Map<Phase, Row>()
    for (const phase of directPhases) {
      const name =
        phase === "child ready"
          ? "spawn to first tools/call"
          : phase === "total"
            ? "total (spawn to tools/list)"
            : phase
      directRows.set(
        phase,
        row(
          `direct spawn: ${name}`,
          timings.direct[phase],
          true,
          [],
          phase === "initialize" ? miniServer.description : undefined,
        ),
      )
    }
    const phaseName = (phase: Phase) =>
      phase === "total"
        ? "total (TCP connect to tools/list)"
        : phase === "child ready"
          ? "child ready (session open to first tools/call)"
          : phase
    const sshdRows = new Map<Phase, Row>()
    if (sshd !== undefined) {
      for (const phase of phases)
        sshdRows.set(phase, row(`sshd: ${phaseName(phase)}`, timings.sshd[phase], true, []))
    }
    const gatewayRows = new Map<Phase, Row>()
    for (const phase of phases) {
      gatewayRows.set(
        phase,
        row(`gateway: ${phaseName(phase)}`, timings.gateway[phase], false, [
          sshdRows.get(phase),
          directRows.get(phase),
        ]),
      )
    }

    // OpenSSH `ssh -T`, process start to the first tools/list answer.
    const openssh: Record<string, Array<number>> = { gateway: [], sshd: [] }
    const opensshTargets = sshd === undefined ? [gateway] : [gateway, sshd]
    ctx.log(`connection: ${sizes.openssh} ssh -T sessions per server`)
    for (let index = 0; index < sizes.openssh; index++) {
      ctx.checkTime()
      for (const target of opensshTargets) {
        await timedOpenSsh(target, ctx, openssh[target === gateway ? "gateway" : "sshd"] ?? [])
        await settle(target)
      }
    }
    const sshdOpenSsh =
      sshd === undefined ? undefined : row("sshd: ssh -T start to tools/list", openssh.sshd ?? [], true, [])
    row("gateway: ssh -T start to tools/list", openssh.gateway ?? [], false, [sshdOpenSsh])

    // The reference server as the child: its start dominates.
    const everythingDirect = emptyTimings()
    const everythingGatewayTimings = emptyTimings()
    ctx.log(`connection: ${sizes.everything} sessions with server-everything`)
    for (let index = 0; index < sizes.everything; index++) {
      ctx.checkTime()
      await timedDirect(everythingServer, "echo", 1, everythingDirect)
      await timedSession(everythingGateway, "everything__echo", ctx, everythingGatewayTimings)
      await settle(everythingGateway)
    }
    const everythingReady = row(
      "server-everything: direct spawn to first tools/call",
      everythingDirect["child ready"],
      true,
      [],
      everythingServer.description,
    )
    row("server-everything: gateway child ready", everythingGatewayTimings["child ready"], false, [
      everythingReady,
    ])
    row(
      "server-everything: gateway total (TCP connect to tools/list)",
      everythingGatewayTimings.total,
      false,
      [],
    )

    const gatewayTotal = gatewayRows.get("total")
    const gatewayReady = gatewayRows.get("child ready")
    results.target({
      scenario: "connection",
      text: "handshake+auth under 10 ms p50 with ed25519",
      status: gatewayHandshake.p50 < 10 ? "met" : "missed",
      detail:
        `${gatewayHandshake.p50.toFixed(2)} ms p50 (${gatewayHandshake.p99?.toFixed(2)} ms p99)` +
        (sshdHandshake === undefined ? "" : `; sshd ${sshdHandshake.p50.toFixed(2)} ms`) +
        `; bare ssh2 relay ${relayHandshake.p50.toFixed(2)} ms` +
        (gatewayTotal === undefined ? "" : `; TCP connect to tools/list ${gatewayTotal.p50.toFixed(1)} ms`) +
        (gatewayReady === undefined ? "" : `; child ready ${gatewayReady.p50.toFixed(1)} ms`),
    })
    const certificateRatio = certificateHandshake.p50 / plainKeyHandshake.p50
    results.target({
      scenario: "connection",
      text: "handshake+auth with a certificate within 1.3x a plain key (same run, OpenSSH ssh)",
      status: certificateRatio <= 1.3 ? "met" : "missed",
      detail: `certificate ${certificateHandshake.p50.toFixed(2)} ms p50, plain key ${plainKeyHandshake.p50.toFixed(2)} ms p50: ${certificateRatio.toFixed(2)}x`,
    })
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
}
