/**
 * The areas of src/ stay apart: the client (src/client/, its entry src/client.ts) never loads the
 * gateway, the gateway (src/gateway/, src/main.ts) never loads the client, and shared code loads
 * neither. Read from the sources with TypeScript's own import scanner,
 * which sees static imports, re-exports, `import type` and dynamic `import()` alike.
 */
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, relative, resolve, sep } from "node:path"
import ts from "typescript"
import { describe, expect, it } from "vitest"
import { repoRoot } from "./support/gateway.js"

const srcRoot = join(repoRoot, "src")

const sourceFiles = (dir: string): Array<string> =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name)
    if (entry.isDirectory()) return sourceFiles(path)
    return entry.name.endsWith(".ts") ? [path] : []
  })

/** Every module specifier a file names, with the line it is on. */
const importsOf = (text: string): Array<{ readonly specifier: string; readonly line: number }> =>
  ts.preProcessFile(text, true, true).importedFiles.map((file) => ({
    specifier: file.fileName,
    line: text.slice(0, file.pos).split("\n").length,
  }))

type Area = "gateway" | "client" | "shared" | "entry"

/** The area of a path under src/; each bin entry belongs to the program it starts. */
const areaOf = (path: string): Area | undefined => {
  const inside = relative(srcRoot, path)
  if (inside.startsWith("..")) return undefined
  if (inside === "main.ts") return "gateway"
  if (inside === "client.ts") return "client"
  const top = inside.split(sep)[0]
  return top === "gateway" || top === "client" || top === "shared" ? top : "entry"
}

const forbidden: Record<Area, ReadonlyArray<Area>> = {
  client: ["gateway"],
  gateway: ["client"],
  shared: ["gateway", "client"],
  entry: [],
}

/** Crossings of the boundaries in one file: `from -> to` with where it is written. */
const crossings = (file: string, text: string): Array<string> => {
  const from = areaOf(file)
  if (from === undefined) return []
  return importsOf(text).flatMap(({ specifier, line }) => {
    // Packages are not areas of src/; only relative paths can reach another area.
    if (!specifier.startsWith(".")) return []
    const to = areaOf(resolve(dirname(file), specifier))
    return to !== undefined && forbidden[from].includes(to)
      ? [`${relative(repoRoot, file)}:${line}: ${from} imports ${to} ("${specifier}")`]
      : []
  })
}

describe("import boundaries of src/", () => {
  const files = sourceFiles(srcRoot)

  it("finds the sources of every area", () => {
    for (const area of ["gateway", "client", "shared"] as const) {
      expect(files.some((file) => areaOf(file) === area)).toBe(true)
    }
  })

  it("client never imports gateway, gateway never imports client, shared imports neither", () => {
    const found = files.flatMap((file) => crossings(file, readFileSync(file, "utf8")))
    expect(found).toEqual([])
  })

  it("sees every form of import that crosses, and none that stays inside", () => {
    const clientFile = join(srcRoot, "client", "Example.ts")
    const sharedFile = join(srcRoot, "shared", "example.ts")
    const gatewayFile = join(srcRoot, "gateway", "keys", "example.ts")
    const crossingText = [
      'import { a } from "../gateway/config/settings.js"',
      'import type { B } from "../gateway/hub/Hub.js"',
      'export { c } from "../gateway/errors.js"',
      'import "../gateway/ssh/SshServer.js"',
      'const d = await import("../gateway/layers.js")',
      "const e = () =>\n  import(\n    '../gateway/cli.js'\n  )",
    ].join("\n")
    expect(crossings(clientFile, crossingText)).toHaveLength(6)
    expect(crossings(sharedFile, 'import { f } from "../client/settings.js"')).toHaveLength(1)
    expect(crossings(sharedFile, 'const g = import("../gateway/cli.js")')).toHaveLength(1)
    expect(crossings(gatewayFile, 'import { h } from "../../client/ClientKey.js"')).toHaveLength(1)
    const allowed = [
      'import { i } from "../shared/jsonRpc.js"',
      'import { j } from "./settings.js"',
      'import { Effect } from "effect"',
    ].join("\n")
    expect(crossings(clientFile, allowed)).toEqual([])
    expect(crossings(gatewayFile, 'import { k } from "../../shared/net.js"')).toEqual([])
    expect(crossings(join(srcRoot, "client.ts"), 'import { main } from "./gateway/cli.js"')).toHaveLength(1)
    expect(crossings(join(srcRoot, "main.ts"), 'import { main } from "./client/cli.js"')).toHaveLength(1)
  })
})
