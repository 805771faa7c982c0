/**
 * The running children as the admin sees them. The key API is built beside the sessions (it answers
 * while the servers are probed), so it cannot ask SharedChildren directly: SharedChildren hands its
 * listing to this small service, built first with the other operations services, and the admin
 * endpoint reads it.
 */
import { Context, Effect, Layer, type Scope } from "effect"

/** A running child: who shares it, what it is, how it has done. */
export interface RunningChild {
  readonly server: string
  readonly scope: string
  readonly state: string
  readonly pid: number | undefined
  readonly identity: string | undefined
  readonly sessions: number
  /** Epoch milliseconds when its current life became ready. */
  readonly readySince: number | undefined
  readonly restarts: number
}

export interface ChildRegistryShape {
  readonly list: () => ReadonlyArray<RunningChild>
  /** Where the listing comes from, while the scope is open. */
  readonly provide: (source: () => ReadonlyArray<RunningChild>) => Effect.Effect<void, never, Scope.Scope>
}

export class ChildRegistry extends Context.Tag("mcp-ssh/ChildRegistry")<
  ChildRegistry,
  ChildRegistryShape
>() {}

export const ChildRegistryLive = Layer.sync(ChildRegistry, () => {
  let source: () => ReadonlyArray<RunningChild> = () => []
  return {
    list: () => source(),
    provide: (next) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          source = next
        }),
        () =>
          Effect.sync(() => {
            source = () => []
          }),
      ),
  }
})
