/** The shared file helpers and small shared tables, against real files in a temporary directory. */
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Cause, Effect, Exit, LogLevel, Option } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import {
  appendLine,
  FileError,
  readTextIfExists,
  statIfExists,
  writeFileAtomic,
  writeFileWithMode,
} from "../src/shared/fileSystem.js"
import { logLevelOf } from "../src/shared/logLevel.js"
import { urlHost } from "../src/shared/net.js"
import { expandHome } from "../src/shared/paths.js"
import { blobKeyType, decodeBase64 } from "../src/shared/publicKey.js"

const dir = mkdtempSync(join(tmpdir(), "mcp-ssh-fs-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** The FileError an effect failed with. */
const failureOf = async (effect: Effect.Effect<unknown, FileError>): Promise<FileError> => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) throw new Error("expected a failure")
  const failure = Cause.failureOption(exit.cause)
  if (Option.isNone(failure)) throw new Error(Cause.pretty(exit.cause))
  return failure.value
}

describe("fileSystem", () => {
  it("reads a missing file as none, and an existing one as its text", async () => {
    expect(await Effect.runPromise(readTextIfExists(join(dir, "missing")))).toEqual(Option.none())
    expect(await Effect.runPromise(statIfExists(join(dir, "missing")))).toEqual(Option.none())
    const path = join(dir, "present")
    writeFileSync(path, "text\n")
    expect(await Effect.runPromise(readTextIfExists(path))).toEqual(Option.some("text\n"))
  })

  it("fails with a FileError naming the path, the operation and the errno code", async () => {
    const file = join(dir, "regular")
    writeFileSync(file, "")
    const under = join(file, "child")
    const error = await failureOf(readTextIfExists(under))
    expect(error).toBeInstanceOf(FileError)
    expect(error).toMatchObject({ _tag: "FileError", path: under, operation: "read", code: "ENOTDIR" })
    expect(error.message).toMatch(/^ENOTDIR: not a directory/)
    expect((await failureOf(statIfExists(under))).operation).toBe("stat")
  })

  it("writes atomically with the mode asked for, whatever the umask", async () => {
    const path = join(dir, "new", "atomic")
    await Effect.runPromise(writeFileAtomic(path, "one"))
    await Effect.runPromise(writeFileAtomic(path, "two", 0o644))
    expect(readFileSync(path, "utf8")).toBe("two")
    expect(statSync(path).mode & 0o777).toBe(0o644)
    expect(statSync(join(dir, "new")).mode & 0o777).toBe(0o700)
  })

  it("never overwrites a file when writing exclusively: the error says EEXIST", async () => {
    const path = join(dir, "exclusive")
    await Effect.runPromise(writeFileWithMode(path, "first", 0o600, { exclusive: true }))
    const error = await failureOf(writeFileWithMode(path, "second", 0o600, { exclusive: true }))
    expect(error).toMatchObject({ path, operation: "write", code: "EEXIST" })
    expect(readFileSync(path, "utf8")).toBe("first")
    await Effect.runPromise(writeFileWithMode(path, "third", 0o644))
    expect(readFileSync(path, "utf8")).toBe("third")
    expect(statSync(path).mode & 0o777).toBe(0o644)
  })

  it("appends a line on a line of its own", async () => {
    const path = join(dir, "lines")
    await Effect.runPromise(appendLine(path, "a"))
    // Created 0600: others may not read what the file will hold.
    expect(statSync(path).mode & 0o077).toBe(0)
    writeFileSync(path, "a\nunfinished")
    await Effect.runPromise(appendLine(path, "b"))
    expect(readFileSync(path, "utf8")).toBe("a\nunfinished\nb\n")
  })
})

describe("shared small helpers", () => {
  it("expands ~ under the home directory", () => {
    expect(expandHome("~", "/home/me")).toBe("/home/me")
    expect(expandHome("~/a/b", "/home/me/")).toBe("/home/me/a/b")
    expect(expandHome("~other/a", "/home/me")).toBe("~other/a")
    expect(expandHome("relative", "/home/me")).toBe("relative")
  })

  it("brackets IPv6 hosts in URLs, once", () => {
    expect(urlHost("::1")).toBe("[::1]")
    expect(urlHost("[::1]")).toBe("[::1]")
    expect(urlHost("127.0.0.1")).toBe("127.0.0.1")
  })

  it("maps every level name both programs take", () => {
    expect(logLevelOf.WARN).toBe(LogLevel.Warning)
    expect(logLevelOf.CRITICAL).toBe(LogLevel.Fatal)
    expect(logLevelOf.FATAL).toBe(LogLevel.Fatal)
    expect(logLevelOf.NONE).toBe(LogLevel.None)
  })

  it("decodes strict base64 only, and reads the type a blob names", () => {
    expect(decodeBase64("AAAA")?.length).toBe(3)
    expect(decodeBase64("AAA")).toBeUndefined()
    expect(decodeBase64("AA AA")).toBeUndefined()
    const blob = Buffer.concat([Buffer.from([0, 0, 0, 11]), Buffer.from("ssh-ed25519")])
    expect(blobKeyType(blob)).toBe("ssh-ed25519")
    expect(blobKeyType(blob.subarray(0, 10))).toBeUndefined()
    expect(blobKeyType(Buffer.alloc(2))).toBeUndefined()
  })
})
