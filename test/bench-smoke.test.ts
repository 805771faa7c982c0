/**
 * The bench must not rot: run its quick mode on one cheap scenario, end to end through its CLI
 * (vite-node bench/run.ts, as `npm run bench` does), without sshd, and check the JSON it writes.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, describe, expect, it } from "vitest"

const repoRoot = resolve(import.meta.dirname, "..")
const dir = mkdtempSync(join(tmpdir(), "mcp-ssh-bench-smoke-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

const runBench = (args: ReadonlyArray<string>) =>
  new Promise<{ code: number | null; output: string }>((done) => {
    const child = spawn(
      process.execPath,
      [join(repoRoot, "node_modules/vite-node/vite-node.mjs"), "bench/run.ts", ...args],
      {
        cwd: repoRoot,
        stdio: ["ignore", "pipe", "pipe"],
      },
    )
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.stderr.on("data", (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.once("exit", (code) => done({ code, output }))
  })

interface BenchJson {
  readonly rows: ReadonlyArray<{ readonly scenario: string; readonly case: string; readonly p50: number }>
  readonly targets: ReadonlyArray<{ readonly text: string; readonly status: string }>
  readonly errors: ReadonlyArray<unknown>
  readonly machine: { readonly cores: number; readonly node: string }
}

describe("npm run bench", () => {
  it("runs the quick connection scenario end to end and writes its JSON", async () => {
    const output = join(dir, "smoke.json")
    const run = await runBench(["--quick", "--only", "connection", "--no-sshd", "--output", output])
    expect(run.code, run.output).toBe(0)
    expect(run.output).toContain("3. Connection cost")
    const report = JSON.parse(readFileSync(output, "utf8")) as BenchJson
    expect(report.errors).toEqual([])
    expect(report.machine.node).toBe(process.version)
    const cases = report.rows.map((row) => row.case)
    expect(cases).toContain("gateway: handshake+auth only (ssh2, ed25519)")
    expect(cases).toContain("gateway: total (TCP connect to tools/list)")
    expect(cases).toContain("gateway: child ready (session open to first tools/call)")
    for (const row of report.rows) expect(row.p50, row.case).toBeGreaterThan(0)
    expect(report.targets.map((target) => target.text)).toContain(
      "handshake+auth under 10 ms p50 with ed25519",
    )
  }, 90_000)

  it("refuses an unknown scenario with a usage message", async () => {
    const run = await runBench(["--only", "nonsense"])
    expect(run.code).toBe(2)
    expect(run.output).toContain("unknown scenario 'nonsense'")
  })
})
