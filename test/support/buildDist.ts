/**
 * vitest globalSetup: the suites run the built programs (dist/main.js, dist/client.js) as real
 * processes, so a bare `npx vitest run` after an edit would test the previous build. Build dist/
 * first when its stamp (written only by a build that succeeded) is missing or older than the sources;
 * a failed build stops the run with the compiler's output. (Watch mode runs this once, at its start.)
 */
import { execFileSync } from "node:child_process"
import { existsSync, readdirSync, statSync } from "node:fs"
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

/** Written by scripts/build.mjs once the compiler has succeeded; its time is the build's. */
const buildStamp = join(dist, ".build-stamp")

export const isDistStale = (): boolean =>
  !existsSync(buildStamp) || statSync(buildStamp).mtimeMs < newestInput()

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
  try {
    // The same build as `npm run build`: dist/ from nothing, then the stamp.
    execFileSync(process.execPath, [join(repoRoot, "scripts/build.mjs")], {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "pipe"],
      encoding: "utf8",
    })
  } catch (error) {
    throw new Error(`dist/ is out of date and the build failed (npm run build):\n${compilerOutput(error)}`)
  }
}
