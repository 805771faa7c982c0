/**
 * A child server's process: spawned in its own process group, and stopped with everything it
 * started: stdin closed, then SIGTERM, then SIGKILL, to the group and to the processes that left it.
 */
import { type ChildProcessByStdio, spawn } from "node:child_process"
import type { Readable, Writable } from "node:stream"
import { Deferred, Duration, Effect } from "effect"
import { ErrorCode } from "../../shared/jsonRpc.js"
import type { ChildServer } from "../config/GatewayConfig.js"
import { UpstreamError } from "../errors.js"
import { descendantsOf, isAlive, isSignallablePid, type ProcessHandle } from "./processTree.js"

export type Child = ChildProcessByStdio<Writable, Readable, Readable>

export const describeExit = (code: number | null, signal: NodeJS.Signals | null): string =>
  signal !== null ? `exited on ${signal}` : `exited with code ${code ?? "unknown"}`

/** Signal a whole process group; a group that is already gone is not an error. */
export const signalGroup = (pid: number, signal: NodeJS.Signals | 0): boolean => {
  if (!isSignallablePid(pid)) throw new RangeError(`refusing to signal process group ${pid}`)
  try {
    process.kill(-pid, signal)
    return true
  } catch {
    return false
  }
}

/** A child that did start: its pid is known, so it can be signalled and its group ended. */
export interface Spawned {
  readonly child: Child
  readonly pid: number
}

export const spawnChild = (server: ChildServer) =>
  Effect.async<Spawned, UpstreamError>((resume) => {
    let child: Child
    try {
      child = spawn(server.command, [...server.args], {
        cwd: server.cwd,
        env: server.env,
        stdio: ["pipe", "pipe", "pipe"],
        // Its own process group, so stopping it reaches everything it started.
        detached: true,
      })
    } catch (error) {
      resume(
        Effect.fail(
          new UpstreamError({
            server: server.name,
            code: ErrorCode.ServerUnavailable,
            reason: `could not start: ${error instanceof Error ? error.message : String(error)}`,
          }),
        ),
      )
      return
    }
    const onSpawn = () => {
      child.off("error", onError)
      const pid = child.pid
      if (isSignallablePid(pid)) return resume(Effect.succeed({ child, pid }))
      // Node reports no pid only for a failed spawn; without one nothing could stop it safely.
      child.stdin.destroy()
      child.stdout.destroy()
      child.stderr.destroy()
      resume(
        Effect.fail(
          new UpstreamError({
            server: server.name,
            code: ErrorCode.ServerUnavailable,
            reason: `could not start '${server.command}': the system gave no process id`,
          }),
        ),
      )
    }
    const onError = (error: Error) => {
      child.off("spawn", onSpawn)
      resume(
        Effect.fail(
          new UpstreamError({
            server: server.name,
            code: ErrorCode.ServerUnavailable,
            reason: `could not start '${server.command}': ${error.message}`,
          }),
        ),
      )
    }
    child.once("spawn", onSpawn)
    child.once("error", onError)
  })

/**
 * Close stdin, then SIGTERM, then SIGKILL the child's process group, waiting `grace` between steps.
 * Processes the child moved out of its group (setsid) get the same signals: they are found below it
 * in the process tree while it still runs (once it exits, they are orphans nothing links to it).
 */
export const stopChild = (
  child: Child,
  pid: number,
  exited: Deferred.Deferred<UpstreamError>,
  grace: Duration.Duration,
) =>
  Effect.gen(function* () {
    // Finalizers run uninterruptibly, and a timeout cannot cut short an uninterruptible wait.
    const waitExit = Deferred.await(exited).pipe(Effect.interruptible, Effect.timeout(grace), Effect.option)
    const escaped = new Map<number, ProcessHandle>()
    const noteEscaped = Effect.sync(() => {
      for (const found of descendantsOf(pid)) {
        if (found.processGroup !== pid) escaped.set(found.pid, found)
      }
    })
    const escapedAlive = () => [...escaped.values()].filter(isAlive)
    const signalAll = (signal: NodeJS.Signals) =>
      Effect.sync(() => {
        signalGroup(pid, signal)
        for (const { pid: stray } of escapedAlive()) {
          try {
            process.kill(stray, signal)
          } catch {
            // Gone meanwhile.
          }
        }
      })
    const anyAlive = Effect.sync(() => signalGroup(pid, 0) || escapedAlive().length > 0)
    const waitAllGone = Effect.gen(function* () {
      const until = Date.now() + Duration.toMillis(grace)
      while ((yield* anyAlive) && Date.now() < until) yield* Effect.sleep(Duration.millis(20))
    })
    yield* noteEscaped
    child.stdin.end()
    yield* waitExit
    if (yield* anyAlive) {
      yield* noteEscaped
      yield* signalAll("SIGTERM")
      yield* waitExit
      yield* waitAllGone
    }
    if (yield* anyAlive) {
      yield* signalAll("SIGKILL")
      yield* Effect.logWarning("child did not stop after SIGTERM: killed its process group").pipe(
        Effect.annotateLogs({ pid }),
      )
      yield* waitExit
    }
    if (escaped.size > 0) {
      yield* Effect.logWarning(
        `ended ${escaped.size} process(es) the child had moved out of its process group: ${[...escaped.keys()].join(", ")}`,
      ).pipe(Effect.annotateLogs({ pid }))
    }
  })
