/** The pure parts of the guards against misbehaving children: the stderr log budget, /proc/PID/stat. */
import { describe, expect, it } from "vitest"
import {
  admit,
  freshLogBudget,
  readPause,
  rollOver,
  untilWindowEnds,
} from "../src/gateway/children/logBudget.js"
import { parseProcessStat } from "../src/gateway/children/processStat.js"

const policy = { maxLines: 3, maxBytes: 1000, windowMillis: 1000 }

describe("the stderr log budget", () => {
  it("passes maxLines lines a window and counts the rest", () => {
    const first = admit(freshLogBudget(0), policy, 10, 2)
    expect(first.logged).toBe(2)
    const second = admit(first.budget, policy, 10, 5)
    expect(second.logged).toBe(1)
    expect(second.budget).toEqual({ windowStart: 0, lines: 3, bytes: 20, suppressed: 4 })
    expect(admit(second.budget, policy, 10, 1).logged).toBe(0)
  })

  it("reports what a window held back once it has ended, and starts a fresh one", () => {
    const held = admit(freshLogBudget(0), policy, 10, 10).budget
    expect(rollOver(held, policy, 999)).toEqual({ budget: held, suppressed: 0 })
    expect(rollOver(held, policy, 1000)).toEqual({ budget: freshLogBudget(1000), suppressed: 7 })
    expect(untilWindowEnds(held, policy, 250)).toBe(750)
  })

  it("makes the reader wait for the window's end once its bytes are used up", () => {
    const under = admit(freshLogBudget(0), policy, 999, 1).budget
    expect(readPause(under, policy, 100)).toBe(0)
    const over = admit(under, policy, 1, 0).budget
    expect(readPause(over, policy, 100)).toBe(900)
    expect(readPause(over, policy, 1500)).toBe(0)
  })
})

describe("parseProcessStat", () => {
  it("reads state, parent, process group and start time, whatever the command name holds", () => {
    const fields = Array.from({ length: 50 }, (_, index) => String(index + 3))
    fields[0] = "S"
    fields[1] = "100"
    fields[2] = "200"
    fields[19] = "123456"
    expect(parseProcessStat(`4242 (a (weird) name) ${fields.join(" ")}`)).toEqual({
      state: "S",
      parent: 100,
      processGroup: 200,
      startTime: "123456",
    })
    expect(parseProcessStat("garbage")).toBeUndefined()
    expect(parseProcessStat("1 (short) S 0")).toBeUndefined()
  })
})
