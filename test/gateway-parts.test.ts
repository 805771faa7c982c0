/**
 * Pure parts of the gateway, without IO: the routing table of a session, the startup limits, the
 * pending calls of a child, and the verdict on a publickey attempt (with keys and signatures made by
 * ssh2 itself).
 */
import { afterEach, describe, expect, it, vi } from "vitest"
import { PendingCalls } from "../src/gateway/children/pendingCalls.js"
import { UpstreamError } from "../src/gateway/errors.js"
import { RoutingTable } from "../src/gateway/hub/routing.js"
import { decidePublicKey } from "../src/gateway/ssh/publicKeyAuth.js"
import { StartupLimits } from "../src/gateway/ssh/startupLimits.js"
import { isKeyProblem, parsePublicKey } from "../src/shared/publicKey.js"
import { generateEd25519KeyPair, utils } from "../src/shared/ssh2.js"

describe("RoutingTable", () => {
  const fs = { name: "fs" }
  const git = { name: "git", prefix: "g" }

  it("renames tools per server and routes each merged name to its own child and name", () => {
    const table = new RoutingTable(["fs", "git"])
    const page = table.indexPage("tools/list", fs, [
      { name: "read", description: "x" },
      "junk",
      { title: "no name" },
    ])
    expect(page).toEqual({ items: [{ name: "fs__read", description: "x" }], hidden: [] })
    table.indexPage("tools/list", git, [{ name: "read" }])
    expect(table.named("tool", "fs__read")).toEqual({ server: "fs", name: "read" })
    expect(table.named("tool", "g__read")).toEqual({ server: "git", name: "read" })
    expect(table.named("prompt", "fs__read")).toBeUndefined()
  })

  it("keeps the first owner of a merged name and says which entry it hides", () => {
    const table = new RoutingTable(["a", "b"])
    table.indexPage("prompts/list", { name: "a", prefix: "x" }, [{ name: "p" }])
    const page = table.indexPage("prompts/list", { name: "b", prefix: "x" }, [{ name: "p" }])
    expect(page.items).toEqual([])
    expect(page.hidden).toEqual(["prompt 'p' of server 'b' is hidden: 'x__p' is taken by server 'a'"])
    // Listing the same entry again is not a collision.
    expect(table.indexPage("prompts/list", { name: "a", prefix: "x" }, [{ name: "p" }]).hidden).toEqual([])
  })

  it("routes a URI to the server that listed it, else to the first template that matches, in config order", () => {
    const table = new RoutingTable(["first", "second"])
    table.indexPage("resources/templates/list", { name: "second" }, [{ uriTemplate: "file:///{path}" }])
    table.indexPage("resources/templates/list", { name: "first" }, [{ uriTemplate: "file:///docs/{name}" }])
    table.indexPage("resources/list", { name: "second" }, [{ uri: "file:///docs/listed" }])
    expect(table.ownerOfUri("file:///docs/listed")).toBe("second")
    expect(table.ownerOfUri("file:///docs/other")).toBe("first")
    expect(table.ownerOfUri("file:///hosts")).toBe("second")
    expect(table.ownerOfUri("https://elsewhere/")).toBeUndefined()
  })

  it("remembers which server created a task", () => {
    const table = new RoutingTable(["a"])
    table.noteTask(undefined, "a")
    table.noteTask("t-1", "a")
    expect(table.taskOwner("t-1")).toBe("a")
    expect(table.taskOwner("t-2")).toBeUndefined()
  })
})

describe("StartupLimits", () => {
  it("caps unauthenticated connections per source and in total, and frees a slot once", () => {
    const limits = new StartupLimits({ maxStartups: 3, maxStartupsPerSource: 2 })
    const first = limits.admit("10.0.0.1")
    const second = limits.admit("10.0.0.1")
    expect(typeof first).toBe("function")
    expect(typeof second).toBe("function")
    expect(limits.admit("10.0.0.1")).toEqual({ total: 2, fromSource: 2 })
    const other = limits.admit("10.0.0.2")
    expect(typeof other).toBe("function")
    expect(limits.admit("10.0.0.3")).toEqual({ total: 3, fromSource: 0 })
    if (typeof first !== "function") throw new Error("admitted above")
    first()
    first()
    expect(typeof limits.admit("10.0.0.3")).toBe("function")
    expect(limits.admit("10.0.0.1")).toEqual({ total: 3, fromSource: 1 })
  })
})

describe("PendingCalls", () => {
  afterEach(() => {
    vi.useRealTimers()
  })
  const timedOut = (id: number) => new UpstreamError({ server: "s", code: -32001, reason: `timed out ${id}` })

  it("gives each request a fresh id and the answer back under the caller's id, once", () => {
    const calls = new PendingCalls(1000, timedOut, () => {})
    const outcomes: Array<unknown> = []
    const id = calls.open({ jsonrpc: "2.0", id: "mine", method: "tools/call" }, (outcome) =>
      outcomes.push(outcome),
    )
    const other = calls.open({ jsonrpc: "2.0", id: "mine", method: "tools/call" }, () => {})
    expect(other).not.toBe(id)
    expect(calls.settle(id, { jsonrpc: "2.0", id, result: { ok: true } })).toBe(true)
    expect(calls.settle(id, { jsonrpc: "2.0", id, result: { ok: true } })).toBe(false)
    expect(calls.settle("not a number", { jsonrpc: "2.0", id: 1, result: {} })).toBe(false)
    expect(outcomes).toEqual([{ jsonrpc: "2.0", id: "mine", result: { ok: true } }])
  })

  it("times out a silent request, tells the child, and lets progress put the deadline off", () => {
    vi.useFakeTimers()
    const cancelled: Array<[number, string]> = []
    const calls = new PendingCalls(1000, timedOut, (id, reason) => cancelled.push([id, reason]))
    const outcomes: Array<unknown> = []
    const id = calls.open(
      { jsonrpc: "2.0", id: 7, method: "tools/call", params: { _meta: { progressToken: "p" } } },
      (outcome) => outcomes.push(outcome),
    )
    vi.advanceTimersByTime(900)
    calls.progressed("p")
    vi.advanceTimersByTime(900)
    expect(outcomes).toEqual([])
    vi.advanceTimersByTime(200)
    expect(outcomes).toEqual([timedOut(id)])
    expect(cancelled).toEqual([[id, "request timed out at the gateway"]])
  })

  it("withdraws a request once, and fails what is left when the child goes", () => {
    const calls = new PendingCalls(1000, timedOut, () => {})
    const outcomes: Array<unknown> = []
    const first = calls.open({ jsonrpc: "2.0", id: 1, method: "a" }, (outcome) => outcomes.push(outcome))
    calls.open({ jsonrpc: "2.0", id: 2, method: "b" }, (outcome) => outcomes.push(outcome))
    expect(calls.withdraw(first)).toBe(true)
    expect(calls.withdraw(first)).toBe(false)
    const gone = new UpstreamError({ server: "s", code: -32000, reason: "exited" })
    calls.failAll(gone)
    expect(outcomes).toEqual([gone])
  })
})

describe("decidePublicKey", () => {
  const pair = generateEd25519KeyPair("parts-test", undefined)
  const key = parsePublicKey(pair.public)
  if (isKeyProblem(key)) throw new Error(key.reason)
  const authorized = { ...key, options: undefined, line: 1 }
  const privateKey = utils.parseKey(pair.private)
  if (privateKey instanceof Error || Array.isArray(privateKey))
    throw new Error("cannot parse the private key")
  const blob = Buffer.from("session data to sign")

  it("accepts a query without a signature, and a valid signature", () => {
    const attempt = { algo: key.type, hashAlgo: undefined, blob, signature: undefined }
    expect(decidePublicKey(attempt, authorized)).toEqual({ _tag: "Acceptable" })
    const signature = privateKey.sign(blob)
    expect(decidePublicKey({ ...attempt, signature }, authorized)).toEqual({ _tag: "Verified" })
  })

  it("refuses a bad signature, and an algorithm that does not fit the key", () => {
    const signature = privateKey.sign(Buffer.from("other data"))
    expect(decidePublicKey({ algo: key.type, hashAlgo: undefined, blob, signature }, authorized)).toEqual({
      _tag: "Refused",
      reason: `bad signature for ${key.fingerprint}`,
      signature: true,
    })
    expect(decidePublicKey({ algo: "ssh-rsa", hashAlgo: "sha256", blob, signature }, authorized)).toEqual({
      _tag: "Refused",
      reason: "signature algorithm ssh-rsa does not fit a ssh-ed25519 key",
    })
  })
})
