/** The pure parts of a reload: what changed among the servers, and how the CLI reads the answer. */
import { describe, expect, it } from "vitest"
import type { ChildServer } from "../src/gateway/config/GatewayConfig.js"
import { describeReloadAnswer } from "../src/gateway/config/reloadCommand.js"
import { describeDiff, diffServers, isEmptyDiff, sameServer } from "../src/gateway/config/serverDiff.js"

const server = (name: string, overrides: Partial<ChildServer> = {}): ChildServer => ({
  name,
  command: "node",
  args: ["server.js"],
  env: { PATH: "/usr/bin", TOKEN: "a" },
  cwd: undefined,
  prefix: undefined,
  requestTimeout: 60,
  ...overrides,
})

describe("which servers a reload changes", () => {
  it("sees every field a child is started with or named by", () => {
    const base = server("s")
    expect(sameServer(base, server("s"))).toBe(true)
    for (const changed of [
      { command: "python3" },
      { args: ["server.js", "--verbose"] },
      { args: [] },
      { env: { PATH: "/usr/bin", TOKEN: "b" } },
      { env: { PATH: "/usr/bin" } },
      { env: { PATH: "/usr/bin", TOKEN: "a", EXTRA: "1" } },
      { cwd: "/srv" },
      { prefix: "" },
      { requestTimeout: 30 },
    ] satisfies Array<Partial<ChildServer>>) {
      expect(sameServer(base, server("s", changed)), JSON.stringify(changed)).toBe(false)
    }
    // The order of env entries is no change.
    expect(sameServer(base, server("s", { env: { TOKEN: "a", PATH: "/usr/bin" } }))).toBe(true)
  })

  it("sorts servers into added, removed, changed and unchanged", () => {
    const before = [server("a"), server("b"), server("c")]
    const after = [server("c", { args: ["v2.js"] }), server("a"), server("d")]
    const diff = diffServers(before, after)
    expect(diff.added.map((s) => s.name)).toEqual(["d"])
    expect(diff.removed.map((s) => s.name)).toEqual(["b"])
    expect(diff.changed.map((s) => s.name)).toEqual(["c"])
    expect(diff.unchanged.map((s) => s.name)).toEqual(["a"])
    // An unchanged server keeps the running object.
    expect(diff.unchanged[0]).toBe(before[0])
    expect(describeDiff(diff)).toBe("added: d; removed: b; changed: c")
    expect(isEmptyDiff(diffServers(before, before))).toBe(true)
    expect(describeDiff(diffServers(before, before))).toBe("no server changed")
  })
})

describe("mcp-ssh-server reload's reading of the answer", () => {
  it("prints what changed, and the settings left for the next start", () => {
    expect(
      describeReloadAnswer(200, {
        status: "reloaded",
        added: ["a"],
        removed: [],
        changed: ["b", "c"],
        ignored_settings: ["port"],
      }),
    ).toEqual({
      ok: true,
      lines: [
        "reloaded: added: a; changed: b, c",
        "changed settings that take effect at the next start: port",
      ],
    })
  })

  it("says when only the access policy changed", () => {
    expect(
      describeReloadAnswer(200, {
        added: [],
        removed: [],
        changed: [],
        access_changed: true,
        ignored_settings: [],
      }).lines,
    ).toEqual(["reloaded: the access policy changed"])
  })

  it("fails with the gateway's reasons, one per line", () => {
    expect(
      describeReloadAnswer(400, { error: "the new config is invalid", errors: ["x: bad", "y: worse"] }),
    ).toEqual({ ok: false, lines: ["the new config is invalid", "  x: bad", "  y: worse"] })
    expect(describeReloadAnswer(403, { error: "wrong admin token" }).lines).toEqual(["wrong admin token"])
    expect(describeReloadAnswer(502, "not json").lines).toEqual(["the gateway answered 502"])
  })
})
