/** The results: rows of figures with their comparisons, targets, and the text and JSON renderings. */
import { execFileSync } from "node:child_process"
import { cpus, release, totalmem } from "node:os"

export type Unit = "µs" | "ms" | "KiB" | "MiB"

export interface Comparison {
  /** The `case` of the baseline row compared against. */
  readonly against: string
  /** This row's figure divided by the baseline's (p50, or calls/s for throughput rows). */
  readonly ratio: number
  /** This row's p50 minus the baseline's, in the row's unit (latency rows). */
  readonly delta?: number
  readonly text: string
}

export interface Row {
  readonly scenario: string
  readonly case: string
  readonly unit: Unit
  /** Median (or the single measured value, for memory rows). */
  readonly p50: number
  readonly p99?: number
  /** Samples behind p50/p99. */
  readonly n: number
  /** Calls per second (throughput rows). */
  readonly rate?: number
  /** CPU time per call of the server-side processes between client and MCP server, µs (latency rows). */
  readonly cpuPerCall?: number
  /** A baseline row: what the gateway is compared against. */
  readonly baseline?: boolean
  readonly versus: ReadonlyArray<Comparison>
  readonly note?: string
}

export interface Target {
  readonly scenario: string
  readonly text: string
  readonly status: "met" | "missed" | "not measured"
  readonly detail: string
}

export interface Machine {
  readonly cores: number
  readonly cpu: string
  readonly memoryGiB: number
  readonly node: string
  readonly kernel: string
}

export interface Revision {
  readonly commit: string
  /** src/ has changes not committed: the figures are of the working tree. */
  readonly srcModified: boolean
}

export interface Report {
  readonly date: string
  readonly machine: Machine
  readonly revision: Revision
  readonly options: Readonly<Record<string, unknown>>
  readonly durationSeconds: number
  readonly rows: ReadonlyArray<Row>
  readonly targets: ReadonlyArray<Target>
  readonly notes: ReadonlyArray<string>
  readonly errors: ReadonlyArray<{ readonly scenario: string; readonly message: string }>
}

export const machine = (): Machine => ({
  cores: cpus().length,
  cpu: cpus()[0]?.model.trim() ?? "unknown",
  memoryGiB: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
  node: process.version,
  kernel: release(),
})

/** The commit measured (the gateway is built from the working tree, so say whether src/ differs). */
export const revision = (cwd: string): Revision => {
  try {
    const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd, stdio: "pipe" })
      .toString()
      .trim()
    const status = execFileSync("git", ["status", "--porcelain", "--", "src"], {
      cwd,
      stdio: "pipe",
    }).toString()
    return { commit, srcModified: status.trim() !== "" }
  } catch {
    return { commit: "unknown", srcModified: false }
  }
}

/** Collects rows, targets and notes as the scenarios run. */
export class Results {
  readonly rows: Array<Row> = []
  readonly targets: Array<Target> = []
  readonly notes: Array<string> = []
  readonly errors: Array<{ scenario: string; message: string }> = []

  add(row: Row): Row {
    this.rows.push(row)
    return row
  }

  target(target: Target): void {
    this.targets.push(target)
  }

  note(text: string): void {
    this.notes.push(text)
  }
}

export const formatNumber = (value: number, unit?: Unit): string => {
  if (!Number.isFinite(value)) return "—"
  const abs = Math.abs(value)
  const digits =
    unit === "KiB"
      ? 0
      : unit === "MiB"
        ? 1
        : abs >= 100
          ? 0
          : abs >= 10
            ? 1
            : abs >= 1
              ? 2
              : abs === 0
                ? 0
                : 3
  return value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export const withUnit = (value: number, unit: Unit): string =>
  Number.isFinite(value) ? `${formatNumber(value, unit)} ${unit}` : "—"

const ratioText = (ratio: number) => `${ratio >= 10 ? ratio.toFixed(0) : ratio.toFixed(2)}×`

/** A latency-like comparison (lower is better): "+212 µs (4.90×) vs direct pipe". */
export const compareP50 = (row: Pick<Row, "p50" | "unit">, base: Row, label = base.case): Comparison => {
  const delta = row.p50 - base.p50
  const ratio = row.p50 / base.p50
  const sign = delta >= 0 ? "+" : "−"
  return {
    against: base.case,
    ratio,
    delta,
    text: `${sign}${withUnit(Math.abs(delta), row.unit)} (${ratioText(ratio)}) vs ${label}`,
  }
}

/** A throughput comparison (higher is better): "0.45× the calls/s of direct pipe". */
export const compareRate = (row: Pick<Row, "rate">, base: Row, label = base.case): Comparison => {
  const ratio = (row.rate ?? Number.NaN) / (base.rate ?? Number.NaN)
  return { against: base.case, ratio, text: `${ratioText(ratio)} the calls/s of ${label}` }
}

const pad = (text: string, width: number, right: boolean) =>
  right ? text.padStart(width, " ") : text.padEnd(width, " ")

const table = (
  header: ReadonlyArray<string>,
  body: ReadonlyArray<ReadonlyArray<string>>,
  rightFrom: number,
) => {
  const widths = header.map((title, column) =>
    Math.max(title.length, ...body.map((cells) => (cells[column] ?? "").length)),
  )
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((cell, column) =>
        pad(cell, widths[column] ?? 0, column >= rightFrom && column < header.length - 1),
      )
      .join("  ")
      .trimEnd()
  return [line(header), line(widths.map((width) => "-".repeat(width))), ...body.map(line)].join("\n")
}

export const scenarioTitles: Readonly<Record<string, string>> = {
  latency: "1. Round trip: tools/call echo on an established session, sequential",
  throughput: "2. Throughput: concurrent calls on one session, and many sessions",
  connection: "3. Connection cost: TCP connect to the first tools/list answer",
  memory: "4. Memory: gateway RSS with idle connections, and per session",
  payload: "5. Large payloads: one tool result of 1 MiB and 10 MiB",
  sharing: "6. Sharing: session start, 1,000 sessions and throughput on one shared child",
  fleet: "7. Fleet: logins/s through HAProxy to 3 replicas, and the HAProxy hop on a call",
  revocation: "8. Revocation propagation: a key revoked through one replica, its sessions on the others",
}

interface Columns {
  readonly rate: boolean
  readonly cpu: boolean
}

const columnsOf = (rows: ReadonlyArray<Row>): Columns => ({
  rate: rows.some((row) => row.rate !== undefined),
  cpu: rows.some((row) => row.cpuPerCall !== undefined),
})

const headerOf = (columns: Columns) => [
  "case",
  "p50",
  "p99",
  ...(columns.rate ? ["calls/s"] : []),
  ...(columns.cpu ? ["CPU/call"] : []),
  "n",
  "vs baseline",
]

const rowCells = (row: Row, columns: Columns): Array<string> => [
  `${row.baseline === true ? "[baseline] " : ""}${row.case}`,
  withUnit(row.p50, row.unit),
  row.p99 === undefined ? "" : withUnit(row.p99, row.unit),
  ...(columns.rate ? [row.rate === undefined ? "" : formatNumber(row.rate)] : []),
  ...(columns.cpu ? [row.cpuPerCall === undefined ? "" : withUnit(row.cpuPerCall, "µs")] : []),
  String(row.n),
  [...row.versus.map((comparison) => comparison.text), ...(row.note === undefined ? [] : [row.note])].join(
    "; ",
  ),
]

export const renderText = (report: Report): string => {
  const out: Array<string> = []
  const m = report.machine
  out.push(
    `mcp-ssh bench, ${report.date}: ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, Node ${m.node}, Linux ${m.kernel}`,
  )
  out.push(
    `commit ${report.revision.commit}${report.revision.srcModified ? " (src/ modified)" : ""}; options: ${JSON.stringify(report.options)}; took ${report.durationSeconds.toFixed(0)} s`,
  )
  const scenarios = [...new Set(report.rows.map((row) => row.scenario))]
  for (const scenario of scenarios) {
    const rows = report.rows.filter((row) => row.scenario === scenario)
    const columns = columnsOf(rows)
    const header = headerOf(columns)
    out.push("", scenarioTitles[scenario] ?? scenario, "")
    out.push(
      table(
        header,
        rows.map((row) => rowCells(row, columns)),
        1,
      ),
    )
  }
  if (report.targets.length > 0) {
    out.push(
      "",
      report.options.quick === true ? "Targets (quick run: small samples, indicative only)" : "Targets",
      "",
    )
    for (const target of report.targets) {
      const mark = target.status === "met" ? "MET   " : target.status === "missed" ? "MISSED" : "n/a   "
      out.push(`  ${mark}  ${target.text}: ${target.detail}`)
    }
  }
  if (report.notes.length > 0) {
    out.push("", "Notes", "")
    for (const note of report.notes) out.push(`  - ${note}`)
  }
  if (report.errors.length > 0) {
    out.push("", "Errors", "")
    for (const error of report.errors) out.push(`  - ${error.scenario}: ${error.message}`)
  }
  return out.join("\n")
}

/** The same tables in Markdown, for bench/README.md. */
export const renderMarkdown = (report: Report): string => {
  const m = report.machine
  const out: Array<string> = [
    `${report.date.slice(0, 10)}, ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, Node ${m.node}, Linux ${m.kernel}; ` +
      `commit ${report.revision.commit}${report.revision.srcModified ? " (src/ modified)" : ""}; ` +
      `${report.options.quick === true ? "quick run" : "full run"} in ${report.durationSeconds.toFixed(0)} s.`,
    "",
  ]
  const scenarios = [...new Set(report.rows.map((row) => row.scenario))]
  const escapeCell = (text: string) => text.replaceAll("|", "\\|")
  for (const scenario of scenarios) {
    const rows = report.rows.filter((row) => row.scenario === scenario)
    const columns = columnsOf(rows)
    const header = headerOf(columns)
    out.push(`#### ${scenarioTitles[scenario] ?? scenario}`, "")
    out.push(
      `| ${header.join(" | ")} |`,
      `|${header.map((_, index) => (index === 0 || index === header.length - 1 ? " --- " : " ---: ")).join("|")}|`,
    )
    for (const row of rows) out.push(`| ${rowCells(row, columns).map(escapeCell).join(" | ")} |`)
    out.push("")
  }
  if (report.targets.length > 0) {
    out.push("| target | status | measured |", "| --- | --- | --- |")
    for (const target of report.targets)
      out.push(`| ${escapeCell(target.text)} | ${target.status} | ${escapeCell(target.detail)} |`)
  }
  return out.join("\n")
}
