/**
 * The process budget: how many children the gateway runs at once (--max-children), and how many one
 * identity's sessions may run (--max-children-per-identity). A child takes a place before it is
 * spawned and gives it back when it has gone; a child that finds no place does not start, and only
 * that server of that session says so.
 */
import { Context, Data, Effect, Layer, type Scope } from "effect"
import { GatewayConfig } from "../config/GatewayConfig.js"

export class BudgetExceeded extends Data.TaggedError("BudgetExceeded")<{
  readonly running: number
  readonly limit: number
  /** Set when the identity's own limit was the one reached. */
  readonly identity?: string | undefined
}> {
  override get message(): string {
    return this.identity === undefined
      ? `cannot start: the gateway runs ${this.running} children, its --max-children limit of ${this.limit}`
      : `cannot start: identity '${this.identity}' runs ${this.running} children, the --max-children-per-identity limit of ${this.limit}`
  }
}

export interface ChildBudgetShape {
  /** A place for one child until the scope closes; `identity` for a child of that identity's alone. */
  readonly take: (identity: string | undefined) => Effect.Effect<void, BudgetExceeded, Scope.Scope>
  readonly running: () => number
}

export class ChildBudget extends Context.Tag("mcp-ssh/ChildBudget")<ChildBudget, ChildBudgetShape>() {}

export const makeChildBudget = (limit: number, perIdentity: number | undefined): ChildBudgetShape => {
  let running = 0
  const byIdentity = new Map<string, number>()
  const take = (identity: string | undefined) =>
    Effect.acquireRelease(
      Effect.suspend(() => {
        if (running >= limit) return Effect.fail(new BudgetExceeded({ running, limit }))
        const mine = identity === undefined ? 0 : (byIdentity.get(identity) ?? 0)
        if (identity !== undefined && perIdentity !== undefined && mine >= perIdentity)
          return Effect.fail(new BudgetExceeded({ running: mine, limit: perIdentity, identity }))
        running++
        if (identity !== undefined) byIdentity.set(identity, mine + 1)
        return Effect.void
      }),
      () =>
        Effect.sync(() => {
          running--
          if (identity === undefined) return
          const left = (byIdentity.get(identity) ?? 1) - 1
          if (left === 0) byIdentity.delete(identity)
          else byIdentity.set(identity, left)
        }),
    )
  return { take, running: () => running }
}

export const ChildBudgetLive = Layer.effect(
  ChildBudget,
  Effect.map(GatewayConfig, ({ settings }) =>
    makeChildBudget(settings.maxChildren, settings.maxChildrenPerIdentity),
  ),
)
