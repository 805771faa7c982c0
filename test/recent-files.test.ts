/** Key files answered from memory: loaded at most every `millis`, at once after an invalidation. */
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Effect } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { recentWithin, watchFiles } from "../src/gateway/keys/recentFiles.js"

describe("recentWithin", () => {
  it("loads once within the period, again after it or after an invalidation", async () => {
    let loads = 0
    const recent = recentWithin(
      Effect.sync(() => ++loads),
      100,
    )
    expect(await Effect.runPromise(recent.get)).toBe(1)
    expect(await Effect.runPromise(recent.get)).toBe(1)
    recent.invalidate()
    expect(await Effect.runPromise(recent.get)).toBe(2)
    await new Promise((resolve) => setTimeout(resolve, 120))
    expect(await Effect.runPromise(recent.get)).toBe(3)
  })

  it("does not keep a load that an invalidation overtook", async () => {
    let loads = 0
    let recent: ReturnType<typeof recentWithin<number>> | undefined
    recent = recentWithin(
      Effect.sync(() => {
        loads++
        // The files change while this load reads them.
        if (loads === 1) recent?.invalidate()
        return loads
      }),
      10_000,
    )
    expect(await Effect.runPromise(recent.get)).toBe(1)
    expect(await Effect.runPromise(recent.get)).toBe(2)
    expect(await Effect.runPromise(recent.get)).toBe(2)
  })
})

describe("watchFiles", () => {
  const dir = mkdtempSync(join(tmpdir(), "recent-files-"))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it("sees a file replaced by rename, and not its neighbours", async () => {
    const path = join(dir, "authorized_keys")
    writeFileSync(path, "")
    let changes = 0
    await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          yield* watchFiles([path], () => changes++)
          writeFileSync(join(dir, "other"), "x")
          yield* Effect.sleep(100)
          const before = changes
          writeFileSync(`${path}.tmp`, "new\n")
          renameSync(`${path}.tmp`, path)
          yield* Effect.sleep(200)
          expect(before).toBe(0)
          expect(changes).toBeGreaterThan(0)
        }),
      ),
    )
  })
})
