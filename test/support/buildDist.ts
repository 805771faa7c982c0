/**
 * vitest globalSetup: the suites run the built programs (dist/main.js, dist/client.js) as real
 * processes, so a bare `npx vitest` after an edit would test the previous build. Build dist/ first
 * when it is missing or older than the sources; a failed build stops the run with the compiler's
 * output, and leaves no dist/ that would look up to date next time.
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, rmSync, statSync } from "node:fs"
import { createRequire } from "node:module"
import { join, resolve } from "node:path"

const repoRoot = resolve(import.meta.dirname, "../..")
const dist = join(repoRoot, "dist")

/** The newest modification time of the files under `dir` (0 when there are none). */
const newestUnder = (dir: string): number =>
  readdirSync(dir, { withFileTypes: true }).reduce((newest, entry) => {
    const path = join(dir, entry.name)
    const time = entry.isDirectory() ? newestUnder(path) : statSync(path).mtimeMs
    return Math.max(newest, time)
  }, 0)

/** What the build reads: the sources and the compiler settings. */
const newestInput = (): number =>
  Math.max(
    newestUnder(join(repoRoot, "src")),
    ...["tsconfig.json", "tsconfig.build.json"].map((name) => statSync(join(repoRoot, name)).mtimeMs),
  )

export const isDistStale = (): boolean =>
  !existsSync(join(dist, "main.js")) ||
  !existsSync(join(dist, "client.js")) ||
  newestUnder(dist) < newestInput()

const compilerOutput = (error: unknown): string => {
  if (typeof error !== "object" || error === null) return String(error)
  const { stdout, stderr } = error as { stdout?: unknown; stderr?: unknown }
  const text = [stdout, stderr]
    .map((part) => (part === undefined || part === null ? "" : String(part)))
    .join("")
  return text.trim() === "" ? String(error) : text
}

export default function setup(): void {
  if (!isDistStale()) return
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
  try {
    execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
      encoding: "utf8",
    })
  } catch (error) {
    // tsc writes its output even when it reports errors: remove it, or it would pass for fresh.
    rmSync(dist, { recursive: true, force: true })
    throw new Error(
      `dist/ is out of date and the build failed (tsc -p tsconfig.build.json):\n${compilerOutput(error)}`,
    )
  }
}
