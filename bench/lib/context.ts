/** Options (argv and environment), the sizes of each scenario, and what every scenario is given. */
import { join } from "node:path"
import type { Results } from "./report.js"
import { ensureSshd, type ForcedCommand, type Sshd, type SshdAvailability, startSshd } from "./sshd.js"
import { type ClientKey, repoRoot, type Workspace } from "./workspace.js"

export const scenarioNames = [
  "latency",
  "throughput",
  "connection",
  "memory",
  "payload",
  "sharing",
  "fleet",
  "revocation",
] as const
export type ScenarioName = (typeof scenarioNames)[number]

export interface Options {
  readonly quick: boolean
  readonly only: ReadonlyArray<ScenarioName>
  readonly sshd: boolean
  readonly output: string
  /** Print the tables as Markdown (for bench/README.md) instead of plain text. */
  readonly markdown: boolean
  /** Print the report of a saved JSON file instead of running anything. */
  readonly from: string | undefined
  /** Give up (and clean up) after this many seconds in all. */
  readonly timeLimitSeconds: number
  /** Start the gateways of the latency scenario with --metrics-port (the cost of metrics per call). */
  readonly metrics: boolean
}

export const usage = `Usage: npm run bench -- [options]   (or: vite-node bench/run.ts [options])

  --quick             fewer iterations and smaller scales: a smoke run of a few seconds per scenario
  --only LIST         comma-separated scenarios to run: ${scenarioNames.join(", ")} (default: all)
  --no-sshd           skip the OpenSSH sshd baselines (and the apt-get install of openssh-server)
  --output FILE       where to write the JSON results (default: bench/results/latest.json)
  --markdown          print the tables as Markdown (as in bench/README.md) instead of plain text
  --from FILE         run nothing: print the report of a saved JSON file (e.g. an older latest.json)
  --time-limit SEC    stop and clean up after SEC seconds (default: 900; quick: 180)
  --metrics           latency: run every gateway with metrics on (--metrics-port 0), to compare with a run without
  --help              this text

Environment: BENCH_QUICK=1, BENCH_ONLY=LIST, BENCH_NO_SSHD=1, BENCH_OUTPUT=FILE, BENCH_TIME_LIMIT=SEC,
BENCH_METRICS=1.`

export class UsageError extends Error {}

const parseOnly = (text: string): Array<ScenarioName> => {
  const names = text
    .split(",")
    .map((name) => name.trim())
    .filter((name) => name !== "")
  for (const name of names) {
    if (!(scenarioNames as ReadonlyArray<string>).includes(name)) {
      throw new UsageError(`unknown scenario '${name}'; scenarios: ${scenarioNames.join(", ")}`)
    }
  }
  return names as Array<ScenarioName>
}

/** Options from argv (after the script) and BENCH_* variables; argv wins. Returns undefined for --help. */
export const parseOptions = (
  argv: ReadonlyArray<string>,
  env: Readonly<Record<string, string | undefined>>,
): Options | undefined => {
  let quick = env.BENCH_QUICK === "1" || env.BENCH_QUICK === "true"
  let only = env.BENCH_ONLY === undefined ? [] : parseOnly(env.BENCH_ONLY)
  let sshd = !(env.BENCH_NO_SSHD === "1" || env.BENCH_NO_SSHD === "true")
  let output = env.BENCH_OUTPUT ?? join(repoRoot, "bench/results/latest.json")
  let markdown = false
  let from: string | undefined
  let timeLimit = env.BENCH_TIME_LIMIT === undefined ? undefined : Number(env.BENCH_TIME_LIMIT)
  let metrics = env.BENCH_METRICS === "1" || env.BENCH_METRICS === "true"
  const args = [...argv]
  while (args.length > 0) {
    const arg = args.shift() ?? ""
    const [flag, inline] =
      arg.startsWith("--") && arg.includes("=") ? arg.split(/=(.*)/s, 2) : [arg, undefined]
    const value = () => {
      const next = inline ?? args.shift()
      if (next === undefined || next === "") throw new UsageError(`${flag} needs a value`)
      return next
    }
    switch (flag) {
      case "--quick":
        quick = true
        break
      case "--only":
      case "--scenario":
        only = parseOnly(value())
        break
      case "--no-sshd":
        sshd = false
        break
      case "--output":
        output = value()
        break
      case "--markdown":
        markdown = true
        break
      case "--from":
        from = value()
        break
      case "--time-limit":
        timeLimit = Number(value())
        break
      case "--metrics":
        metrics = true
        break
      case "--help":
      case "-h":
        return undefined
      default:
        throw new UsageError(`unknown argument '${arg}'`)
    }
  }
  if (timeLimit !== undefined && !(timeLimit > 0))
    throw new UsageError("--time-limit must be a positive number")
  return {
    quick,
    only: only.length === 0 ? [...scenarioNames] : only,
    sshd,
    output,
    markdown,
    from,
    timeLimitSeconds: timeLimit ?? (quick ? 180 : 900),
    metrics,
  }
}

/** Iteration counts and scales: full figures, or a quick smoke run. */
export const sizesFor = (quick: boolean) =>
  quick
    ? {
        latency: { warmup: 20, calls: 200, rounds: 2, everythingCalls: 100 },
        throughput: {
          concurrency: [1, 8, 64],
          callsPerRun: 400,
          maxRunMs: 2_000,
          sessions: [1, 4],
          sessionRunMs: 500,
        },
        connection: { sessions: 3, handshakes: 5, openssh: 2, everything: 1 },
        memory: { idle: [0, 20], sshdIdle: 10, sessions: 3, settleMs: 500, samples: 3 },
        payload: { sizes: [{ bytes: 1 << 20, reps: 3 }], peakSamples: 0 },
        sharing: {
          starts: 5,
          everythingStarts: 2,
          sessions: 50,
          perSessionSessions: 10,
          seconds: 3,
          throughputCalls: 1_000,
        },
        fleet: { loginConcurrency: 4, loginSeconds: 1, loginRounds: 1, warmup: 20, calls: 200, rounds: 4 },
        revocation: { rounds: 5 },
      }
    : {
        latency: { warmup: 1_000, calls: 2_000, rounds: 4, everythingCalls: 1_000 },
        throughput: {
          concurrency: [1, 8, 64],
          callsPerRun: 5_000,
          maxRunMs: 8_000,
          sessions: [1, 16, 128],
          sessionRunMs: 3_000,
        },
        connection: { sessions: 30, handshakes: 100, openssh: 20, everything: 5 },
        memory: { idle: [0, 100, 1_000], sshdIdle: 100, sessions: 20, settleMs: 3_000, samples: 5 },
        payload: {
          sizes: [
            { bytes: 1 << 20, reps: 10 },
            { bytes: 10 << 20, reps: 5 },
          ],
          peakSamples: 0,
        },
        sharing: {
          starts: 30,
          everythingStarts: 10,
          sessions: 1_000,
          perSessionSessions: 100,
          seconds: 30,
          throughputCalls: 20_000,
        },
        fleet: {
          loginConcurrency: 8,
          loginSeconds: 3,
          loginRounds: 3,
          warmup: 500,
          calls: 2_000,
          rounds: 40,
        },
        revocation: { rounds: 40 },
      }

export type Sizes = ReturnType<typeof sizesFor>

export interface Context {
  readonly options: Options
  readonly sizes: Sizes
  readonly workspace: Workspace
  readonly results: Results
  /** The ed25519 client key every client logs in with. */
  readonly clientKey: ClientKey
  readonly log: (line: string) => void
  /** Start an sshd with these forced commands, or undefined (with a note saying why) when it cannot run. */
  readonly sshd: (forced: ReadonlyArray<ForcedCommand>, name?: string) => Promise<Sshd | undefined>
  /** Throws once the run's time limit has passed: every loop checks it. */
  readonly checkTime: () => void
}

export const makeSshdStarter = (
  options: Options,
  workspace: Workspace,
  results: Results,
  log: (line: string) => void,
) => {
  let availability: Promise<SshdAvailability> | undefined
  let reported = false
  return async (forced: ReadonlyArray<ForcedCommand>, name = "sshd"): Promise<Sshd | undefined> => {
    if (!options.sshd) {
      if (!reported) results.note("sshd baselines skipped (--no-sshd)")
      reported = true
      return undefined
    }
    availability ??= ensureSshd(log)
    const available = await availability
    if (!available.ok) {
      if (!reported) results.note(`sshd baselines not measured: ${available.reason}`)
      reported = true
      log(`sshd is not available: ${available.reason}`)
      return undefined
    }
    if (!reported) {
      results.note(
        `sshd baselines: ${available.version}${available.installed ? " (installed by this run)" : ""}`,
      )
      reported = true
    }
    try {
      return await startSshd(workspace, forced, name)
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      results.note(`sshd (${name}) could not run: ${message.split("\n").slice(0, 4).join(" ")}`)
      log(`sshd could not run: ${message}`)
      return undefined
    }
  }
}
