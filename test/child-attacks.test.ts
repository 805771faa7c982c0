/**
 * Children that misbehave on purpose (test/fixtures/mini-server.mjs modes): one that floods stderr,
 * forks grandchildren that will not die, exits during initialize, or asks the client something the
 * client never answers. Each case checks what the client gets, what the gateway logs, that the other
 * servers and sessions go on, and that no process or descriptor is left behind.
 */
import { readFileSync } from "node:fs"
import { afterEach, describe, expect, it } from "vitest"
import {
  disposeGateway,
  node,
  type RunningGateway,
  type ServerEntry,
  startGateway,
} from "./support/gateway.js"
import {
  allProcesses,
  childrenOf,
  isRunning,
  membersOfGroups,
  memoryKiB,
  openDescriptorCount,
  readStat,
  waitForDescriptorsBackTo,
  waitUntil,
} from "./support/processes.js"
import { type LineChannel, openSession } from "./support/ssh.js"

const MiB = 1024 * 1024
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

let gateway: RunningGateway | undefined
/** Processes a test leaves running on purpose are ended here whatever happens. */
const strays: Array<number> = []
afterEach(async () => {
  for (const pid of strays.splice(0)) {
    try {
      process.kill(pid, "SIGKILL")
    } catch {
      // Already gone.
    }
  }
  await disposeGateway(gateway)
  gateway = undefined
})

const start = async (servers: Record<string, ServerEntry>) => {
  const running = await startGateway({ servers })
  gateway = running
  // The servers were probed at start; their probe processes are gone once the gateway listens.
  await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "the probes to end")
  return { running, descriptors: openDescriptorCount(running.pid) }
}

/** A session over `selection` (empty: every server), initialized and with its tools listed. */
const openListedSession = async (running: RunningGateway, selection: string) => {
  const channel = await openSession(running, selection)
  await channel.initialize()
  await channel.request("tools", "tools/list")
  return channel
}

const close = async (channel: LineChannel) => {
  channel.channel.end()
  await channel.exit
}

const call = (channel: LineChannel, id: number | string, name: string, args: Record<string, unknown> = {}) =>
  channel.request(id, "tools/call", { name, arguments: args })

const textOf = (response: Record<string, unknown>): string => {
  const result = response.result as { content?: Array<{ text?: string }> } | undefined
  const text = result?.content?.[0]?.text
  if (text === undefined) throw new Error(`no text in ${JSON.stringify(response)}`)
  return text
}

const echoes = async (channel: LineChannel, id: number | string, server: string) =>
  expect(await call(channel, id, `${server}__echo`, { message: `still here ${id}` })).toMatchObject({
    result: { content: [{ text: `still here ${id}` }] },
  })

/** The gateway's child running this fixture mode. */
const childInMode = (running: RunningGateway, mode: string): number => {
  const pid = childrenOf(running.pid).find((candidate) =>
    readFileSync(`/proc/${candidate}/cmdline`, "utf8").split("\0").includes(mode),
  )
  if (pid === undefined) throw new Error(`no child in mode ${mode}`)
  return pid
}

describe("a child that floods stderr", () => {
  it("logs at most 100 of its lines a second and a count of the rest, and everything else goes on", async () => {
    const { running, descriptors } = await start({
      flood: node("mini-server.mjs", "flood-stderr"),
      mini: node("mini-server.mjs"),
    })
    const rssBefore = memoryKiB(running.pid, "VmRSS")
    const logBefore = running.log().length
    const started = Date.now()
    const session = await openListedSession(running, "")
    const other = await openListedSession(running, "mini")

    // Four seconds of flood, during which both sessions keep getting quick answers.
    let slowest = 0
    for (let round = 0; Date.now() - started < 4000; round++) {
      const sent = Date.now()
      await echoes(session, `echo-${round}`, "mini")
      await echoes(other, `echo-${round}`, "mini")
      slowest = Math.max(slowest, Date.now() - sent)
      await sleep(100)
    }
    expect(slowest).toBeLessThan(2000)
    // The flooding server itself still answers.
    const flooded = Number(textOf(await call(session, "flooded", "flood__flooded")))
    const seconds = (Date.now() - started) / 1000
    const floodLog = running.log().slice(logBefore)
    const floodLines = floodLog.split("\n").filter((line) => line.includes("mini-server: flood line"))

    // The child wrote megabytes; the log took a bounded trickle of it.
    expect(flooded).toBeGreaterThan(4 * MiB)
    expect(floodLines.length).toBeLessThanOrEqual(100 * Math.ceil(seconds + 1))
    expect(Buffer.byteLength(floodLog)).toBeLessThan(Math.min(flooded / 20, 512 * 1024))
    await running.waitForLog(
      /level=WARN .*suppressed \d+ lines of stderr from server 'flood' \(over 100 a second\)/,
    )
    expect(memoryKiB(running.pid, "VmRSS") - rssBefore).toBeLessThan(64 * 1024)

    const flooder = childInMode(running, "flood-stderr")
    await close(session)
    await echoes(other, "after", "mini")
    await close(other)
    await waitUntil(() => !isRunning(flooder), 10_000, "the flooding child to end")
    await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "no child left")
    await waitForDescriptorsBackTo(running.pid, descriptors)
  })
})

describe("a child that forks a grandchild that keeps running", () => {
  const servers = { forks: node("mini-server.mjs", "forks"), mini: node("mini-server.mjs") }

  it("kills a grandchild in the child's process group that ignores SIGTERM and stdin closing", async () => {
    const { running, descriptors } = await start(servers)
    const session = await openListedSession(running, "")
    const other = await openListedSession(running, "mini")
    const child = childInMode(running, "forks")
    const grandchild = Number(textOf(await call(session, 1, "forks__fork", { escape: false })))
    strays.push(grandchild)
    expect(isRunning(grandchild)).toBe(true)
    expect(readStat(grandchild)?.pgid).toBe(child)

    await close(session)
    // stdin closed, then SIGTERM (ignored), then SIGKILL of the group after the 1 s stop timeout.
    await waitUntil(() => !isRunning(grandchild), 10_000, "the grandchild to be killed")
    await running.waitForLog(/child did not stop after SIGTERM: killed its process group/)
    expect(membersOfGroups([child])).toEqual([])
    await echoes(other, 2, "mini")
    await close(other)
    await waitForDescriptorsBackTo(running.pid, descriptors)
  })

  it("finds and ends a grandchild that left for its own session and process group (setsid)", async () => {
    const { running, descriptors } = await start(servers)
    const session = await openListedSession(running, "")
    const child = childInMode(running, "forks")
    const grandchild = Number(textOf(await call(session, 1, "forks__fork", { escape: true })))
    strays.push(grandchild)
    // Out of the child's group: signalling the group does not reach it.
    expect(readStat(grandchild)?.pgid).toBe(grandchild)

    await close(session)
    await waitUntil(() => !isRunning(grandchild), 10_000, "the escaped grandchild to be killed")
    await running.waitForLog(
      new RegExp(`ended 1 process\\(es\\) the child had moved out of its process group: ${grandchild}`),
    )
    expect(membersOfGroups([child, grandchild])).toEqual([])
    await waitForDescriptorsBackTo(running.pid, descriptors)
  })

  it("releases the pipes an orphaned escaped grandchild still holds, which it cannot find", async () => {
    const { running, descriptors } = await start(servers)
    const session = await openListedSession(running, "")
    const grandchild = Number(textOf(await call(session, 1, "forks__fork", { escape: true })))
    strays.push(grandchild)
    // The child exits on its own: its escaped grandchild now belongs to init, holding the child's stdio.
    expect(await call(session, 2, "forks__exit")).toMatchObject({
      error: { code: -32000, message: expect.stringMatching(/server 'forks' exited with code 4/) },
    })
    await running.waitForLog(/server 'forks' exited with code 4; restarting in/)
    await echoes(session, 3, "mini")
    await close(session)
    await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "no child left")
    // The documented limit: nothing links the orphan to the gateway any more...
    expect(isRunning(grandchild)).toBe(true)
    // ...but the gateway's ends of the pipes it holds are closed.
    await waitForDescriptorsBackTo(running.pid, descriptors)
  })

  it("leaves no grandchild of either kind when the gateway is SIGKILLed", async () => {
    const { running } = await start(servers)
    const session = await openListedSession(running, "")
    const child = childInMode(running, "forks")
    const inGroup = Number(textOf(await call(session, 1, "forks__fork", { escape: false })))
    const escaped = Number(textOf(await call(session, 2, "forks__fork", { escape: true })))
    strays.push(inGroup, escaped)
    process.kill(running.pid, "SIGKILL")
    await running.exited
    // The guard sends SIGTERM, then SIGKILL two seconds later.
    await waitUntil(
      () => ![child, inGroup, escaped].some(isRunning),
      10_000,
      "the child and both grandchildren to be reaped",
    )
    expect(membersOfGroups([child, escaped])).toEqual([])
  })
})

describe("a child that exits during initialize", () => {
  it("leaves it out, serves the others, restarts it with growing delays, and leaves no zombie", async () => {
    const { running, descriptors } = await start({
      broken: node("mini-server.mjs", "exit-on-initialize"),
      mini: node("mini-server.mjs"),
    })
    const channel = await openSession(running, "")
    const sent = Date.now()
    expect(await channel.initialize()).toMatchObject({ result: { serverInfo: { name: "mcp-ssh" } } })
    // Not held for the 5 s startup wait: the failed start settles it.
    expect(Date.now() - sent).toBeLessThan(4000)
    const listed = JSON.stringify(await channel.request(1, "tools/list"))
    expect(listed).toContain("mini__echo")
    expect(listed).not.toContain("broken__")
    expect(await call(channel, 2, "broken__echo")).toMatchObject({
      error: {
        code: -32000,
        message: expect.stringMatching(
          /^server 'broken' is not running: server 'broken' exited with code 5; restarting in \d+/,
        ),
      },
    })
    await echoes(channel, 3, "mini")

    // Restarted again and again, each time after a longer delay.
    const restarts = /server 'broken' exited with code 5; restarting in (\d+)(ms|s)/g
    const delays = () =>
      [...running.log().matchAll(restarts)].map(
        ([, value, unit]) => Number(value) * (unit === "s" ? 1000 : 1),
      )
    await waitUntil(() => delays().length >= 3, 15_000, "three restarts")
    const [first = 0, second = 0, third = 0] = delays()
    expect(second).toBeGreaterThan(first)
    expect(third).toBeGreaterThan(second)
    await running.waitForLog(/mini-server: exiting during initialize as asked/)
    // Node reaps each exited child: no zombie is left under the gateway.
    await sleep(300)
    expect(allProcesses().filter((info) => info.ppid === running.pid && info.state === "Z")).toEqual([])

    await close(channel)
    await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "no child left")
    await waitForDescriptorsBackTo(running.pid, descriptors)
  })
})

describe("a child whose request the client never answers", () => {
  const servers = {
    asker: { ...node("mini-server.mjs", "asks-client"), timeout: 1 },
    patient: { ...node("mini-server.mjs", "asks-client"), timeout: 4 },
    mini: node("mini-server.mjs"),
  }
  const forwarded = (channel: LineChannel, method: string) =>
    channel.waitFor((message) => message.method === method && typeof message.id === "number")

  it("answers the child with -32001 at the server's timeout and tells the client it is cancelled", async () => {
    const { running, descriptors } = await start(servers)
    const channel = await openListedSession(running, "")
    const methods = ["sampling/createMessage", "roots/list", "elicitation/create"]
    const ids: Array<number> = []
    for (const [index, method] of methods.entries()) {
      expect(textOf(await call(channel, `ask-${index}`, "asker__ask", { method }))).toBe(
        `asked ask-${index + 1}`,
      )
      ids.push((await forwarded(channel, method)).id as number)
    }
    // Nobody answers. After the server's 1 s timeout, each is cancelled at both ends.
    for (const [index, method] of methods.entries()) {
      const reason = `the client did not answer ${method} within 1s`
      expect(
        await channel.waitFor(
          (message) =>
            message.method === "notifications/cancelled" &&
            (message.params as { requestId?: unknown }).requestId === ids[index],
          5000,
        ),
      ).toEqual({
        jsonrpc: "2.0",
        method: "notifications/cancelled",
        params: { requestId: ids[index], reason },
      })
      await running.waitForLog(
        new RegExp(`level=WARN .*cancelled request ${ids[index]} of server 'asker': ${reason}`),
      )
      await running.waitForLog(new RegExp(`mini-server: answer to ask-${index + 1}: `))
    }
    // A late answer reaches nobody.
    channel.send({ jsonrpc: "2.0", id: ids[0], result: { role: "assistant", content: [] } })
    await running.waitForLog(new RegExp(`ignored a response .*request id ${ids[0]}\\b`))
    const answers = JSON.parse(textOf(await call(channel, "answers", "asker__answers"))) as Array<unknown>
    expect(answers).toEqual(
      methods.map((method, index) => ({
        jsonrpc: "2.0",
        id: `ask-${index + 1}`,
        error: { code: -32001, message: `the client did not answer ${method} within 1s` },
      })),
    )
    await echoes(channel, "after", "mini")
    await close(channel)
    await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "no child left")
    await waitForDescriptorsBackTo(running.pid, descriptors)
  })

  it("passes an answer in time back to the child", async () => {
    const { running } = await start(servers)
    const channel = await openListedSession(running, "patient")
    await call(channel, 1, "patient__ask", { method: "roots/list" })
    const request = await forwarded(channel, "roots/list")
    channel.send({ jsonrpc: "2.0", id: request.id as number, result: { roots: [] } })
    await running.waitForLog(/mini-server: answer to ask-1: /)
    expect(JSON.parse(textOf(await call(channel, 2, "patient__answers")))).toEqual([
      { jsonrpc: "2.0", id: "ask-1", result: { roots: [] } },
    ])
    // No deadline fires for an answered request: a later request left unanswered is cancelled at its
    // own deadline, which comes after the first one's would have.
    await call(channel, 3, "patient__ask", { method: "roots/list" })
    const unanswered = await channel.waitFor(
      (message) => message.method === "roots/list" && message.id !== request.id,
    )
    await running.waitForLog(new RegExp(`cancelled request ${unanswered.id} of server 'patient'`), 10_000)
    expect(running.log()).not.toMatch(new RegExp(`cancelled request ${request.id} of server 'patient'`))
    await close(channel)
  })

  it("forgets a pending request when the session closes: nothing fires later, nothing is left", async () => {
    const { running, descriptors } = await start(servers)
    const channel = await openListedSession(running, "")
    await call(channel, 1, "patient__ask", { method: "sampling/createMessage" })
    await forwarded(channel, "sampling/createMessage")
    await close(channel)
    await waitUntil(() => childrenOf(running.pid).length === 0, 10_000, "no child left")
    await waitForDescriptorsBackTo(running.pid, descriptors)
    // And the gateway still serves. A request of this later session, left unanswered, is cancelled at
    // its own deadline, after the closed session's would have come: that one went with its session.
    const next = await openListedSession(running, "patient")
    await call(next, 1, "patient__ask", { method: "roots/list" })
    await call(next, 2, "patient__ask", { method: "roots/list" })
    const first = await next.waitFor((message) => message.method === "roots/list")
    const second = await next.waitFor((message) => message.method === "roots/list" && message.id !== first.id)
    next.send({ jsonrpc: "2.0", id: first.id as number, result: { roots: [] } })
    await running.waitForLog(new RegExp(`cancelled request ${second.id} of server 'patient'`), 10_000)
    expect(running.log()).not.toMatch(/cancelled request 1 of server 'patient'/)
    await close(next)
  })
})
