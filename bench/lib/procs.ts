/**
 * Every process the bench starts goes through `spawnTracked`: it runs in its own process group, and
 * `stopAll` (called in finally blocks, on SIGINT/SIGTERM and at exit) ends each group and everything
 * below it. Also the /proc readers the memory figures come from.
 */
import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process"
import { readdirSync, readFileSync, writeFileSync } from "node:fs"

export interface Tracked {
  readonly name: string
  readonly child: ChildProcess
  readonly pid: number
  readonly exited: Promise<void>
}

const tracked = new Set<Tracked>()

const isGone = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null

/**
 * The environment of every process the bench starts: its own, without NODE_* variables. vite-node
 * sets NODE_ENV, and a NODE_EXTRA_CA_CERTS (set on some machines) makes every Node process parse a CA
 * bundle at start (~35 ms here): neither belongs to what is measured. The gateway passes its children
 * a small safe set anyway.
 */
export const benchEnv: NodeJS.ProcessEnv = Object.fromEntries(
  Object.entries(process.env).filter(([key]) => !key.startsWith("NODE_")),
)

/** Spawn in a new process group (so the whole group can be signalled) and remember it for cleanup. */
export const spawnTracked = (
  name: string,
  command: string,
  args: ReadonlyArray<string>,
  options: SpawnOptions = {},
): Tracked => {
  const child = spawn(command, [...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env: benchEnv,
    ...options,
    detached: true,
  })
  if (child.pid === undefined) throw new Error(`could not start ${name} (${command})`)
  const exited = new Promise<void>((resolve) => {
    if (isGone(child)) resolve()
    child.once("exit", () => resolve())
    child.once("error", () => resolve())
  })
  const entry: Tracked = { name, child, pid: child.pid, exited }
  tracked.add(entry)
  void exited.then(() => tracked.delete(entry))
  // Broken pipes to a process that died are reported through its exit, not as crashes of the bench.
  child.stdin?.on("error", () => {})
  child.stdout?.on("error", () => {})
  child.stderr?.on("error", () => {})
  return entry
}

interface ProcStat {
  readonly pid: number
  readonly ppid: number
  readonly state: string
}

const readStat = (pid: number): ProcStat | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { pid, state: fields[0] ?? "", ppid: Number(fields[1]) }
  } catch {
    return undefined
  }
}

const allStats = (): Array<ProcStat> =>
  readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .map((name) => readStat(Number(name)))
    .filter((stat): stat is ProcStat => stat !== undefined && stat.state !== "Z")

/** Every live process below `pid` (children, grandchildren...), read from /proc. */
export const descendants = (pid: number): Array<number> => {
  const byParent = new Map<number, Array<number>>()
  for (const stat of allStats()) {
    const siblings = byParent.get(stat.ppid) ?? []
    siblings.push(stat.pid)
    byParent.set(stat.ppid, siblings)
  }
  const found: Array<number> = []
  const queue = [...(byParent.get(pid) ?? [])]
  while (queue.length > 0) {
    const next = queue.shift()
    if (next === undefined) break
    found.push(next)
    queue.push(...(byParent.get(next) ?? []))
  }
  return found
}

/**
 * The processes an idle server keeps below it (the gateway keeps a reaper process, for one), once
 * that set has been stable for 300 ms (at most 3 s), so that "its sessions' children are gone" can
 * be told apart from "it has no child at all".
 */
export const helpersOf = async (pid: number): Promise<ReadonlySet<number>> => {
  const until = Date.now() + 3_000
  let previous = descendants(pid).sort().join(",")
  while (Date.now() < until) {
    await sleep(300)
    const current = descendants(pid).sort().join(",")
    if (current === previous) break
    previous = current
  }
  return new Set(descendants(pid))
}

/** The processes below `pid` that are not among its `helpers`: the children of its sessions. */
export const sessionProcesses = (pid: number, helpers: ReadonlySet<number>): Array<number> =>
  descendants(pid).filter((child) => !helpers.has(child))

/** Wait until the server has no session processes left (the last session's child stopped). */
export const waitSessionsGone = (pid: number, helpers: ReadonlySet<number>, timeoutMs = 10_000) =>
  waitFor(() => sessionProcesses(pid, helpers).length === 0, timeoutMs, 20)

export const isAlive = (pid: number): boolean => {
  const stat = readStat(pid)
  return stat !== undefined && stat.state !== "Z"
}

const signal = (pid: number, sig: NodeJS.Signals): void => {
  // Never 0, -1 or a negated 1: those reach the bench's own group, every process, or init's group.
  if (!Number.isSafeInteger(pid) || Math.abs(pid) <= 1) throw new RangeError(`refusing to signal ${pid}`)
  try {
    process.kill(pid, sig)
  } catch {
    // Already gone.
  }
}

const signalGroup = (pgid: number, sig: NodeJS.Signals): void => signal(-pgid, sig)

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** Whether `promise` settled within `ms` (its timer cleared either way, so nothing lingers). */
export const within = async (promise: Promise<unknown>, ms: number): Promise<boolean> => {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  try {
    return await Promise.race([promise.then(() => true), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** Wait until `condition` holds or `timeoutMs` passes; returns whether it held. */
export const waitFor = async (condition: () => boolean, timeoutMs: number, stepMs = 20): Promise<boolean> => {
  const until = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > until) return false
    await sleep(stepMs)
  }
  return true
}

/**
 * SIGTERM the process's group and every process below it (collected first: once a parent dies its
 * children are re-parented and can no longer be found), wait up to `graceMs`, then SIGKILL what is left.
 */
export const stopTracked = async (entry: Tracked, graceMs = 5_000): Promise<void> => {
  const below = descendants(entry.pid)
  if (!isGone(entry.child)) signalGroup(entry.pid, "SIGTERM")
  for (const pid of below) signal(pid, "SIGTERM")
  const everyone = [entry.pid, ...below]
  await waitFor(() => isGone(entry.child) && !below.some(isAlive), graceMs)
  for (const pid of everyone) {
    if (pid !== entry.pid && isAlive(pid)) signal(pid, "SIGKILL")
  }
  if (!isGone(entry.child)) signalGroup(entry.pid, "SIGKILL")
  for (const pid of below) if (isAlive(pid)) signal(pid, "SIGKILL")
  await within(entry.exited, 2_000)
  tracked.delete(entry)
}

/** Stop every process the bench started and is still running. */
export const stopAll = async (graceMs = 3_000): Promise<void> => {
  await Promise.all([...tracked].map((entry) => stopTracked(entry, graceMs)))
}

/** Last resort, synchronous (process 'exit'): SIGKILL every group still tracked and what is below it. */
export const killAllNow = (): void => {
  for (const entry of tracked) {
    const below = descendants(entry.pid)
    signalGroup(entry.pid, "SIGKILL")
    for (const pid of below) signal(pid, "SIGKILL")
  }
  tracked.clear()
}

export const trackedCount = () => tracked.size

const statusField = (pid: number, field: string): number | undefined => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8")
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)
    return match?.[1] === undefined ? undefined : Number(match[1])
  } catch {
    return undefined
  }
}

/** CPU time used so far by all threads of a process, in µs (the schedstat of each of its tasks), NaN if gone. */
export const cpuMicros = (pid: number): number => {
  try {
    let nanos = 0
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const first = readFileSync(`/proc/${pid}/task/${task}/schedstat`, "utf8").split(" ")[0]
      nanos += Number(first ?? 0)
    }
    return nanos / 1_000
  } catch {
    return Number.NaN
  }
}

/** CPU time of a set of processes, in µs (processes that are gone count as 0). */
export const cpuMicrosOf = (pids: ReadonlyArray<number>): number =>
  pids.map(cpuMicros).reduce((sum, value) => sum + (Number.isNaN(value) ? 0 : value), 0)

/** The process's command name (/proc/PID/comm), "" when it is gone. */
export const commandName = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/comm`, "utf8").trim()
  } catch {
    return ""
  }
}

/** Resident set size in KiB (VmRSS). */
export const rssKiB = (pid: number): number => statusField(pid, "VmRSS") ?? Number.NaN

/** Peak resident set size in KiB since start or the last `resetPeak` (VmHWM). */
export const peakRssKiB = (pid: number): number => statusField(pid, "VmHWM") ?? Number.NaN

/** Reset VmHWM to the current RSS (Linux >= 4.0, needs to own the process); false if not possible. */
export const resetPeak = (pid: number): boolean => {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5")
    return true
  } catch {
    return false
  }
}

/** Proportional set size in KiB: shared pages split among the processes that map them. */
export const pssKiB = (pid: number): number => {
  try {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8")
    const match = /^Pss:\s+(\d+) kB/m.exec(rollup)
    return match?.[1] === undefined ? Number.NaN : Number(match[1])
  } catch {
    return Number.NaN
  }
}

/** Median of `count` samples of `read`, `intervalMs` apart. */
export const sampleMedian = async (read: () => number, count = 5, intervalMs = 200): Promise<number> => {
  const values: Array<number> = []
  for (let index = 0; index < count; index++) {
    if (index > 0) await sleep(intervalMs)
    values.push(read())
  }
  values.sort((a, b) => a - b)
  return values[Math.floor(values.length / 2)] ?? Number.NaN
}
