/** Reading the gateway's /metrics as a Prometheus server would: over HTTP, through a text-format parser. */
import { readdirSync, readFileSync, readlinkSync } from "node:fs"
import parsePrometheusTextFormat, {
  type PrometheusFamily,
  type PrometheusSample,
} from "parse-prometheus-text-format"
import type { RunningGateway } from "./gateway.js"

/** The /metrics URL the gateway logged at start. */
export const metricsUrl = async (gateway: RunningGateway): Promise<string> => {
  const line = await gateway.waitForLog(/metrics listening on http:\/\//)
  const url = /metrics listening on (http:\/\/[^\s"]+)/.exec(line)?.[1]
  if (url === undefined) throw new Error(`no URL in ${line}`)
  return url
}

export class Scrape {
  readonly families: ReadonlyArray<PrometheusFamily>
  /**
   * The same text without its comments, so every series is its own untyped family: the parser folds
   * a histogram's samples into one and drops their labels, so histograms are read from here.
   */
  private readonly untyped: ReadonlyArray<PrometheusFamily>

  constructor(readonly text: string) {
    this.families = parsePrometheusTextFormat(text)
    this.untyped = parsePrometheusTextFormat(
      text
        .split("\n")
        .filter((line) => !line.startsWith("#"))
        .join("\n"),
    )
  }

  family(name: string): PrometheusFamily | undefined {
    return this.families.find((family) => family.name === name)
  }

  /** The samples of a series whose labels include `labels`. */
  samples(name: string, labels: Readonly<Record<string, string>> = {}): ReadonlyArray<PrometheusSample> {
    // Untyped, a histogram's series alternate: each run of lines is a family of its own.
    const found =
      this.family(name)?.metrics ??
      this.untyped.flatMap((series) => (series.name === name ? series.metrics : []))
    return found.filter((sample) =>
      Object.entries(labels).every(([key, value]) => sample.labels?.[key] === value),
    )
  }

  /**
   * The sum of the values of the matching samples; for a histogram, of their counts (its `_sum` and
   * `_bucket` series are read by their own names).
   */
  value(name: string, labels: Readonly<Record<string, string>> = {}): number {
    const series = this.family(name)?.type === "HISTOGRAM" ? `${name}_count` : name
    return this.samples(series, labels).reduce((sum, sample) => sum + Number(sample.value), 0)
  }
}

export const scrape = async (url: string): Promise<Scrape> => {
  const response = await fetch(url)
  if (response.status !== 200) throw new Error(`GET ${url}: ${response.status}`)
  return new Scrape(await response.text())
}

/** Scrape until `ready` holds (what the gateway counts as a connection closes lands a moment later). */
export const scrapeUntil = async (url: string, ready: (scrape: Scrape) => boolean, timeoutMs = 5_000) => {
  const until = Date.now() + timeoutMs
  for (;;) {
    const current = await scrape(url)
    if (ready(current) || Date.now() > until) return current
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The TCP ports a process listens on, from /proc: its socket inodes matched with the LISTEN entries. */
export const listeningPorts = (pid: number): Array<number> => {
  const inodes = new Set<string>()
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const match = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (match?.[1] !== undefined) inodes.add(match[1])
    } catch {
      // Closed meanwhile.
    }
  }
  const ports: Array<number> = []
  for (const table of ["tcp", "tcp6"]) {
    let lines: Array<string> = []
    try {
      lines = readFileSync(`/proc/${pid}/net/${table}`, "utf8").split("\n").slice(1)
    } catch {
      continue
    }
    for (const line of lines) {
      const fields = line.trim().split(/\s+/)
      const [, local, , state] = fields
      const inode = fields[9]
      if (state === "0A" && inode !== undefined && inodes.has(inode) && local !== undefined) {
        ports.push(Number.parseInt(local.split(":")[1] ?? "0", 16))
      }
    }
  }
  return ports.sort((a, b) => a - b)
}
