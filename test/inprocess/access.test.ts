/**
 * The access policy, in process: identities see only what their groups allow, a call across the line
 * answers exactly as an unknown name does, the rate limit and maxSessions hit at their numbers, and a
 * policy edit takes effect on a live session.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Fiber, TestClock } from "effect"
import {
  type FakeServerScript,
  type FakeTool,
  type InProcessGateway,
  startGateway,
  type TestClient,
  type TestWho,
  text,
} from "../support/inprocess/index.js"

const named = (name: string): FakeTool => ({ name, run: () => Effect.succeed(text(`${name} done`)) })

const github: FakeServerScript = {
  prefix: "gh",
  tools: [named("get_issue"), named("list_repos"), named("create_issue")],
  prompts: [{ name: "summary" }],
  instructions: "github instructions",
}
const files = (read: FakeTool = named("read")): FakeServerScript => ({
  tools: [read, named("delete_all")],
  resources: [{ uri: "files://a" }],
  instructions: "files instructions",
})
const servers = { github, files: files() }

const access = {
  default: { servers: [] },
  groups: {
    dev: { servers: ["github", "files"], deny: ["files__delete_*"] },
    ci: { servers: ["github"], allow: ["gh__get_*", "gh__list_*"] },
  },
}

const dev: TestWho = { identity: "alice", groups: ["dev"] }
const ci: TestWho = { identity: "runner-7", groups: ["ci"] }

const listNames = (client: TestClient, method: "tools/list" | "prompts/list", id: string) =>
  Effect.gen(function* () {
    const names: Array<string> = []
    let cursor: string | undefined
    for (let page = 0; page < 10; page++) {
      const response = yield* client.request(`${id}-${page}`, method, cursor === undefined ? {} : { cursor })
      const result = (response.result ?? {}) as Record<string, unknown>
      const items = (result.tools ?? result.prompts ?? []) as ReadonlyArray<{ name: string }>
      names.push(...items.map((item) => item.name))
      cursor = result.nextCursor as string | undefined
      if (cursor === undefined) break
    }
    return names.sort()
  })

const call = (client: TestClient, id: string | number, name: string) =>
  client.request(id, "tools/call", { name, arguments: {} })

const session = (gateway: InProcessGateway, who: TestWho, selection?: ReadonlyArray<string>) =>
  Effect.gen(function* () {
    const client = yield* gateway.connect({ as: who, ...(selection === undefined ? {} : { selection }) })
    const init = yield* client.initialize()
    return { client, init }
  })

describe("access policy", () => {
  it.scopedLive("two identities see different lists, and a call across the line is an unknown name", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers, access })
      const alice = yield* session(gateway, dev)
      expect(yield* listNames(alice.client, "tools/list", "a")).toEqual([
        "files__read",
        "gh__create_issue",
        "gh__get_issue",
        "gh__list_repos",
      ])
      const filesStarts = gateway.child("files").starts()

      const runner = yield* session(gateway, ci)
      expect(yield* listNames(runner.client, "tools/list", "r")).toEqual(["gh__get_issue", "gh__list_repos"])
      expect(yield* listNames(runner.client, "prompts/list", "p")).toEqual([])
      // A server it may not use is never started for it, and is absent from capabilities and instructions.
      expect(gateway.child("files").starts()).toBe(filesStarts)
      const result = runner.init.result as { capabilities: Record<string, unknown>; instructions?: string }
      expect(result.capabilities.resources).toBeUndefined()
      expect(result.instructions).toContain("github instructions")
      expect(result.instructions).not.toContain("files")
      expect((alice.init.result as { instructions?: string }).instructions).toContain("files instructions")

      // Denied answers exactly as unknown, on a server it has and on one it has not.
      for (const [id, name] of [
        ["c1", "gh__create_issue"],
        ["c2", "files__read"],
        ["c3", "files__delete_all"],
      ] as const) {
        expect(yield* call(runner.client, id, name)).toEqual({
          jsonrpc: "2.0",
          id,
          error: { code: -32602, message: `Unknown tool: ${name}` },
        })
      }
      expect(yield* call(runner.client, "c4", "gh__no_such_tool")).toEqual({
        jsonrpc: "2.0",
        id: "c4",
        error: { code: -32602, message: "Unknown tool: gh__no_such_tool" },
      })
      expect(
        yield* runner.client.request("p1", "prompts/get", { name: "gh__summary", arguments: {} }),
      ).toMatchObject({ error: { code: -32602, message: "Unknown prompt: gh__summary" } })
      // Resources follow their server.
      expect(yield* runner.client.request("r1", "resources/read", { uri: "files://a" })).toMatchObject({
        error: { code: -32002, message: "Resource not found: files://a" },
      })
      expect(yield* call(runner.client, "ok", "gh__get_issue")).toMatchObject({
        result: text("get_issue done"),
      })
      // No denied call reached a child.
      const calledTools = gateway
        .child("github")
        .received.all()
        .flatMap((message) =>
          "method" in message && message.method === "tools/call"
            ? [String((message.params as { name?: unknown } | undefined)?.name)]
            : [],
        )
      expect(calledTools).toEqual(["get_issue"])

      // alice: dev denies files__delete_*, whatever else dev allows.
      expect(yield* call(alice.client, "d1", "files__delete_all")).toMatchObject({
        error: { code: -32602, message: "Unknown tool: files__delete_all" },
      })
      expect(yield* call(alice.client, "d2", "files__read")).toMatchObject({ result: text("read done") })
    }),
  )

  it.scopedLive("naming a server it may not use gets the unknown-server answer", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers, access })
      const denied = yield* gateway.connect({ as: ci, selection: ["files"] })
      expect(yield* denied.exit).toBe(1)
      const unknown = yield* gateway.connect({ as: ci, selection: ["nope"] })
      expect(yield* unknown.exit).toBe(1)
      expect(denied.stderr()).toBe("mcp-ssh: unknown server(s): files; available: github\n")
      expect(unknown.stderr()).toBe("mcp-ssh: unknown server(s): nope; available: github\n")
    }),
  )

  it.scoped(
    "the rate limit refuses the call after its number, across sessions, until the bucket refills",
    () =>
      Effect.gen(function* () {
        const limited = {
          ...access,
          groups: { ...access.groups, ci: { ...access.groups.ci, rateLimit: "3/min" } },
        }
        const gateway = yield* startGateway({ servers, access: limited })
        const first = yield* session(gateway, ci)
        const second = yield* session(gateway, ci)
        const other = yield* session(gateway, { identity: "runner-8", groups: ["ci"] })
        expect(yield* call(first.client, 1, "gh__get_issue")).toMatchObject({
          result: text("get_issue done"),
        })
        expect(yield* call(second.client, 2, "gh__get_issue")).toMatchObject({
          result: text("get_issue done"),
        })
        // Lists do not count; calls of any kind do, answered or not.
        expect(yield* listNames(first.client, "tools/list", "l")).toHaveLength(2)
        expect(yield* call(first.client, 3, "gh__no_such_tool")).toMatchObject({ error: { code: -32602 } })
        const refused = {
          error: {
            code: -32000,
            message: "rate limit of 3/min reached for identity 'runner-7'; retry in 20 s",
            data: { retryAfterSeconds: 20 },
          },
        }
        expect(yield* call(second.client, 4, "gh__get_issue")).toMatchObject(refused)
        expect(yield* first.client.request(5, "prompts/get", { name: "gh__summary" })).toMatchObject(refused)
        // Another identity has a bucket of its own.
        expect(yield* call(other.client, 6, "gh__get_issue")).toMatchObject({
          result: text("get_issue done"),
        })

        // 3/min refills one call every 20 s: one more, then refused again.
        yield* TestClock.adjust("19 seconds")
        expect(yield* call(first.client, 7, "gh__get_issue")).toMatchObject({
          error: { code: -32000, data: { retryAfterSeconds: 1 } },
        })
        yield* TestClock.adjust("1 second")
        expect(yield* call(first.client, 8, "gh__get_issue")).toMatchObject({
          result: text("get_issue done"),
        })
        expect(yield* call(second.client, 9, "gh__get_issue")).toMatchObject(refused)
      }),
  )

  it.scopedLive("maxSessions refuses the session after its number, with the reason, until one closes", () =>
    Effect.gen(function* () {
      const limited = { ...access, groups: { ...access.groups, ci: { ...access.groups.ci, maxSessions: 2 } } }
      const gateway = yield* startGateway({ servers, access: limited })
      const first = yield* session(gateway, ci)
      yield* session(gateway, ci)
      const third = yield* gateway.connect({ as: ci })
      expect(yield* third.exit).toBe(1)
      expect(third.stderr()).toBe(
        "mcp-ssh: identity 'runner-7' already has 2 session(s) open, the most its access policy allows (maxSessions); close one and try again\n",
      )
      expect(gateway.logs.all().some((line) => line.includes("refused session: identity 'runner-7'"))).toBe(
        true,
      )
      // Another identity, and identities without the limit, are not counted against it.
      yield* session(gateway, { identity: "runner-8", groups: ["ci"] })
      yield* session(gateway, dev)
      yield* session(gateway, dev)
      yield* session(gateway, dev)

      yield* first.client.close
      yield* first.client.exit
      const again = yield* session(gateway, ci)
      expect(yield* call(again.client, 1, "gh__get_issue")).toMatchObject({ result: text("get_issue done") })
    }),
  )

  it.scopedLive(
    "a policy edit takes effect on a live session: list_changed, then calls fail; a call in flight finishes",
    () =>
      Effect.gen(function* () {
        const gate = yield* Deferred.make<void>()
        const gatedRead: FakeTool = {
          name: "read",
          run: () => Deferred.await(gate).pipe(Effect.as(text("read done"))),
        }
        const live = { github, files: files(gatedRead) }
        const gateway = yield* startGateway({ servers: live, access })
        const alice = yield* session(gateway, dev)
        const runner = yield* session(gateway, ci)
        expect(yield* listNames(alice.client, "tools/list", "a")).toHaveLength(4)
        const inFlight = yield* Effect.fork(call(alice.client, "slow", "files__read"))
        yield* gateway.child("files").received.waitFor((message) => message.method === "tools/call")

        // dev loses files and gh__create_issue; ci is not touched.
        yield* gateway.reload(live, {
          ...access,
          groups: { ...access.groups, dev: { servers: ["github"], deny: ["gh__create_*"] } },
        })
        yield* alice.client.notification("notifications/tools/list_changed")
        expect(yield* listNames(alice.client, "tools/list", "b")).toEqual(["gh__get_issue", "gh__list_repos"])
        expect(yield* call(alice.client, 1, "gh__create_issue")).toMatchObject({
          error: { code: -32602, message: "Unknown tool: gh__create_issue" },
        })

        yield* Deferred.succeed(gate, undefined)
        expect(yield* Fiber.join(inFlight)).toMatchObject({ result: text("read done") })
        expect(yield* call(alice.client, 2, "files__read")).toMatchObject({
          error: { code: -32602, message: "Unknown tool: files__read" },
        })
        // Its files child stops once drained.
        yield* Effect.sleep("100 millis")
        expect(gateway.child("files").running()).toBe(false)
        expect(
          runner.client.messages
            .all()
            .some((message) => message.method === "notifications/tools/list_changed"),
        ).toBe(false)

        // Given back: the names return with the next list.
        yield* gateway.reload(live, access)
        yield* alice.client.notification("notifications/tools/list_changed")
        expect(yield* call(alice.client, 3, "gh__create_issue")).toMatchObject({
          result: text("create_issue done"),
        })
        expect(yield* listNames(alice.client, "tools/list", "c")).toHaveLength(4)
      }),
  )
})
