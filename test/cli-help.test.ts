/**
 * Both programs' command lines, piped as a script or a log collector would read them: help and errors
 * in plain text (no ANSI styling), flags that say what they take, and a wrong value refused naming
 * its flag.
 */
import { spawnSync } from "node:child_process"
import { rmSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { checkTypedFlags, flagTypes, stripAnsi } from "../src/shared/cliFlags.js"
import { mainScript, repoRoot, tempDir } from "./support/gateway.js"

const clientScript = join(repoRoot, "dist/client.js")

/** Run to completion with stdout and stderr piped (not a terminal). */
const run = (script: string, args: ReadonlyArray<string>) => {
  const home = tempDir("mcp-ssh-cli-help-")
  const result = spawnSync(process.execPath, [script, ...args], {
    cwd: home,
    env: { PATH: process.env.PATH ?? "", HOME: home },
    stdio: ["ignore", "pipe", "pipe"],
    encoding: "utf8",
    timeout: 15_000,
  })
  rmSync(home, { recursive: true, force: true })
  return { code: result.status, stdout: result.stdout, stderr: result.stderr }
}

const esc = String.fromCharCode(27)

describe.each([
  ["mcp-ssh-server", mainScript, 1],
  ["mcp-ssh-client", clientScript, 2],
] as const)("%s", (name, script, usageStatus) => {
  it("prints --help in plain text when stdout is not a terminal, with the type each flag takes", () => {
    const help = run(script, ["--help"])
    expect(help.code, help.stderr).toBe(0)
    expect(help.stdout).not.toContain(`${esc}[`)
    expect(help.stdout).toMatch(/^--port integer$/m)
    expect(help.stdout).toMatch(/^--key-server-port integer$/m)
    expect(help.stdout).toMatch(/^--log-level TRACE \| DEBUG \| INFO \| WARNING \|/m)
    // Only text flags are described as text.
    const portHelp = help.stdout.slice(help.stdout.search(/^--port integer$/m)).split("\n\n")[1]
    expect(portHelp?.trim()).toBe("An integer.")
  })

  it("prints @effect/cli's own errors in plain text too", () => {
    const bad = run(script, ["--no-such-flag"])
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).not.toBe("")
    expect(bad.stderr).not.toContain(`${esc}[`)
    expect(bad.stdout).not.toContain(`${esc}[`)
  })

  it.each([
    [["--port", "abc"], /--port: "abc" is not an integer/],
    [["--key-server-port=1.5"], /--key-server-port: "1\.5" is not an integer/],
    [["--log-level", "loud"], /--log-level: "loud" is not one of TRACE, DEBUG, INFO, /],
  ])("refuses %j naming the flag", (args, message) => {
    const bad = run(script, args)
    expect(bad.code).toBe(usageStatus)
    expect(bad.stdout).toBe("")
    expect(bad.stderr).toMatch(new RegExp(`^${name}: `))
    expect(bad.stderr).toMatch(message)
    expect(bad.stderr.trim().split("\n")).toHaveLength(1)
  })
})

describe("checkTypedFlags", () => {
  const types = {
    port: flagTypes.integer,
    wait: flagTypes.float,
    level: flagTypes.choice(["DEBUG", "INFO"]),
    name: flagTypes.text,
  }

  it("passes good values on, choices in their listed case, in both spellings", () => {
    const args = ["--port", "22", "--level=info", "--wait", "0.5", "--level", "Debug"]
    expect(checkTypedFlags(args, types)).toMatchObject({
      _tag: "Right",
      right: ["--port", "22", "--level=INFO", "--wait", "0.5", "--level", "DEBUG"],
    })
  })

  it("leaves the values of other flags alone, even ones that look like typed flags", () => {
    const args = ["--name", "--port", "--other", "x", "keys", "list", "--name=--port"]
    expect(checkTypedFlags(args, types)).toMatchObject({ _tag: "Right", right: args })
  })

  it("refuses the first bad value, naming its flag", () => {
    expect(checkTypedFlags(["--port", "1", "--wait", "soon", "--port", "x"], types)).toMatchObject({
      _tag: "Left",
      left: '--wait: "soon" is not a number',
    })
    expect(checkTypedFlags(["--level=TRACE"], types)).toMatchObject({
      _tag: "Left",
      left: '--level: "TRACE" is not one of DEBUG, INFO',
    })
  })

  it("stripAnsi removes styling only", () => {
    expect(stripAnsi(`${esc}[0;1mUSAGE${esc}[0m and [0m`)).toBe("USAGE and [0m")
  })
})
