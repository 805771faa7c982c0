/** Sharing settings without IO: the config's bad-input checks, identity substitution, log levels, the budget. */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Either, Exit } from "effect"
import { makeChildBudget } from "../src/gateway/children/ChildBudget.js"
import { leastBusy } from "../src/gateway/children/instancePool.js"
import { logPasses, mostVerbose } from "../src/gateway/children/multiplex.js"
import { spareFits } from "../src/gateway/children/Spares.js"
import { decodeServersConfig, substituteIdentity } from "../src/gateway/config/serversConfig.js"

const problems = (server: Record<string, unknown>) => {
  const decoded = decodeServersConfig({ mcpServers: { s: { command: "x", ...server } } })
  return Either.isLeft(decoded) ? decoded.left : ""
}

describe("sharing config", () => {
  it("accepts the three scopes and the sharing settings", () => {
    for (const scope of ["session", "identity", "shared"]) expect(problems({ scope })).toBe("")
    expect(problems({ scope: "shared", instances: 4, idleTimeout: 0, start: "eager" })).toBe("")
    expect(problems({ spares: 2 })).toBe("")
  })

  it("refuses bad input, naming the field", () => {
    expect(problems({ scope: "global" })).toMatch(/^mcpServers\.s\.scope: .*"global"/)
    expect(problems({ scope: "shared", instances: 0 })).not.toMatch(/\n/)
    expect(problems({ scope: "shared", instances: 0 })).toMatch(/mcpServers\.s\.instances/)
    expect(problems({ scope: "shared", instances: 65 })).toMatch(/mcpServers\.s\.instances/)
    expect(problems({ scope: "identity", spares: 1 })).toMatch(
      /mcpServers\.s\.spares: spares are for scope "session"/,
    )
    expect(problems({ scope: "shared", env: { TOKEN: "${MCP_SSH_IDENTITY}" } })).toMatch(
      /mcpServers\.s\.env\.TOKEN: \$\{MCP_SSH_IDENTITY\} has no value in a shared server/,
    )
    expect(problems({ scope: "shared", args: ["--user", "${MCP_SSH_IDENTITY}"] })).toMatch(
      /mcpServers\.s\.args\.1/,
    )
    expect(problems({ scope: "identity", args: ["${MCP_SSH_IDENTITY}"] })).toBe("")
  })

  it("substitutes plain identities only", () => {
    expect(substituteIdentity("/home/${MCP_SSH_IDENTITY}/x", "alice")).toBe("/home/alice/x")
    expect(substituteIdentity("${MCP_SSH_IDENTITY}", "../etc")).toBeUndefined()
    expect(substituteIdentity("no reference", "../etc")).toBe("no reference")
  })
})

describe("log levels across sessions", () => {
  it("the child gets the most verbose level; each session its own", () => {
    expect(mostVerbose(["error", undefined, "debug", "warning"])).toBe("debug")
    expect(mostVerbose([undefined])).toBeUndefined()
    expect(logPasses("debug", "error")).toBe(false)
    expect(logPasses("critical", "error")).toBe(true)
    expect(logPasses("debug", undefined)).toBe(true)
  })
})

describe("the process budget", () => {
  it.effect("refuses past the gateway's and the identity's limits and gives places back", () =>
    Effect.gen(function* () {
      const budget = makeChildBudget(2, 1)
      const first = yield* Effect.scoped(budget.take("alice").pipe(Effect.map(() => budget.running())))
      expect(first).toBe(1)
      expect(budget.running()).toBe(0)
      const held = yield* Effect.scoped(
        Effect.gen(function* () {
          yield* budget.take("alice")
          const again = yield* Effect.exit(budget.take("alice"))
          yield* budget.take(undefined)
          const full = yield* Effect.exit(budget.take("bob"))
          return { again, full }
        }),
      )
      expect(Exit.isFailure(held.again) && String(held.again.cause)).toMatch(
        /identity 'alice' runs 1 children/,
      )
      expect(Exit.isFailure(held.full) && String(held.full.cause)).toMatch(
        /the gateway runs 2 children, its --max-children limit of 2/,
      )
      expect(budget.running()).toBe(0)
    }),
  )
})

describe("instance routing", () => {
  it("picks the instance with the fewest calls in flight, the first on a tie, none when none is ready", () => {
    const load: Record<number, number> = { 0: 2, 1: 0, 2: 0 }
    expect(leastBusy([0, 1, 2], (index) => load[index] ?? 0)).toBe(1)
    expect(leastBusy([0, 2], (index) => load[index] ?? 0)).toBe(2)
    expect(leastBusy([], () => 0)).toBeUndefined()
  })
})

describe("warm spares", () => {
  const fits = (capabilities: Record<string, unknown>) =>
    spareFits({ protocolVersion: "2025-06-18", capabilities, clientInfo: { name: "c", version: "1" } })
  it("fit a client that asks for no more than a spare was told of", () => {
    expect(fits({})).toBe(true)
    expect(fits({ sampling: {}, elicitation: {}, roots: { listChanged: true } })).toBe(true)
    expect(fits({ elicitation: { form: {} }, roots: {} })).toBe(true)
  })
  it("do not fit a client with more: its own child must hear of it in initialize", () => {
    expect(fits({ elicitation: { url: {} } })).toBe(false)
    expect(fits({ sampling: { tools: {} } })).toBe(false)
    expect(fits({ experimental: { x: {} } })).toBe(false)
    expect(fits({ roots: { listChanged: false } })).toBe(false)
  })
})
