/**
 * File IO for both programs. Every failure is a FileError naming the path, the operation and the
 * errno code, so callers decide on codes (ENOENT, EEXIST) and word their own messages, and nobody
 * else inspects thrown values. The liveness probe of lock holders is here for the same reason.
 */
import { randomBytes } from "node:crypto"
import type { Stats } from "node:fs"
import {
  appendFile,
  chmod,
  mkdir,
  open,
  readFile,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from "node:fs/promises"
import { basename, dirname, join } from "node:path"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { errorText } from "./errorText.js"

export type FileOperation = "stat" | "read" | "write" | "append" | "mkdir" | "remove"

export class FileError extends Data.TaggedError("FileError")<{
  readonly path: string
  readonly operation: FileOperation
  /** The errno code (`ENOENT`, `EEXIST`...), when the failure has one. */
  readonly code: string | undefined
  /** The system's own message, e.g. `ENOENT: no such file or directory, open '/x'`. */
  readonly message: string
}> {}

const errnoCode = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

const attempt = <A>(
  path: string,
  operation: FileOperation,
  run: () => Promise<A>,
): Effect.Effect<A, FileError> =>
  Effect.tryPromise({
    try: run,
    catch: (error) => new FileError({ path, operation, code: errnoCode(error), message: errorText(error) }),
  })

const noneIfMissing = <A>(effect: Effect.Effect<A, FileError>): Effect.Effect<Option.Option<A>, FileError> =>
  effect.pipe(
    Effect.map(Option.some),
    Effect.catchIf(
      (error) => error.code === "ENOENT",
      () => Effect.succeed(Option.none()),
    ),
  )

export const statIfExists = (path: string): Effect.Effect<Option.Option<Stats>, FileError> =>
  noneIfMissing(attempt(path, "stat", () => stat(path)))

/**
 * The file's bytes and its mode, through one open handle: the mode checked is the mode of the bytes
 * read, even if the path is replaced meanwhile.
 */
export const readBytesWithMode = (
  path: string,
): Effect.Effect<{ readonly content: Buffer; readonly mode: number }, FileError> =>
  attempt(path, "read", async () => {
    const handle = await open(path, "r")
    try {
      const info = await handle.stat()
      return { content: await handle.readFile(), mode: info.mode }
    } finally {
      await handle.close()
    }
  })

export const readText = (path: string): Effect.Effect<string, FileError> =>
  attempt(path, "read", () => readFile(path, "utf8"))

/** The file's text, or none when it does not exist. */
export const readTextIfExists = (path: string): Effect.Effect<Option.Option<string>, FileError> =>
  noneIfMissing(readText(path))

/** The directory and its missing parents, new ones with `mode`. */
export const makeDirectory = (path: string, mode = 0o700): Effect.Effect<void, FileError> =>
  attempt(path, "mkdir", () => mkdir(path, { recursive: true, mode }))

/**
 * Write the file and give it `mode` whatever the umask or its earlier mode. With `exclusive`, an
 * existing file is never overwritten: the error has code EEXIST.
 */
export const writeFileWithMode = (
  path: string,
  content: string | Uint8Array,
  mode: number,
  options: { readonly exclusive: boolean } = { exclusive: false },
): Effect.Effect<void, FileError> =>
  attempt(path, "write", async () => {
    await writeFile(path, content, { mode, flag: options.exclusive ? "wx" : "w" })
    await chmod(path, mode)
  })

/**
 * Replace the file's content all at once: readers see the old file or the new one, never a part,
 * and a crash leaves one of the two. The new file gets `mode` whatever the umask.
 */
export const writeFileAtomic = (
  path: string,
  content: string,
  mode = 0o600,
): Effect.Effect<void, FileError> =>
  attempt(path, "write", async () => {
    const dir = dirname(path)
    await mkdir(dir, { recursive: true, mode: 0o700 })
    const temporary = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`)
    try {
      const handle = await open(temporary, "wx", mode)
      try {
        await handle.writeFile(content, "utf8")
        await handle.chmod(mode)
        await handle.sync()
      } finally {
        await handle.close()
      }
      await rename(temporary, path)
    } catch (error) {
      await rm(temporary, { force: true })
      throw error
    }
    // The rename is only durable once the directory entry is.
    const directory = await open(dir, "r")
    try {
      await directory.sync()
    } finally {
      await directory.close()
    }
  })

/** Does the file end without a newline (so an appended line must start with one)? */
const lacksFinalNewline = async (path: string): Promise<boolean> => {
  const handle = await open(path, "r").catch(() => undefined)
  if (handle === undefined) return false
  try {
    const { size } = await handle.stat()
    if (size === 0) return false
    const last = Buffer.alloc(1)
    await handle.read(last, 0, 1, size - 1)
    return last[0] !== 0x0a
  } finally {
    await handle.close()
  }
}

/** Append `line` and a newline, on a line of its own even if the file's last line is unfinished. */
export const appendLine = (path: string, line: string, mode = 0o600): Effect.Effect<void, FileError> =>
  attempt(path, "append", async () => {
    const prefix = (await lacksFinalNewline(path)) ? "\n" : ""
    await appendFile(path, `${prefix}${line}\n`, { mode })
  })

export const removeFile = (path: string): Effect.Effect<void, FileError> =>
  attempt(path, "remove", () => unlink(path))

/** Is a process with this pid running (as far as signal 0 tells: EPERM means it is, not ours)? */
export const isProcessAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return errnoCode(error) === "EPERM"
  }
}
