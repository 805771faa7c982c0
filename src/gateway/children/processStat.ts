/** The fields of a Linux /proc/PID/stat line the gateway needs to follow what a child started. */

export interface ProcessStat {
  /** R, S, D, Z (zombie), T... */
  readonly state: string
  readonly parent: number
  readonly processGroup: number
  /** Clock ticks after boot: with the pid, it names one process even when pids are reused. */
  readonly startTime: string
}

export const parseProcessStat = (line: string): ProcessStat | undefined => {
  // The command name (field 2) may contain spaces and parentheses: the other fields follow the last ')'.
  const close = line.lastIndexOf(")")
  if (close === -1) return undefined
  const fields = line.slice(close + 2).split(" ")
  const [state, parent, processGroup] = fields
  const startTime = fields[19]
  if (state === undefined || parent === undefined || processGroup === undefined || startTime === undefined) {
    return undefined
  }
  return { state, parent: Number(parent), processGroup: Number(processGroup), startTime }
}
