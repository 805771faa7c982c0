/** What arrives over time in an in-process test (messages, log lines, audit entries), and waits on it. */
import { Effect } from "effect"

/**
 * A wait that finds nothing fails after this much real time, with what was seen, rather than letting
 * the test time out without a word. Real time on purpose: the TestClock does not move on its own.
 */
const giveUpAfterMillis = 5_000

const describeItem = (item: unknown): string => (typeof item === "string" ? item : JSON.stringify(item))

export class Recorded<A> {
  private readonly items: Array<A> = []
  private readonly watchers = new Set<() => void>()

  constructor(private readonly what: string) {}

  push(item: A): void {
    this.items.push(item)
    for (const watcher of [...this.watchers]) watcher()
  }

  all(): ReadonlyArray<A> {
    return this.items
  }

  get length(): number {
    return this.items.length
  }

  filter(match: (item: A, index: number) => boolean): ReadonlyArray<A> {
    return this.items.filter(match)
  }

  /** The first item at index `from` or later that matches, seen already or still to come. */
  waitFor(match: (item: A, index: number) => boolean, from = 0): Effect.Effect<A> {
    return this.waitForIndex(match, from).pipe(Effect.map((index) => this.items[index] as A))
  }

  /** Like waitFor, giving the index of the item. */
  waitForIndex(match: (item: A, index: number) => boolean, from = 0): Effect.Effect<number> {
    return Effect.async<number>((resume) => {
      const find = () => {
        for (let index = from; index < this.items.length; index++) {
          if (match(this.items[index] as A, index)) return index
        }
        return undefined
      }
      const found = find()
      if (found !== undefined) return resume(Effect.succeed(found))
      const check = () => {
        const index = find()
        if (index === undefined) return
        cleanup()
        resume(Effect.succeed(index))
      }
      const timer = setTimeout(() => {
        cleanup()
        resume(
          Effect.dieMessage(
            `no matching ${this.what} within ${giveUpAfterMillis} ms; saw:\n${this.items.map(describeItem).join("\n")}`,
          ),
        )
      }, giveUpAfterMillis)
      const cleanup = () => {
        clearTimeout(timer)
        this.watchers.delete(check)
      }
      this.watchers.add(check)
      return Effect.sync(cleanup)
    })
  }

  /** Completes once `count` items match. */
  waitForCount(match: (item: A, index: number) => boolean, count: number): Effect.Effect<void> {
    return Effect.gen(this, function* () {
      let from = 0
      for (let seen = 0; seen < count; seen++) {
        from = (yield* this.waitForIndex(match, from)) + 1
      }
    })
  }
}
