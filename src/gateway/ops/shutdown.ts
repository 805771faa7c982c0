/**
 * How the serving gateway stops on a signal. The runtime (NodeRuntime.runMain) interrupts the main
 * fiber at the first SIGTERM or SIGINT and then lets Node's default handling end the process at the
 * next one. While the gateway serves, this keeps listening: it remembers which signal came first,
 * and a finalizer that runs before anything else closes drains when it was SIGTERM.
 *
 *   SIGTERM (systemd, Kubernetes, docker stop): drain, then stop; exit 0.
 *   SIGINT (Ctrl-C at a terminal): stop at once, as before; whoever presses it wants it gone now.
 *   A second SIGTERM or SIGINT during the drain: stop at once (calls in flight get -32000).
 *   One more during the stop itself: Node's default, the process ends (the reaper ends the children).
 */
import { Deferred, Effect, Exit, type Scope } from "effect"
import { Drain } from "./Drain.js"

const signals = ["SIGTERM", "SIGINT"] as const

export const drainOnSigterm: Effect.Effect<void, never, Drain | Scope.Scope> = Effect.gen(function* () {
  const drain = yield* Drain
  const cut = yield* Deferred.make<void>()
  let first: NodeJS.Signals | undefined
  const onSignal = (signal: NodeJS.Signals) => {
    if (first === undefined) first = signal
    else Deferred.unsafeDone(cut, Exit.void)
  }
  // Released after the drain below (finalizers run in reverse): from then on a signal ends the process.
  yield* Effect.acquireRelease(
    Effect.sync(() => {
      for (const signal of signals) process.on(signal, onSignal)
    }),
    () =>
      Effect.sync(() => {
        for (const signal of signals) process.off(signal, onSignal)
      }),
  )
  yield* Effect.addFinalizer(() =>
    first === "SIGTERM" ? Effect.asVoid(drain.run(Deferred.await(cut))) : Effect.void,
  )
})
