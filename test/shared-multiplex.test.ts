/**
 * What multiplexing one shared child between sessions must keep apart, over real SSH with a real
 * child (test/fixtures/probe-server.mjs) that reports what reached it: progress, cancellations,
 * subscriptions, log levels, the child's requests to a client, a crash under load and what the
 * restarted child is given again; then identity scope's one child per identity and its budget.
 */
import { readFileSync, rmSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  disposeGateway,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { childrenOf, waitUntil } from "./support/processes.js"
import { callTool, connect, type LineChannel, openLineChannel, openSession } from "./support/ssh.js"

type Message = Record<string, unknown>

const textOf = (answer: Message): string => {
  const result = answer.result as { content?: Array<{ text?: string }> } | undefined
  if (result?.content?.[0]?.text === undefined) throw new Error(`no text in ${JSON.stringify(answer)}`)
  return result.content[0].text
}

let ids = 0
const nextId = () => `t${++ids}`

/** A session of `servers` (the shared probe alone by default), its client declaring `capabilities`. */
const startSession = async (gateway: RunningGateway, capabilities: Message = {}, servers = "probe") => {
  const channel = await openSession(gateway, servers)
  await channel.request(nextId(), "initialize", {
    protocolVersion: "2025-06-18",
    capabilities,
    clientInfo: { name: "mcp-ssh-tests", version: "1" },
  })
  channel.send({ jsonrpc: "2.0", method: "notifications/initialized" })
  return channel
}

/** Close the sessions' channels (not only their input: a session with a call in flight finishes it first). */
const close = async (...channels: Array<LineChannel>) => {
  for (const channel of channels) channel.channel.close()
  await Promise.all(channels.map((channel) => channel.exit))
}

/** What the shared child kept of `method`, asked through `channel`. */
const received = async (channel: LineChannel, method: string): Promise<Array<Message>> =>
  JSON.parse(textOf(await callTool(channel, nextId(), "probe__received", { method }))) as Array<Message>

const paramsOf = (message: Message) => (message.params ?? {}) as Message

/** Poll a condition that needs a round trip (e.g. asking the child what it received). */
const waitUntilAsync = async (condition: () => Promise<boolean>, what: string, timeoutMs = 15_000) => {
  const until = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The child's own id of the `hang` call carrying `marker`, once the child has it. */
const hangAtChild = async (channel: LineChannel, marker: string) => {
  let id: unknown
  await waitUntilAsync(async () => {
    const calls = await received(channel, "tools/call")
    id = calls.find((call) => JSON.stringify(paramsOf(call).arguments) === JSON.stringify({ marker }))?.id
    return id !== undefined
  }, `the child to receive hang ${marker}`)
  return id
}

const probe = { ...node("probe-server.mjs"), scope: "shared" as const }

describe("a shared child multiplexed over SSH", () => {
  let gateway: RunningGateway
  beforeAll(async () => {
    // mini: a per-session server beside the shared one, for the crash tests (which come last).
    gateway = await startGateway({ servers: { probe, mini: node("mini-server.mjs") } })
  })
  afterAll(() => disposeGateway(gateway))

  it("progress reaches the session that asked, under its own token", async () => {
    const [a, b] = await Promise.all([startSession(gateway), startSession(gateway)])
    // The same token from both sessions; different step counts tell whose progress arrived where.
    const [fromA, fromB] = await Promise.all([
      a.request("p", "tools/call", {
        name: "probe__progress",
        arguments: { steps: 3 },
        _meta: { progressToken: "same" },
      }),
      b.request("p", "tools/call", {
        name: "probe__progress",
        arguments: { steps: 5 },
        _meta: { progressToken: "same" },
      }),
    ])
    const progressOf = (channel: LineChannel) =>
      channel.messages.filter((m) => m.method === "notifications/progress").map(paramsOf)
    expect(progressOf(a)).toEqual(
      [1, 2, 3].map((progress) => ({ progressToken: "same", progress, total: 3 })),
    )
    expect(progressOf(b)).toEqual(
      [1, 2, 3, 4, 5].map((progress) => ({ progressToken: "same", progress, total: 5 })),
    )
    // The child saw two tokens of the gateway's, neither the clients' own.
    const seen = [fromA, fromB].map((answer) => (JSON.parse(textOf(answer)) as { token: unknown }).token)
    expect(seen[0]).not.toEqual("same")
    expect(seen[1]).not.toEqual("same")
    expect(seen[0]).not.toEqual(seen[1])
    await close(a, b)
  })

  it("a session whose connection closes mid-call cancels that call at the child", async () => {
    const other = await startSession(gateway)
    const connection = await connect(gateway)
    const leaving = await openLineChannel(connection, { exec: "" })
    await leaving.initialize()
    leaving.send({
      jsonrpc: "2.0",
      id: "h",
      method: "tools/call",
      params: { name: "probe__hang", arguments: { marker: "leaving" } },
    })
    const childId = await hangAtChild(other, "leaving")
    connection.end()
    await waitUntilAsync(
      async () =>
        (await received(other, "notifications/cancelled")).some((m) => paramsOf(m).requestId === childId),
      "the child to receive the cancellation of the closed session's call",
    )
    // The session that stayed is served as before.
    expect(textOf(await callTool(other, nextId(), "probe__echo", { message: "still here" }))).toBe(
      "still here",
    )
    await close(other)
  })

  it("a client's cancellation reaches the child under the child's own id of the call", async () => {
    const [caller, other] = await Promise.all([startSession(gateway), startSession(gateway)])
    caller.send({
      jsonrpc: "2.0",
      id: "to-cancel",
      method: "tools/call",
      params: { name: "probe__hang", arguments: { marker: "cancelled" } },
    })
    const childId = await hangAtChild(other, "cancelled")
    caller.send({ jsonrpc: "2.0", method: "notifications/cancelled", params: { requestId: "to-cancel" } })
    await waitUntilAsync(
      async () =>
        (await received(other, "notifications/cancelled")).some((m) => paramsOf(m).requestId === childId),
      "the child to receive the cancellation",
    )
    expect(childId).not.toBe("to-cancel")
    // The caller is not held up by the cancelled call.
    expect(textOf(await callTool(caller, nextId(), "probe__echo", { message: "next" }))).toBe("next")
    await close(caller, other)
  })

  it("the child's list_changed reaches every session using it", async () => {
    const sessions = await Promise.all([startSession(gateway), startSession(gateway), startSession(gateway)])
    const [first] = sessions
    if (first === undefined) throw new Error("no session")
    await callTool(first, nextId(), "probe__changed")
    await Promise.all(
      sessions.map((channel) => channel.waitFor((m) => m.method === "notifications/tools/list_changed")),
    )
    await close(...sessions)
  })

  it("subscriptions are counted per URI and updates reach subscribers only", async () => {
    const [a, b, c] = await Promise.all([startSession(gateway), startSession(gateway), startSession(gateway)])
    const atChild = async (method: string) =>
      (await received(c, method)).filter((m) => paramsOf(m).uri === "probe://a").length
    await a.request(nextId(), "resources/subscribe", { uri: "probe://a" })
    await b.request(nextId(), "resources/subscribe", { uri: "probe://a" })
    expect(await atChild("resources/subscribe")).toBe(1)

    await callTool(c, nextId(), "probe__updated", { uri: "probe://a" })
    const isUpdate = (m: Message) =>
      m.method === "notifications/resources/updated" && paramsOf(m).uri === "probe://a"
    await a.waitFor(isUpdate)
    await b.waitFor(isUpdate)
    // The child's output is in order: an update for c would have come before this answer.
    await callTool(c, nextId(), "probe__echo", { message: "after" })
    expect(c.messages.filter((m) => m.method === "notifications/resources/updated")).toEqual([])

    await b.request(nextId(), "resources/unsubscribe", { uri: "probe://a" })
    expect(await atChild("resources/unsubscribe")).toBe(0)
    // The last subscriber leaving (by closing) unsubscribes the child.
    await close(a)
    await waitUntilAsync(
      async () => (await atChild("resources/unsubscribe")) === 1,
      "the child's unsubscribe",
    )
    expect(await atChild("resources/subscribe")).toBe(1)
    await close(b, c)
  })

  it("the child logs at the most verbose level asked; each session gets only its own level and above", async () => {
    const [verbose, quiet] = await Promise.all([startSession(gateway), startSession(gateway)])
    const levelsAtChild = async () =>
      (await received(quiet, "logging/setLevel")).map((m) => paramsOf(m).level)
    const before = (await levelsAtChild()).length
    await verbose.request(nextId(), "logging/setLevel", { level: "debug" })
    await quiet.request(nextId(), "logging/setLevel", { level: "error" })
    expect((await levelsAtChild()).slice(before)).toEqual(["debug", "debug"])

    await callTool(verbose, nextId(), "probe__log", { marker: "levels" })
    const levelsOf = (channel: LineChannel) =>
      channel.messages
        .filter((m) => m.method === "notifications/message")
        .map((m) => paramsOf(m).data as { marker?: string; level?: string })
        .filter((data) => data.marker === "levels")
        .map((data) => data.level)
    const isError = (m: Message) =>
      m.method === "notifications/message" &&
      JSON.stringify(paramsOf(m).data) === JSON.stringify({ marker: "levels", level: "error" })
    await verbose.waitFor(isError)
    await quiet.waitFor(isError)
    expect(levelsOf(verbose)).toEqual(["debug", "info", "warning", "error"])
    // In the child's order: had debug, info or warning been let through, they would be here already.
    expect(levelsOf(quiet)).toEqual(["error"])

    // The most verbose session gone, the child is set to the level of the one left.
    await close(verbose)
    await waitUntilAsync(async () => (await levelsAtChild()).at(-1) === "error", "the child set to error")
    await close(quiet)
  })

  it("a child's request goes to the one session with a call in flight, and to no other", async () => {
    const capabilities = { sampling: {}, elicitation: {}, roots: { listChanged: true } }
    const [a, b] = await Promise.all([
      startSession(gateway, capabilities),
      startSession(gateway, capabilities),
    ])
    const answerAsked = async (channel: LineChannel, method: string, result: Message) => {
      const asked = await channel.waitFor((m) => m.method === method && m.id !== undefined)
      channel.send({ jsonrpc: "2.0", id: asked.id, result })
    }

    const sampling = callTool(a, nextId(), "probe__ask", {
      method: "sampling/createMessage",
      params: { messages: [], maxTokens: 10 },
    })
    await answerAsked(a, "sampling/createMessage", {
      model: "m",
      role: "assistant",
      content: { type: "text", text: "from-a" },
    })
    expect(JSON.parse(textOf(await sampling))).toMatchObject({ content: { text: "from-a" } })

    const elicitation = callTool(b, nextId(), "probe__ask", {
      method: "elicitation/create",
      params: { message: "who?", requestedSchema: { type: "object", properties: {} } },
    })
    await answerAsked(b, "elicitation/create", { action: "accept", content: { who: "b" } })
    expect(JSON.parse(textOf(await elicitation))).toEqual({ action: "accept", content: { who: "b" } })

    // Whose roots? A client that has roots still is not asked: the child gets an empty list.
    const roots = await callTool(a, nextId(), "probe__ask", { method: "roots/list" })
    expect(JSON.parse(textOf(roots))).toEqual({ roots: [] })

    const requestsTo = (channel: LineChannel) =>
      channel.messages.filter((m) => typeof m.method === "string" && m.id !== undefined).map((m) => m.method)
    expect(requestsTo(a)).toEqual(["sampling/createMessage"])
    expect(requestsTo(b)).toEqual(["elicitation/create"])
    await close(a, b)
  })

  it("a session that closes before answering the child's request gets the child an error", async () => {
    const [asker, other] = await Promise.all([startSession(gateway, { sampling: {} }), startSession(gateway)])
    const answersBefore = (await received(other, "answer")).length
    void callTool(asker, nextId(), "probe__ask", {
      method: "sampling/createMessage",
      params: { messages: [], maxTokens: 10 },
    }).catch(() => undefined)
    await asker.waitFor((m) => m.method === "sampling/createMessage")
    await close(asker)
    let answers: Array<Message> = []
    await waitUntilAsync(async () => {
      answers = (await received(other, "answer")).slice(answersBefore)
      return answers.length > 0
    }, "the child's answer")
    expect(answers).toHaveLength(1)
    expect(answers[0]).toMatchObject({ error: { code: -32000, message: expect.stringContaining("closed") } })
    await close(other)
  })

  it("with two sessions calling, the child's request is refused with an error and a warning names the server", async () => {
    const capabilities = { sampling: {} }
    const [a, b] = await Promise.all([
      startSession(gateway, capabilities),
      startSession(gateway, capabilities),
    ])
    a.send({
      jsonrpc: "2.0",
      id: "busy",
      method: "tools/call",
      params: { name: "probe__hang", arguments: { marker: "busy" } },
    })
    await hangAtChild(b, "busy")
    const refused = await callTool(b, nextId(), "probe__ask", {
      method: "sampling/createMessage",
      params: { messages: [], maxTokens: 10 },
    })
    expect(JSON.parse(textOf(refused))).toEqual({
      error: {
        code: -32603,
        message: expect.stringMatching(
          /cannot tell which session sampling\/createMessage is for: server 'probe' is shared and 2 sessions/,
        ),
      },
    })
    await gateway.waitForLog(/refused sampling\/createMessage of shared server 'probe': 2 sessions/)
    expect([...a.messages, ...b.messages].filter((m) => m.method === "sampling/createMessage")).toEqual([])
    await close(a, b)
  })

  it("a session whose client lacks the capability gets the child's request answered -32601", async () => {
    const session = await startSession(gateway)
    const answer = await callTool(session, nextId(), "probe__ask", {
      method: "sampling/createMessage",
      params: { messages: [], maxTokens: 10 },
    })
    expect(JSON.parse(textOf(answer))).toEqual({
      error: { code: -32601, message: expect.stringContaining("sampling") },
    })
    expect(session.messages.filter((m) => m.method === "sampling/createMessage")).toEqual([])
    await close(session)
  })

  it("a crash under load fails every session's calls with -32000 naming it, it comes back, and the other server loses nothing", async () => {
    const sessions = await Promise.all(
      Array.from({ length: 3 }, () => startSession(gateway, {}, "probe,mini")),
    )
    const [first] = sessions
    if (first === undefined) throw new Error("no session")
    const pidOf = async (channel: LineChannel) =>
      Number(textOf(await callTool(channel, nextId(), "probe__pid")))
    const sharedPid = await pidOf(first)
    // The shared child and each session's own mini child.
    await waitUntil(() => childrenOf(gateway.pid).length === 4, 15_000, "four children")
    const ownChildren = childrenOf(gateway.pid).filter((pid) => pid !== sharedPid)
    const listChanges = (channel: LineChannel) =>
      channel.messages.filter((m) => m.method === "notifications/tools/list_changed").length
    const changesBefore = sessions.map(listChanges)

    const hangs = sessions.map((channel, index) =>
      callTool(channel, `hang-${index}`, "probe__hang", { marker: `crash-${index}` }),
    )
    for (const index of sessions.keys()) await hangAtChild(first, `crash-${index}`)
    const load = Promise.all(
      sessions.flatMap((channel, session) =>
        Array.from({ length: 30 }, (_, index) =>
          callTool(channel, `m${index}`, "mini__echo", { message: `s${session}-${index}` }).then(
            (answer) => ({
              marker: `s${session}-${index}`,
              answer,
            }),
          ),
        ),
      ),
    )
    const crash = await callTool(first, nextId(), "probe__crash")
    expect(crash.error).toMatchObject({ code: -32000, message: expect.stringContaining("server 'probe'") })
    for (const answer of await Promise.all(hangs)) {
      expect(answer.error).toMatchObject({ code: -32000, message: expect.stringContaining("server 'probe'") })
    }
    // Every session sees the tools go with the child and come back with it.
    await Promise.all(
      sessions.map((channel, index) =>
        channel.waitForCount(
          (m) => m.method === "notifications/tools/list_changed",
          (changesBefore[index] ?? 0) + 2,
          20_000,
        ),
      ),
    )
    const restartedPid = await pidOf(first)
    expect(restartedPid).not.toBe(sharedPid)
    for (const channel of sessions) expect(await pidOf(channel)).toBe(restartedPid)

    for (const { marker, answer } of await load) expect(textOf(answer)).toBe(marker)
    // The sessions' own children of the other server were never touched.
    expect(
      childrenOf(gateway.pid)
        .filter((pid) => pid !== restartedPid)
        .sort(),
    ).toEqual(ownChildren.sort())
    await close(...sessions)
  }, 60_000)

  it("a session's subscription and log level hold across a restart of the shared child", async () => {
    const [subscriber, other] = await Promise.all([startSession(gateway), startSession(gateway)])
    await subscriber.request(nextId(), "resources/subscribe", { uri: "probe://b" })
    await subscriber.request(nextId(), "logging/setLevel", { level: "warning" })
    const listChanges = () =>
      subscriber.messages.filter((m) => m.method === "notifications/tools/list_changed").length
    const before = listChanges()
    await callTool(other, nextId(), "probe__crash")
    await subscriber.waitForCount((m) => m.method === "notifications/tools/list_changed", before + 2, 20_000)
    // The new child must hold the subscription the session still has, or it never announces updates.
    await waitUntilAsync(
      async () => (await received(other, "resources/subscribe")).some((m) => paramsOf(m).uri === "probe://b"),
      "the restarted child to be subscribed again",
    )
    expect((await received(other, "logging/setLevel")).map((m) => paramsOf(m).level)).toEqual(["warning"])
    expect(textOf(await callTool(other, nextId(), "probe__updated", { uri: "probe://b" }))).toBe("announced")
    await subscriber.waitFor(
      (m) => m.method === "notifications/resources/updated" && paramsOf(m).uri === "probe://b",
    )
    await close(subscriber, other)
  }, 60_000)
})

describe("identity scope and the per-identity budget", () => {
  let gateway: RunningGateway
  const keys = tempDir("mcp-ssh-identity-keys-")
  const alice = makeKey(keys, "alice")
  const bob = makeKey(keys, "bob")
  beforeAll(async () => {
    gateway = await startGateway({
      servers: {
        mini: { ...node("mini-server.mjs"), scope: "identity", env: { WHO: "${MCP_SSH_IDENTITY}" } },
        one: node("mini-server.mjs"),
        two: node("mini-server.mjs"),
      },
      // alice's and bob's identity children are one each: within it.
      flags: ["--max-children-per-identity", "1"],
      authorizedLines: [`mcp-identity="alice" ${alice.publicLine}`, `mcp-identity="bob" ${bob.publicLine}`],
    })
  })
  afterAll(async () => {
    await disposeGateway(gateway)
    rmSync(keys, { recursive: true, force: true })
  })

  it("with ${MCP_SSH_IDENTITY} in env, each identity gets its own child with its own value", async () => {
    const openAs = async (key: typeof alice) => {
      const channel = await openSession(gateway, "mini", { privateKey: readFileSync(key.privatePath) })
      await channel.initialize()
      return channel
    }
    const sessions = await Promise.all([openAs(alice), openAs(alice), openAs(bob)])
    const who = await Promise.all(
      sessions.map(async (channel) => {
        const env = JSON.parse(textOf(await callTool(channel, nextId(), "mini__env"))) as Record<
          string,
          string
        >
        return env.WHO
      }),
    )
    expect(who).toEqual(["alice", "alice", "bob"])
    // One child for alice's two sessions, one for bob's.
    await waitUntil(() => childrenOf(gateway.pid).length === 2, 15_000, "two children")
    await close(...sessions)
  })

  it("past --max-children-per-identity a session's server gets the identity's error, and its other server works", async () => {
    // The default key's identity is its comment; it runs no child yet.
    const channel = await openSession(gateway, "one,two")
    await channel.initialize()
    const answers = await Promise.all([
      callTool(channel, "a", "one__echo", { message: "first" }),
      callTool(channel, "b", "two__echo", { message: "second" }),
    ])
    expect(answers.filter((answer) => answer.error === undefined).map(textOf)).toEqual([
      expect.stringMatching(/^(first|second)$/),
    ])
    expect(answers.filter((answer) => answer.error !== undefined).map((answer) => answer.error)).toEqual([
      {
        code: -32000,
        message: expect.stringMatching(
          /server '(one|two)' cannot start: identity 'client@test' runs 1 children, the --max-children-per-identity limit of 1/,
        ),
      },
    ])
    await gateway.waitForLog(
      /identity 'client@test' runs 1 children, the --max-children-per-identity limit of 1/,
    )
    await close(channel)
  })
})
