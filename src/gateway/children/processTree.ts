/**
 * What a child process started, read from Linux's /proc. Where there is no /proc (another system),
 * nothing is found and the process group stays the only handle on a child's processes.
 */
import { readdirSync, readFileSync } from "node:fs"
import { type ProcessStat, parseProcessStat } from "./processStat.js"

/**
 * A pid that may be signalled: a positive integer other than init. `kill(0)`, `kill(-1)` and a
 * negated `-1` (pid 1) reach far more than one child, so anything else is refused outright.
 */
export const isSignallablePid = (pid: unknown): pid is number =>
  typeof pid === "number" && Number.isSafeInteger(pid) && pid > 1

/** A process as of now: its pid with its start time, so a reused pid is never mistaken for it. */
export interface ProcessHandle {
  readonly pid: number
  readonly startTime: string
  readonly processGroup: number
}

export const processStat = (pid: number): ProcessStat | undefined => {
  try {
    return parseProcessStat(readFileSync(`/proc/${pid}/stat`, "utf8"))
  } catch {
    return undefined
  }
}

/** The pids of the process's children (Linux 3.5+ lists them per thread). */
const childrenOf = (pid: number): Array<number> => {
  let tasks: Array<string>
  try {
    tasks = readdirSync(`/proc/${pid}/task`)
  } catch {
    return []
  }
  return tasks.flatMap((task) => {
    try {
      return readFileSync(`/proc/${pid}/task/${task}/children`, "utf8")
        .split(" ")
        .filter((pid) => pid !== "")
        .map(Number)
    } catch {
      return []
    }
  })
}

/** Every living process below `pid` in the process tree, wherever it moved its group or session. */
export const descendantsOf = (pid: number): Array<ProcessHandle> => {
  const found: Array<ProcessHandle> = []
  const seen = new Set<number>([pid])
  const pending = childrenOf(pid)
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    if (seen.has(next)) continue
    seen.add(next)
    const stat = processStat(next)
    if (stat === undefined || stat.state === "Z") continue
    found.push({ pid: next, startTime: stat.startTime, processGroup: stat.processGroup })
    pending.push(...childrenOf(next))
  }
  return found
}

/** Is it still that very process, alive (not a zombie, and not a new process under a reused pid)? */
export const isAlive = (handle: Pick<ProcessHandle, "pid" | "startTime">): boolean => {
  const stat = processStat(handle.pid)
  return stat !== undefined && stat.state !== "Z" && stat.startTime === handle.startTime
}
