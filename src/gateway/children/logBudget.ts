/**
 * How much of a child's stderr reaches the gateway's log, as pure functions of the time. In each
 * window at most `maxLines` lines are logged; the rest are only counted, to be reported as one line
 * when the window ends. At most `maxBytes` are read per window: a child that writes faster is made to
 * wait (its stderr pipe fills) instead of costing the gateway CPU for lines nobody will see.
 */

export interface LogBudgetPolicy {
  readonly maxLines: number
  readonly maxBytes: number
  readonly windowMillis: number
}

export interface LogBudget {
  /** Milliseconds (any clock, as long as it is the same one every time). */
  readonly windowStart: number
  readonly lines: number
  readonly bytes: number
  readonly suppressed: number
}

export const freshLogBudget = (now: number): LogBudget => ({
  windowStart: now,
  lines: 0,
  bytes: 0,
  suppressed: 0,
})

/** Start a new window if the current one has ended; `suppressed` is what the ended one held back. */
export const rollOver = (
  budget: LogBudget,
  policy: LogBudgetPolicy,
  now: number,
): { readonly budget: LogBudget; readonly suppressed: number } =>
  now - budget.windowStart < policy.windowMillis
    ? { budget, suppressed: 0 }
    : { budget: freshLogBudget(now), suppressed: budget.suppressed }

/** Account for `bytes` read and the lines they completed; `logged` of those lines may be logged. */
export const admit = (
  budget: LogBudget,
  policy: LogBudgetPolicy,
  bytes: number,
  lines: number,
): { readonly budget: LogBudget; readonly logged: number } => {
  const logged = Math.max(0, Math.min(lines, policy.maxLines - budget.lines))
  return {
    budget: {
      ...budget,
      lines: budget.lines + logged,
      bytes: budget.bytes + bytes,
      suppressed: budget.suppressed + lines - logged,
    },
    logged,
  }
}

/** Milliseconds to wait before reading more: until the window ends once its bytes are used up, else 0. */
export const readPause = (budget: LogBudget, policy: LogBudgetPolicy, now: number): number =>
  budget.bytes < policy.maxBytes ? 0 : Math.max(0, budget.windowStart + policy.windowMillis - now)

/** Milliseconds until the current window ends (when its suppressed lines are to be reported). */
export const untilWindowEnds = (budget: LogBudget, policy: LogBudgetPolicy, now: number): number =>
  Math.max(0, budget.windowStart + policy.windowMillis - now)
