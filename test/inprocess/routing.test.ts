/**
 * Routing through the merged server, in process: every request reaches the child that owns its name,
 * URI or task, and what children send comes back to the right caller.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  type FakeServerScript,
  type FakeTool,
  type InProcessGateway,
  startGateway,
  text,
} from "../support/inprocess/index.js"

const echo: FakeTool = {
  name: "echo",
  run: (call) => Effect.succeed(text(`Echo: ${String(call.arguments.message)}`)),
}
const longRunning: FakeTool = {
  name: "long-running",
  run: (call) =>
    Effect.gen(function* () {
      const steps = Number(call.arguments.steps ?? 1)
      for (let step = 1; step <= steps; step++) yield* call.progress(step, steps)
      return text(`done after ${steps} steps`)
    }),
}
const hangs: FakeTool = { name: "hangs", run: () => Effect.never }
const research: FakeTool = {
  name: "research",
  run: (call) => Effect.succeed(text(`research on ${String(call.arguments.topic)}`)),
}

/** Two servers alike (as two instances of one server), each with everything a server can offer. */
const complete: FakeServerScript = {
  tools: [echo, longRunning, hangs, research],
  prompts: [{ name: "args-prompt" }, { name: "completable-prompt" }],
  resources: [{ uri: "demo://resource/static/1" }],
  resourceTemplates: [{ uriTemplate: "demo://resource/dynamic/text/{resourceId}" }],
  logging: true,
  complete: (params) => {
    const argument = params.argument as { value?: string } | undefined
    return ["Engineering", "Marketing", "Sales"].filter((value) => value.startsWith(argument?.value ?? ""))
  },
  tasks: true,
}
const paged: FakeServerScript = {
  tools: [
    echo,
    { name: "sleep" },
    {
      name: "updated",
      run: (call) =>
        Effect.gen(function* () {
          for (const uri of ["mini://a", "mini://b"]) {
            yield* call.notify("notifications/resources/updated", { uri })
          }
          return text("announced")
        }),
    },
  ],
  resources: [{ uri: "mini://a" }, { uri: "mini://b" }],
  pageSize: 1,
}

const servers = { alpha: complete, beta: complete, paged }

/** A gateway of the three servers and an initialized session on it. */
const session = (options: { readonly recordAudit?: boolean } = {}) =>
  Effect.gen(function* () {
    const gateway = yield* startGateway({ servers, ...options })
    const client = yield* gateway.connect()
    yield* client.initialize()
    return { gateway, client }
  })

const receivedBy = (gateway: InProcessGateway, server: string, method: string) =>
  gateway
    .child(server)
    .received.filter((message) => message.method === method)
    .map((message) => message.params)

describe("routing", () => {
  it.scopedLive("calls a tool of each child by its merged name, and the child sees its own name", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* session()
      for (const [id, server] of [
        [1, "alpha"],
        [2, "beta"],
      ] as const) {
        expect(
          yield* client.request(id, "tools/call", {
            name: `${server}__echo`,
            arguments: { message: server },
          }),
        ).toMatchObject({ id, result: { content: [{ type: "text", text: `Echo: ${server}` }] } })
        expect(receivedBy(gateway, server, "tools/call")).toEqual([
          { name: "echo", arguments: { message: server } },
        ])
      }
      expect(yield* client.request(3, "tools/call", { name: "nobody__echo", arguments: {} })).toMatchObject({
        error: { code: -32602, message: "Unknown tool: nobody__echo" },
      })
    }),
  )

  it.scopedLive("gets prompts with arguments from the right child", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* session()
      const prompt = yield* client.request(1, "prompts/get", {
        name: "beta__args-prompt",
        arguments: { city: "Porto", state: "PT" },
      })
      expect(JSON.stringify(prompt.result)).toContain("Porto")
      expect(receivedBy(gateway, "beta", "prompts/get")).toEqual([
        { name: "args-prompt", arguments: { city: "Porto", state: "PT" } },
      ])
      expect(receivedBy(gateway, "alpha", "prompts/get")).toEqual([])
      expect(
        yield* client.request(2, "prompts/get", { name: "nobody__args-prompt", arguments: {} }),
      ).toMatchObject({ error: { message: expect.stringMatching(/Unknown prompt/) } })
    }),
  )

  it.scopedLive("reads listed and templated resources under their own URIs, and refuses unknown ones", () =>
    Effect.gen(function* () {
      const { client } = yield* session()
      const { resources } = (yield* client.request(1, "resources/list")).result as {
        resources: Array<{ uri: string }>
      }
      const listed = resources.find((resource) => resource.uri.startsWith("demo://"))
      expect(listed).toBeDefined()
      const read = yield* client.request(2, "resources/read", { uri: listed?.uri ?? "" })
      expect((read.result as { contents: Array<{ uri: string }> }).contents[0]?.uri).toBe(listed?.uri)
      const templates = (yield* client.request(3, "resources/templates/list")).result as {
        resourceTemplates: Array<{ uriTemplate: string }>
      }
      expect(templates.resourceTemplates.map((template) => template.uriTemplate)).toContain(
        "demo://resource/dynamic/text/{resourceId}",
      )
      const templated = yield* client.request(4, "resources/read", { uri: "demo://resource/dynamic/text/42" })
      expect(JSON.stringify(templated.result)).toContain("42")
      const mini = yield* client.request(5, "resources/read", { uri: "mini://b" })
      expect(mini.result).toEqual({
        contents: [{ uri: "mini://b", mimeType: "text/plain", text: "content of mini://b" }],
      })
      expect(yield* client.request(6, "resources/read", { uri: "nowhere://at/all" })).toMatchObject({
        error: { code: -32002, message: expect.stringMatching(/Resource not found/) },
      })
    }),
  )

  it.scopedLive("delivers resources/updated for subscribed URIs only", () =>
    Effect.gen(function* () {
      const { client } = yield* session()
      yield* client.request(1, "resources/subscribe", { uri: "mini://a" })
      yield* client.request(2, "tools/call", { name: "paged__updated", arguments: {} })
      yield* client.notification("notifications/resources/updated", (params) => params.uri === "mini://a")
      // The child announced mini://b before it answered, so its update would have come by now.
      expect(client.messages.filter((m) => JSON.stringify(m.params ?? {}).includes("mini://b"))).toEqual([])
      yield* client.request(3, "resources/unsubscribe", { uri: "mini://a" })
    }),
  )

  it.scopedLive("completes prompt arguments through the prompt's owner", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* session()
      const completion = yield* client.request(1, "completion/complete", {
        ref: { type: "ref/prompt", name: "alpha__completable-prompt" },
        argument: { name: "department", value: "Eng" },
      })
      expect((completion.result as { completion: { values: Array<string> } }).completion.values).toContain(
        "Engineering",
      )
      expect(receivedBy(gateway, "alpha", "completion/complete")).toEqual([
        {
          ref: { type: "ref/prompt", name: "completable-prompt" },
          argument: { name: "department", value: "Eng" },
        },
      ])
    }),
  )

  it.scopedLive("fans logging/setLevel out and tags log messages with the server's name", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({
        servers: {
          ...servers,
          alpha: {
            ...complete,
            tools: [
              {
                name: "log",
                run: (call) =>
                  Effect.gen(function* () {
                    yield* call.log("debug", "Subscribe Resource request")
                    yield* call.log("info", "from a part of it", "storage")
                    return text("logged")
                  }),
              },
            ],
          },
        },
      })
      const client = yield* gateway.connect()
      yield* client.initialize()
      expect(yield* client.request(1, "logging/setLevel", { level: "debug" })).toMatchObject({ result: {} })
      // Every child that logs hears the level; the one that does not is left alone.
      expect(receivedBy(gateway, "alpha", "logging/setLevel")).toEqual([{ level: "debug" }])
      expect(receivedBy(gateway, "beta", "logging/setLevel")).toEqual([{ level: "debug" }])
      expect(receivedBy(gateway, "paged", "logging/setLevel")).toEqual([])
      yield* client.request(2, "tools/call", { name: "alpha__log", arguments: {} })
      const message = yield* client.notification("notifications/message", (params) =>
        String(params.data).includes("Subscribe Resource request"),
      )
      expect((message.params as { logger: string }).logger).toMatch(/^alpha/)
      expect(yield* client.notification("notifications/message")).toMatchObject({
        params: { level: "info", logger: "alpha/storage", data: "from a part of it" },
      })
    }),
  )

  it.scopedLive("brings progress back to the caller with its own token, before the result", () =>
    Effect.gen(function* () {
      const { client } = yield* session()
      yield* client.request(1, "tools/list")
      yield* client.request(2, "tools/call", {
        name: "beta__long-running",
        arguments: { steps: 3 },
        _meta: { progressToken: "my-token" },
      })
      const seen = client.messages
        .filter((m) => m.method === "notifications/progress" || m.id === 2)
        .map((m) => {
          if (m.id === 2) return "result"
          const params = m.params as { progressToken: string; progress: number }
          return `${params.progressToken}:${params.progress}`
        })
      expect(seen).toEqual(["my-token:1", "my-token:2", "my-token:3", "result"])
    }),
  )

  it.scopedLive(
    "cancels a call at the child with the child's own id, answers it with nothing, and goes on",
    () =>
      Effect.gen(function* () {
        const { gateway, client } = yield* session({ recordAudit: true })
        yield* client.request(9, "tools/list")
        yield* client.sendRequest(10, "tools/call", { name: "alpha__hangs", arguments: {} })
        // Cancel once the call has reached the child (a call cancelled before that just never goes out).
        const reached = yield* gateway.child("alpha").received.waitFor((m) => m.method === "tools/call")
        yield* client.notify("notifications/cancelled", { requestId: 10, reason: "test" })
        // The child hears of it with the id the gateway gave the request.
        yield* gateway
          .child("alpha")
          .received.waitFor(
            (m) =>
              m.method === "notifications/cancelled" &&
              (m.params as { requestId: unknown }).requestId === reached.id,
          )
        expect(reached.id).not.toBe(10)
        yield* gateway.audit.waitFor(
          (entry) => entry.method === "tools/call" && entry.outcome === "cancelled",
        )
        expect(yield* client.request(11, "ping")).toMatchObject({ id: 11, result: {} })
        const echoed = yield* client.request(12, "tools/call", {
          name: "alpha__echo",
          arguments: { message: "after" },
        })
        expect(echoed.result).toEqual({ content: [{ type: "text", text: "Echo: after" }] })
        // The answer to 12 went through the same child after the cancellation: nothing for 10 is coming.
        expect(client.messages.filter((m) => m.id === 10)).toEqual([])
      }),
  )

  it.scopedLive("routes a task to the child that created it", () =>
    Effect.gen(function* () {
      const { gateway, client } = yield* session()
      const created = yield* client.request(1, "tools/call", {
        name: "beta__research",
        arguments: { topic: "gateways", ambiguous: false },
        task: { ttl: 60_000 },
      })
      const taskId = (created.result as { task: { taskId: string } }).task.taskId
      expect(typeof taskId).toBe("string")
      expect(yield* client.request(2, "tasks/get", { taskId })).toMatchObject({ result: { taskId } })
      const final = yield* client.request(3, "tasks/result", { taskId })
      expect(JSON.stringify(final.result)).toContain("gateways")
      expect(yield* client.request(4, "tasks/get", { taskId: "no-such-task" })).toMatchObject({
        error: { code: -32602 },
      })
      expect(receivedBy(gateway, "beta", "tasks/result")).toEqual([{ taskId }])
      expect(receivedBy(gateway, "alpha", "tasks/result")).toEqual([])
    }),
  )

  it.scopedLive("serves only the servers an exec command names", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers })
      const client = yield* gateway.connect({ selection: ["paged"] })
      yield* client.initialize()
      const names = JSON.stringify(yield* client.request(2, "tools/list"))
      expect(names).toContain("paged__echo")
      expect(names).not.toContain("alpha__")
      // The others were never started for this session.
      expect(gateway.child("alpha").received.filter((m) => m.method === "tools/list")).toHaveLength(1)
    }),
  )

  it.scopedLive("says which servers exist when the exec command names an unknown one", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers })
      const client = yield* gateway.connect({ selection: ["nope"] })
      expect(yield* client.exit).toBe(1)
      expect(client.stderr()).toMatch(/unknown server\(s\): nope; available: alpha, beta/)
    }),
  )

  it.scopedLive(
    "gives a method it does not know to the one server of the session, and refuses it with several",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({
          servers: {
            ...servers,
            vendor: {
              tools: [echo],
              methods: { "vendor/hello": () => Effect.succeed({ hello: "from vendor", structured: [1, 2] }) },
            },
          },
        })
        const mini = yield* gateway.connect({ selection: ["paged"] })
        yield* mini.initialize()
        // The child's own answer, passed through.
        expect(yield* mini.request(5, "no/such/method")).toMatchObject({
          error: { code: -32601, message: "Method not found" },
        })
        expect(receivedBy(gateway, "paged", "no/such/method")).toHaveLength(1)
        expect(yield* mini.request(6, "ping")).toMatchObject({ id: 6, result: {} })
        const vendor = yield* gateway.connect({ selection: ["vendor"] })
        yield* vendor.initialize()
        expect(yield* vendor.request(1, "vendor/hello", { x: 1 })).toEqual({
          jsonrpc: "2.0",
          id: 1,
          result: { hello: "from vendor", structured: [1, 2] },
        })
        const all = yield* gateway.connect()
        yield* all.initialize()
        expect(yield* all.request(1, "vendor/hello")).toMatchObject({
          error: { code: -32601, message: "Method not found: vendor/hello" },
        })
      }),
  )

  it.scopedLive(
    "passes a child's request to a 2025-era client and its answer back, with the child's id",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({
          servers: {
            asker: {
              tools: [
                {
                  name: "sample",
                  run: (call) =>
                    call
                      .ask("sampling/createMessage", {
                        messages: [{ role: "user", content: { type: "text", text: "hi" } }],
                      })
                      .pipe(Effect.map((answer) => text(`sampled: ${JSON.stringify(answer.result)}`))),
                },
              ],
            },
          },
        })
        const client = yield* gateway.connect()
        yield* client.initialize({ capabilities: { sampling: {} } })
        yield* client.sendRequest(1, "tools/call", { name: "asker__sample", arguments: {} })
        const asked = yield* client.serverRequest("sampling/createMessage")
        expect(asked.params).toEqual({ messages: [{ role: "user", content: { type: "text", text: "hi" } }] })
        yield* client.respond(asked.id, {
          model: "test-model",
          role: "assistant",
          content: { type: "text", text: "ok" },
        })
        expect(JSON.stringify((yield* client.response(1)).result)).toContain("test-model")
        const answered = yield* gateway.child("asker").received.waitFor((m) => m.id === "ask-1")
        expect(answered).toMatchObject({ id: "ask-1", result: { model: "test-model" } })
      }),
  )
})
