/**
 * 8. Revocation propagation: 3 replicas sharing one temporary PostgreSQL as their key store
 * (`--key-store postgres://...`), each with its key API. Each round adds a fresh key through one
 * replica's admin API, opens an MCP session with it on every replica (directly: a revocation does
 * not pass through the load balancer, it goes replica → PostgreSQL NOTIFY → replica), then revokes
 * it through one replica and times, from the revoke request sent, until each session's connection
 * is closed as the client sees it.
 *   propagated  the sessions on the two other replicas: what "applies on all of them within 1 s"
 *               means, p50 and p99
 *   baseline    the session on the replica that revoked it (no database round trip to learn of it)
 *   answered    the revoke request's own answer: the write every figure above includes
 * The replica that revokes turns round, so each replica is the revoking one a third of the time.
 * Skipped, with a note, when the PostgreSQL server binaries are not installed.
 */
import type { Client as Ssh2Client } from "ssh2"
import type { Context } from "../lib/context.js"
import { type Gateway, startGateway } from "../lib/gateway.js"
import { postgresMissing, startPostgres } from "../lib/postgres.js"
import { sleep } from "../lib/procs.js"
import { compareP50, withUnit } from "../lib/report.js"
import { openSsh2Session, type Ssh2Session } from "../lib/ssh.js"
import { elapsedMicros, now, summarize } from "../lib/stats.js"
import type { ClientKey } from "../lib/workspace.js"
import { miniServer } from "../lib/workspace.js"

const adminToken = "bench-admin-token-0123456789abcdef"

const adminCall = async (replica: Gateway, path: string, json: unknown) => {
  const response = await fetch(`${replica.keyApiUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${adminToken}` },
    body: JSON.stringify(json),
  })
  const text = await response.text()
  if (response.status !== 200) throw new Error(`${replica.label} ${path}: ${response.status} ${text}`)
  return JSON.parse(text) as Record<string, unknown>
}

/** An MCP session with this key on the replica, tried until the key has reached it (at most 10 s). */
const sessionOnceKnown = async (replica: Gateway, key: ClientKey): Promise<Ssh2Session> => {
  const until = Date.now() + 10_000
  for (;;) {
    try {
      return await openSsh2Session(replica, key, `${replica.label} via ssh2`)
    } catch (error) {
      if (Date.now() > until) throw error
      await sleep(50)
    }
  }
}

/**
 * When the client saw its connection closed (hrtime), or undefined after `timeoutMs`: it never
 * rejects, so a round that fails before waiting for it leaves no rejection behind.
 */
const closedAt = (client: Ssh2Client, timeoutMs: number) =>
  new Promise<bigint | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), timeoutMs)
    client.once("close", () => {
      clearTimeout(timer)
      resolve(now())
    })
  })

export const revocation = async (ctx: Context): Promise<void> => {
  const { results } = ctx
  const missing = postgresMissing()
  if (missing !== undefined) {
    results.note(`revocation: skipped: ${missing}`)
    ctx.log(`revocation: PostgreSQL is not installed: skipped`)
    return
  }
  const sizes = ctx.sizes.revocation
  const cleanups: Array<() => Promise<void>> = []
  try {
    ctx.log("revocation: starting PostgreSQL")
    const pg = await startPostgres()
    cleanups.push(pg.dispose)
    const url = await pg.createDatabase("bench_keys")
    const hostKey = ctx.workspace.key("revocation-host-key")
    const replicas: Array<Gateway> = []
    // One after another: the first applies the migrations (the others would wait on its lock anyway).
    for (let index = 1; index <= 3; index++) {
      const replica = await startGateway(ctx.workspace, {
        servers: { mini: miniServer },
        // The key store is the database; the file the bench's gateways get is not read.
        clientKeys: [],
        hostKeyPath: hostKey.privatePath,
        keyApi: true,
        flags: ["--key-store", url],
        env: { PGPASSWORD: pg.password, MCP_SSH_ADMIN_TOKEN: adminToken },
        name: `pg-replica${index}`,
      })
      cleanups.push(replica.stop)
      replicas.push(replica)
    }

    const local: Array<number> = []
    const propagated: Array<number> = []
    const answered: Array<number> = []
    ctx.log(`revocation: ${sizes.rounds} rounds, a session on each of 3 replicas per round`)
    for (let round = 0; round < sizes.rounds; round++) {
      ctx.checkTime()
      const addedOn = replicas[round % replicas.length]
      const revoker = replicas[(round + 1) % replicas.length]
      if (addedOn === undefined || revoker === undefined) throw new Error("no replica")
      const key = ctx.workspace.key(`revoked-${round}`)
      const added = await adminCall(addedOn, "/admin/keys", { client_pub_key: key.publicLine })
      const opened = await Promise.allSettled(replicas.map((replica) => sessionOnceKnown(replica, key)))
      const sessions = opened.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []))
      const failed = opened.find((result) => result.status === "rejected")
      if (failed !== undefined) {
        await Promise.all(sessions.map((session) => session.close()))
        throw failed.reason
      }
      try {
        const closes = sessions.map((session) => closedAt(session.client, 10_000))
        const sent = now()
        const revoked = await adminCall(revoker, "/admin/keys/revoke", { fingerprint: added.fingerprint })
        answered.push(elapsedMicros(sent) / 1_000)
        if (revoked.removed !== 1) throw new Error(`revoke removed ${String(revoked.removed)} key(s)`)
        const closed = await Promise.all(closes)
        for (const [index, at] of closed.entries()) {
          if (at === undefined)
            throw new Error(
              `the session on ${replicas[index]?.label} was still open 10 s after the revocation`,
            )
          const ms = Number(at - sent) / 1e6
          if (replicas[index] === revoker) local.push(ms)
          else propagated.push(ms)
        }
      } finally {
        // Already closed by the revocation; this only matters when a round failed.
        await Promise.all(sessions.map((session) => session.close()))
      }
    }

    const localSummary = summarize(local)
    const answer = summarize(answered)
    const baseline = results.add({
      scenario: "revocation",
      case: "revoked: the session on the revoking replica",
      unit: "ms",
      p50: localSummary.p50,
      p99: localSummary.p99,
      n: localSummary.n,
      baseline: true,
      versus: [],
      note: "from the admin API's revoke request sent to the connection closed, as the client sees it",
    })
    results.add({
      scenario: "revocation",
      case: "the revoke request answered (admin API, the database write)",
      unit: "ms",
      p50: answer.p50,
      p99: answer.p99,
      n: answer.n,
      versus: [compareP50({ p50: answer.p50, unit: "ms" }, baseline, "the revoking replica's session")],
      note: "advisory write lock, DELETE and history row, NOTIFY, commit",
    })
    const propagatedSummary = summarize(propagated)
    results.add({
      scenario: "revocation",
      case: "revoked: a session on another replica (propagation)",
      unit: "ms",
      p50: propagatedSummary.p50,
      p99: propagatedSummary.p99,
      n: propagatedSummary.n,
      versus: [compareP50({ p50: propagatedSummary.p50, unit: "ms" }, baseline, "the revoking replica")],
      note: `PostgreSQL LISTEN/NOTIFY, then the replica reads the keys again; slowest ${withUnit(propagatedSummary.max, "ms")}; the issue's target: within 1 s`,
    })
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  }
}
