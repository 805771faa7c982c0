/** The process table, read from /proc: what a process started, and whether it still runs. */
import { readdirSync, readFileSync } from "node:fs"
import { isSignallablePid, processStat } from "../../src/gateway/children/processTree.js"

interface ProcessInfo {
  readonly pid: number
  readonly ppid: number
  readonly pgid: number
  readonly state: string
}

/** One process as the tests look at it, read with the gateway's own /proc/PID/stat parser. */
export const readStat = (pid: number): ProcessInfo | undefined => {
  const stat = processStat(pid)
  return stat === undefined
    ? undefined
    : { pid, state: stat.state, ppid: stat.parent, pgid: stat.processGroup }
}

export const allProcesses = (): Array<ProcessInfo> =>
  readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map((name) => readStat(Number(name)))
    .filter((info): info is ProcessInfo => info !== undefined)

const commandOf = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0] ?? ""
  } catch {
    return ""
  }
}

/** Running (not zombie) processes whose parent is `pid`; the gateway's guard process is not counted. */
export const childrenOf = (pid: number): Array<number> =>
  allProcesses()
    .filter((info) => info.ppid === pid && info.state !== "Z" && commandOf(info.pid) !== "mcp-ssh-reaper")
    .map((info) => info.pid)

/** A pid a test may look at or signal; anything else (undefined, 0, -1, 1) fails the test at once. */
export const checkedPid = (pid: number | undefined, what = "process"): number => {
  if (!isSignallablePid(pid)) throw new Error(`no usable pid for the ${what}: ${String(pid)}`)
  return pid
}

/** The single running child of `pid`; none or several fails the test rather than guess. */
export const onlyChildOf = (pid: number): number => {
  const children = childrenOf(checkedPid(pid))
  if (children.length !== 1) throw new Error(`expected one child of ${pid}, found [${children.join(", ")}]`)
  return checkedPid(children[0], "child")
}

/** Signal one process the test found itself; never a group, never a defaulted pid. */
export const signalProcess = (pid: number, signal: NodeJS.Signals): void => {
  process.kill(checkedPid(pid), signal)
}

/** Is the process running (a zombie counts as gone)? */
export const isRunning = (pid: number): boolean => {
  checkedPid(pid)
  const info = readStat(pid)
  return info !== undefined && info.state !== "Z"
}

/** Running processes in any of these process groups. */
export const membersOfGroups = (pgids: ReadonlyArray<number>): Array<number> =>
  allProcesses()
    .filter((info) => pgids.includes(info.pgid) && info.state !== "Z")
    .map((info) => info.pid)

export const waitUntil = async (condition: () => boolean, timeoutMs = 10_000, what = "condition") => {
  const until = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

/** How many file descriptors the process holds open now. */
export const openDescriptorCount = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length

/**
 * Wait until the process holds no more descriptors than it did at `baseline` (sockets and pipes of
 * closed connections are released a little after the peer sees the close).
 */
export const waitForDescriptorsBackTo = (pid: number, baseline: number, timeoutMs = 10_000) =>
  waitUntil(
    () => openDescriptorCount(pid) <= baseline,
    timeoutMs,
    `descriptors of ${pid} back to ${baseline}`,
  )

/** A field of /proc/PID/status in KiB: VmRSS (resident now) or VmHWM (peak since start). */
export const memoryKiB = (pid: number, field: "VmRSS" | "VmHWM"): number => {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  if (match === null) throw new Error(`no ${field} for process ${pid}`)
  return Number(match[1])
}
