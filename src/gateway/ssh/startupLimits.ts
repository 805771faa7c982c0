/**
 * sshd's MaxStartups for this gateway: a cap on connections that have not authenticated yet, in
 * total and per source address. Pure bookkeeping, owned by the SSH server.
 */
export interface StartupLimitPolicy {
  readonly maxStartups: number
  readonly maxStartupsPerSource: number
}

/** Why a connection was not admitted, for the log. */
export interface StartupRefusal {
  readonly total: number
  readonly fromSource: number
}

export class StartupLimits {
  private total = 0
  private readonly bySource = new Map<string, number>()

  constructor(private readonly policy: StartupLimitPolicy) {}

  /**
   * Count a new unauthenticated connection from `source`: a release function (safe to call more
   * than once) when admitted, else the counts that refused it.
   */
  admit(source: string): (() => void) | StartupRefusal {
    const fromSource = this.bySource.get(source) ?? 0
    if (this.total >= this.policy.maxStartups || fromSource >= this.policy.maxStartupsPerSource) {
      return { total: this.total, fromSource }
    }
    this.total++
    this.bySource.set(source, fromSource + 1)
    let counted = true
    return () => {
      if (!counted) return
      counted = false
      this.total--
      const left = (this.bySource.get(source) ?? 1) - 1
      if (left <= 0) this.bySource.delete(source)
      else this.bySource.set(source, left)
    }
  }
}
