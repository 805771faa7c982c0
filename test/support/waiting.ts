/** Waiting in tests for something that arrives bit by bit: log lines, messages on a channel. */

/** Callbacks run whenever something new has arrived; each pending wait keeps one here. */
export type Watchers = Set<() => void>

/**
 * Resolves with what `find` finds, looking now and each time the watchers run. Rejects with the
 * reason `ended` gives once nothing more can arrive, or with `timedOut()` after `timeoutMs`.
 */
export const waitForMatch = <A>(options: {
  readonly watchers: Watchers
  readonly find: () => A | undefined
  readonly ended?: () => string | undefined
  readonly timeoutMs: number
  readonly timedOut: () => string
}): Promise<A> =>
  new Promise((resolve, reject) => {
    const check = () => {
      const found = options.find()
      if (found !== undefined) {
        cleanup()
        resolve(found)
        return
      }
      const reason = options.ended?.()
      if (reason !== undefined) {
        cleanup()
        reject(new Error(reason))
      }
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(options.timedOut()))
    }, options.timeoutMs)
    const cleanup = () => {
      clearTimeout(timer)
      options.watchers.delete(check)
    }
    options.watchers.add(check)
    check()
  })
