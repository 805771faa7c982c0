/**
 * The access policy without IO: its Schema and checks (errors name the path), globs, the union of an
 * identity's groups, deny beating allow, `default` for identities in no group, and the limits.
 */
import { Either, Schema } from "effect"
import { describe, expect, it } from "vitest"
import {
  type AccessSection,
  AccessSection as AccessSectionSchema,
  checkAccess,
  compileAccess,
  globsToRegExp,
  parseRateLimit,
} from "../src/gateway/access/accessConfig.js"
import { resolveAccess, unrestricted, type Who } from "../src/gateway/access/sessionAccess.js"
import { decodeServersConfig } from "../src/gateway/config/serversConfig.js"

const servers = ["github", "files", "search", "old"]

/** The example policy. */
const team: AccessSection = {
  default: { servers: ["search"] },
  groups: {
    dev: { servers: ["github", "files"], deny: ["files__delete_*"] },
    ci: { servers: ["github"], allow: ["gh__get_*", "gh__list_*"], rateLimit: "120/min", maxSessions: 4 },
    ops: { servers: ["files"] },
  },
  identities: { alice: { groups: ["dev"] }, bob: { groups: ["dev"], deny: ["github__*"] } },
}

const view = (access: AccessSection, who: Who) => resolveAccess(compileAccess(access), who)

describe("access: globs", () => {
  it("match whole names, with * and ? only", () => {
    const regexp = globsToRegExp(["gh__get_*", "a?c", "x.y"])
    expect(["gh__get_issue", "gh__get_", "abc", "x.y"].map((name) => regexp?.test(name))).toEqual([
      true,
      true,
      true,
      true,
    ])
    expect(["xgh__get_issue", "gh__list", "abbc", "xzy"].map((name) => regexp?.test(name))).toEqual([
      false,
      false,
      false,
      false,
    ])
    expect(globsToRegExp([])).toBeUndefined()
  })
})

describe("access: what an identity may use", () => {
  it("an identity in no group gets default, and only default", () => {
    const anonymous = view(team, { identity: "SHA256:someone", groups: [] })
    expect(servers.filter(anonymous.server)).toEqual(["search"])
    expect(anonymous.name("search", "search__query")).toBe(true)
    expect(anonymous.name("github", "github__get_issue")).toBe(false)
  })

  it("an identity's groups come from its key and from identities.<name>, and it gets their union", () => {
    const alice = view(team, { identity: "alice", groups: ["ops"] })
    expect(servers.filter(alice.server)).toEqual(["github", "files"])
    // Not default: alice has groups.
    expect(alice.server("search")).toBe(false)
    expect(view(team, { identity: "carol", groups: ["ci", "ops"] }).server("files")).toBe(true)
  })

  it("allow limits a group's names to its globs; without allow every name of its servers", () => {
    const ci = view(team, { identity: "runner", groups: ["ci"] })
    expect(ci.name("github", "gh__get_issue")).toBe(true)
    expect(ci.name("github", "gh__list_repos")).toBe(true)
    expect(ci.name("github", "gh__create_issue")).toBe(false)
    // An allow glob matching another server's name grants nothing there.
    expect(ci.name("files", "gh__get_issue")).toBe(false)
    const dev = view(team, { identity: "dave", groups: ["dev"] })
    expect(dev.name("github", "gh__create_issue")).toBe(true)
  })

  it("deny beats allow, from any rule that applies", () => {
    const dev = view(team, { identity: "dave", groups: ["dev"] })
    expect(dev.name("files", "files__read")).toBe(true)
    expect(dev.name("files", "files__delete_all")).toBe(false)
    // ops alone allows every name of files; dev's deny still wins for someone in both.
    const both = view(team, { identity: "erin", groups: ["dev", "ops"] })
    expect(both.name("files", "files__delete_all")).toBe(false)
    // identities.<name>.deny takes names away from what the groups give.
    const bob = view(team, { identity: "bob", groups: [] })
    expect(bob.server("github")).toBe(true)
    expect(bob.name("github", "github__get_issue")).toBe(false)
    expect(bob.name("files", "files__read")).toBe(true)
  })

  it("a group the policy does not define grants nothing, and does not fall back to default", () => {
    const typo = view(team, { identity: "frank", groups: ["devs"] })
    expect(servers.filter(typo.server)).toEqual([])
    expect(typo.undefinedGroups).toEqual(["devs"])
  })

  it("without an access object everything is allowed, without limits", () => {
    const all = resolveAccess(undefined, { identity: "anyone", groups: ["x"] })
    expect(all).toBe(unrestricted)
    expect(all.server("old") && all.name("old", "anything")).toBe(true)
  })

  it("an access object without default gives identities in no group nothing", () => {
    const none = view({ groups: { dev: { servers: ["*"] } } }, { identity: "x", groups: [] })
    expect(servers.filter(none.server)).toEqual([])
  })

  it("limits: the most generous rule that grants servers, a rule without one meaning none", () => {
    expect(view(team, { identity: "runner", groups: ["ci"] })).toMatchObject({
      rateLimit: { capacity: 120, refillPerSecond: 2 },
      maxSessions: 4,
    })
    expect(view(team, { identity: "runner", groups: ["ci", "ops"] })).toMatchObject({
      rateLimit: undefined,
      maxSessions: undefined,
    })
    const two: AccessSection = {
      groups: {
        slow: { servers: ["github"], rateLimit: "10/min", maxSessions: 1 },
        fast: { servers: ["files"], rateLimit: "1/s", maxSessions: 3 },
      },
      identities: { pinned: { groups: ["slow", "fast"], rateLimit: "5/h", maxSessions: 2 } },
    }
    expect(view(two, { identity: "x", groups: ["slow", "fast"] })).toMatchObject({
      rateLimit: { text: "1/s" },
      maxSessions: 3,
    })
    // identities.<name> decides when it sets a limit.
    expect(view(two, { identity: "pinned", groups: [] })).toMatchObject({
      rateLimit: { text: "5/h" },
      maxSessions: 2,
    })
  })

  it("the view's key changes exactly when the rules that apply change", () => {
    const before = view(team, { identity: "dave", groups: ["dev"] })
    const same = view(
      { ...team, groups: { ...team.groups, ci: { servers: ["*"] } } },
      { identity: "dave", groups: ["dev"] },
    )
    const changed = view(
      { ...team, groups: { ...team.groups, dev: { servers: ["github"] } } },
      { identity: "dave", groups: ["dev"] },
    )
    expect(same.key).toBe(before.key)
    expect(changed.key).not.toBe(before.key)
  })
})

describe("access: rates", () => {
  it("reads N/s, N/min and N/h", () => {
    expect(parseRateLimit("120/min")).toEqual({ text: "120/min", capacity: 120, refillPerSecond: 2 })
    expect(parseRateLimit("5/s")).toMatchObject({ capacity: 5, refillPerSecond: 5 })
    expect(parseRateLimit("36/h")).toMatchObject({ capacity: 36, refillPerSecond: 0.01 })
    for (const bad of ["0/min", "10/m", "10 per minute", "1.5/s", "/s", "10/"])
      expect(parseRateLimit(bad)).toBeUndefined()
  })
})

describe("access: checks of the config", () => {
  it("names the path of a server, group or name glob that cannot be right", () => {
    const access: AccessSection = {
      default: { servers: ["github", "nothing-*"] },
      groups: {
        ci: { servers: ["gihub"], allow: ["gh.get"] },
        docs: { allow: ["x__*"] },
      },
      identities: { alice: { groups: ["dev"] } },
    }
    expect(checkAccess(access, servers)).toEqual({
      problems: [
        "access.groups.ci.servers[0]: no server 'gihub'",
        "access.groups.ci.allow[0]: 'gh.get' can never match a tool or prompt name (letters, digits, '_' and '-', with '*' and '?')",
        "access.identities.alice.groups[0]: no group 'dev'",
      ],
      warnings: [
        "access.default.servers[1]: 'nothing-*' matches no server",
        "access.groups.docs.allow: without 'servers' it allows nothing",
      ],
    })
    expect(checkAccess(team, servers)).toEqual({ problems: [], warnings: [] })
  })

  it("a disabled server may be named (disabling one must not break the policy)", () => {
    expect(checkAccess({ default: { servers: ["old"] } }, servers).problems).toEqual([])
  })

  it("the Schema refuses unknown fields, bad rates and session counts, naming the field", () => {
    const decoded = decodeServersConfig({
      mcpServers: { github: { command: "gh" } },
      access: {
        groups: { ci: { servers: ["github"], rateLimit: "120/minute", maxSessions: 0, alow: [] } },
      },
    })
    expect(Either.isLeft(decoded)).toBe(true)
    const text = Either.isLeft(decoded) ? decoded.left : ""
    expect(text).toContain("access.groups.ci.rateLimit")
    expect(text).toContain("'120/minute' is not a rate: write N/s, N/min or N/h (such as 120/min)")
    expect(text).toContain("maxSessions must be a whole number of at least 1")
    expect(text).toContain("access.groups.ci.alow")
    expect(Schema.decodeUnknownEither(AccessSectionSchema)(team)._tag).toBe("Right")
  })
})
