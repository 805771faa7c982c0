/**
 * `npm run build`: dist/ from nothing (tsc never removes the output of a source that is gone), and a
 * stamp written only once the compiler has succeeded, which the test setup compares with the sources.
 * A failed build leaves no dist/ that could pass for up to date.
 */
import { execFileSync } from "node:child_process"
import { rmSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import { join, resolve } from "node:path"

const repoRoot = resolve(import.meta.dirname, "..")
const dist = join(repoRoot, "dist")
const buildStamp = join(dist, ".build-stamp")

rmSync(dist, { recursive: true, force: true })
const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc")
try {
  execFileSync(process.execPath, [tsc, "-p", "tsconfig.build.json"], { cwd: repoRoot, stdio: "inherit" })
} catch {
  rmSync(dist, { recursive: true, force: true })
  process.exit(1)
}
writeFileSync(buildStamp, `${new Date().toISOString()}\n`)
