/** The process table, read from /proc: what a process started, and whether it still runs. */
import { readdirSync, readFileSync } from "node:fs"

interface ProcessInfo {
  readonly pid: number
  readonly ppid: number
  readonly pgid: number
  readonly state: string
}

const readStat = (pid: number): ProcessInfo | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { pid, state: fields[0] ?? "", ppid: Number(fields[1]), pgid: Number(fields[2]) }
  } catch {
    return undefined
  }
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

/** Is the process running (a zombie counts as gone)? */
export const isRunning = (pid: number): boolean => {
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
