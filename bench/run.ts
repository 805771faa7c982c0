/**
 * `npm run bench`: build, then run the scenarios, print the table and write it as JSON
 * (bench/results/latest.json). See bench/README.md.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname } from "node:path"
import {
  type Context,
  makeSshdStarter,
  parseOptions,
  type ScenarioName,
  sizesFor,
  UsageError,
  usage,
} from "./lib/context.js"
import { killAllNow, stopAll, trackedCount } from "./lib/procs.js"
import { machine, type Report, Results, renderMarkdown, renderText, revision } from "./lib/report.js"
import { mainScript, removeAllWorkspaces, repoRoot, Workspace } from "./lib/workspace.js"
import { connection } from "./scenarios/connection.js"
import { fleet } from "./scenarios/fleet.js"
import { latency } from "./scenarios/latency.js"
import { memory } from "./scenarios/memory.js"
import { payload } from "./scenarios/payload.js"
import { revocation } from "./scenarios/revocation.js"
import { sharing } from "./scenarios/sharing.js"
import { throughput } from "./scenarios/throughput.js"

/**
 * Which crypto ssh2 ran with (the gateway, the relay and the bench's clients load the same ssh2): its
 * optional native addon (AES-GCM, ChaCha20-Poly1305 in C) or Node's crypto alone, and whether its
 * packet padding comes from a pool (the patch in patches/).
 */
const ssh2Crypto = (): string => {
  const require = createRequire(import.meta.url)
  let addon: string
  try {
    require("ssh2/lib/protocol/crypto/build/Release/sshcrypto.node")
    addon = "native addon (sshcrypto.node) loaded"
  } catch {
    addon = "no native addon: Node crypto only"
  }
  const source = readFileSync(require.resolve("ssh2/lib/protocol/crypto.js"), "utf8")
  const pooled = source.includes("fillPadding(")
    ? "pooled padding (patched)"
    : "randomFillSync per packet (unpatched)"
  return `ssh2 crypto: ${addon}; ${pooled}`
}

const scenarios: Record<ScenarioName, (ctx: Context) => Promise<void>> = {
  latency,
  throughput,
  connection,
  memory,
  payload,
  sharing,
  fleet,
  revocation,
}

class TimeLimit extends Error {}

const main = async (): Promise<number> => {
  let options: ReturnType<typeof parseOptions>
  try {
    options = parseOptions(process.argv.slice(2), process.env)
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`bench: ${error.message}\n\n${usage}\n`)
      return 2
    }
    throw error
  }
  if (options === undefined) {
    process.stdout.write(`${usage}\n`)
    return 0
  }
  if (options.from !== undefined) {
    const saved = JSON.parse(readFileSync(options.from, "utf8")) as Report
    process.stdout.write(`${options.markdown ? renderMarkdown(saved) : renderText(saved)}\n`)
    return 0
  }
  if (!existsSync(mainScript)) {
    process.stderr.write(
      `bench: ${mainScript} is missing: run \`npm run build\` first (npm run bench does)\n`,
    )
    return 2
  }
  const started = Date.now()
  const deadline = started + options.timeLimitSeconds * 1_000
  const log = (line: string) =>
    process.stderr.write(`[bench ${((Date.now() - started) / 1_000).toFixed(1).padStart(5)} s] ${line}\n`)
  const results = new Results()
  results.note(ssh2Crypto())
  const workspace = new Workspace()
  let failed = false
  try {
    const ctx: Context = {
      options,
      sizes: sizesFor(options.quick),
      workspace,
      results,
      clientKey: workspace.key("client"),
      log,
      sshd: makeSshdStarter(options, workspace, results, log),
      checkTime: () => {
        if (Date.now() > deadline)
          throw new TimeLimit(`the time limit of ${options.timeLimitSeconds} s passed`)
      },
    }
    for (const name of options.only) {
      log(`${name}: start`)
      const scenarioStart = Date.now()
      try {
        ctx.checkTime()
        await scenarios[name](ctx)
      } catch (error) {
        failed = true
        const message = error instanceof Error ? (error.stack ?? error.message) : String(error)
        results.errors.push({ scenario: name, message: message.split("\n").slice(0, 6).join("\n    ") })
        log(`${name}: FAILED: ${message}`)
      } finally {
        // Whatever the scenario left running (it stops its own processes; this catches the rest).
        if (trackedCount() > 0) await stopAll()
      }
      log(`${name}: done in ${((Date.now() - scenarioStart) / 1_000).toFixed(1)} s`)
      if (interruptedBy !== undefined) {
        results.note(`interrupted by ${interruptedBy}: the remaining scenarios were skipped`)
        break
      }
      if (Date.now() > deadline) {
        log("time limit reached: skipping the remaining scenarios")
        results.note(`stopped at the time limit (${options.timeLimitSeconds} s)`)
        failed = true
        break
      }
    }
  } finally {
    await stopAll()
    workspace.remove()
  }
  const report: Report = {
    date: new Date(started).toISOString(),
    machine: machine(),
    revision: revision(repoRoot),
    options: {
      quick: options.quick,
      only: options.only,
      sshd: options.sshd,
    },
    durationSeconds: (Date.now() - started) / 1_000,
    rows: results.rows,
    targets: results.targets,
    notes: results.notes,
    errors: results.errors,
  }
  const rendered = options.markdown ? renderMarkdown(report) : renderText(report)
  if (interruptedBy !== undefined) {
    process.stdout.write(`${rendered}\n\nInterrupted: ${options.output} was not written.\n`)
    return 130
  }
  mkdirSync(dirname(options.output), { recursive: true })
  writeFileSync(options.output, `${JSON.stringify(report, null, 2)}\n`)
  process.stdout.write(`${rendered}\n\nJSON: ${options.output}\n`)
  return failed ? 1 : 0
}

// Processes run in their own groups, so ^C does not reach them: end them here. The scenario that was
// running fails, the others are skipped, and the partial results are printed but not saved.
let interruptedBy: NodeJS.Signals | undefined
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    if (interruptedBy !== undefined) return
    interruptedBy = signal
    process.stderr.write(`bench: ${signal}: stopping every process it started\n`)
    void stopAll(1_000)
    // Should the run not wind down by itself, leave anyway (the exit handler kills what is left).
    setTimeout(() => process.exit(130), 15_000)
  })
}
process.on("exit", () => {
  killAllNow()
  removeAllWorkspaces()
})

main().then(
  (code) => {
    // Every process is stopped and the results are written: do not wait for stray handles.
    process.exit(code)
  },
  (error: unknown) => {
    process.stderr.write(
      `bench: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    )
    process.exit(1)
  },
)
