/**
 * A value loaded from files, answered from memory: loaded again at most every `millis`, or at once
 * after a watch event on one of the files. Logins read the key files at each authentication step;
 * a stat through the thread pool per step costs more than the step itself.
 */
import { watch } from "node:fs"
import { basename, dirname } from "node:path"
import { Effect, type Scope } from "effect"

export interface Recent<A> {
  readonly get: Effect.Effect<A>
  /** The value when memory still answers (fresh, not invalidated), without a fiber: the login path. */
  readonly peek: () => A | undefined
  /** The files changed: the next `get` loads. */
  readonly invalidate: () => void
}

export const recentWithin = <A>(load: Effect.Effect<A>, millis: number): Recent<A> => {
  let value: { readonly loaded: A } | undefined
  let loadedAt = 0
  /** Bumped by each invalidation, so a load that started before one does not count as fresh. */
  let generation = 0
  const invalidate = () => {
    generation++
    value = undefined
  }
  const get = Effect.suspend(() => {
    const now = performance.now()
    if (value !== undefined && now - loadedAt < millis) return Effect.succeed(value.loaded)
    const started = generation
    return Effect.tap(load, (loaded) =>
      Effect.sync(() => {
        if (started !== generation) return
        value = { loaded }
        loadedAt = now
      }),
    )
  })
  const peek = () => (value !== undefined && performance.now() - loadedAt < millis ? value.loaded : undefined)
  return { get, peek, invalidate }
}

/**
 * Call `changed` when something happens to one of the files: their directories are watched, since
 * an atomic write replaces the file. Best effort: where a directory cannot be watched the time bound
 * alone applies.
 */
export const watchFiles = (
  paths: ReadonlyArray<string>,
  changed: () => void,
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.forEach(
    [...new Set(paths.map((path) => dirname(path)))],
    (directory) => {
      const names = new Set(paths.filter((path) => dirname(path) === directory).map((path) => basename(path)))
      return Effect.acquireRelease(
        Effect.sync(() => {
          try {
            const watcher = watch(directory, { persistent: false }, (_event, name) => {
              if (name === null || names.has(name.toString())) changed()
            })
            // A watch that fails later (directory removed) leaves the time bound.
            watcher.on("error", () => {})
            return watcher
          } catch {
            return undefined
          }
        }),
        (watcher) => Effect.sync(() => watcher?.close()),
      )
    },
    { discard: true },
  )
