/**
 * Files that several processes share: atomic replacement (temp file, fsync, rename, fsync of the
 * directory), an exclusive lock file, and secrets read from files.
 */
import { randomBytes } from "node:crypto"
import { mkdir, open, readFile, rename, rm, stat, unlink } from "node:fs/promises"
import { basename, dirname, join } from "node:path"
import { Clock, Duration, Effect, Option, type Scope } from "effect"
import { ConfigError, StoreError } from "../errors.js"
import { minimumSecretLength } from "./keyApiRules.js"

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const codeOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/** The file's text and mode, or none when it does not exist. */
export const readTextIfExists = (path: string) =>
  Effect.tryPromise({
    try: async () => {
      try {
        const info = await stat(path)
        return Option.some({ text: await readFile(path, "utf8"), mode: info.mode })
      } catch (error) {
        if (codeOf(error) === "ENOENT") return Option.none()
        throw error
      }
    },
    catch: (error) => new StoreError({ path, reason: `cannot read: ${errorText(error)}` }),
  })

/**
 * Replace the file's content all at once: readers see the old file or the new one, never a part,
 * and a crash leaves one of the two. The new file gets `mode` whatever the umask.
 */
export const writeFileAtomic = (path: string, content: string, mode = 0o600) =>
  Effect.tryPromise({
    try: async () => {
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
    },
    catch: (error) => new StoreError({ path, reason: `cannot write: ${errorText(error)}` }),
  })

const isAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return codeOf(error) === "EPERM"
  }
}

/**
 * Hold `lockPath` (created exclusively, holding our pid) for the scope. A lock left by a process
 * that died is taken over; one held longer than `timeout` by a live process is an error.
 */
export const lockFile = (
  lockPath: string,
  timeout: Duration.DurationInput = Duration.seconds(10),
): Effect.Effect<void, StoreError, Scope.Scope> => {
  const mine = `${process.pid} ${randomBytes(8).toString("hex")}\n`
  const tryTake = Effect.tryPromise({
    try: async (): Promise<"taken" | "busy"> => {
      await mkdir(dirname(lockPath), { recursive: true, mode: 0o700 })
      try {
        const handle = await open(lockPath, "wx", 0o600)
        try {
          await handle.writeFile(mine)
        } finally {
          await handle.close()
        }
        return "taken"
      } catch (error) {
        if (codeOf(error) !== "EEXIST") throw error
      }
      const holder = await readFile(lockPath, "utf8").catch(() => "")
      const pid = Number(holder.split(" ")[0])
      // Our own pid cannot be a live holder: in this process the semaphore admits one writer. (In a
      // container a restarted server often gets the pid its dead predecessor had.)
      const stale = holder !== "" && Number.isInteger(pid) && (pid === process.pid || !isAlive(pid))
      if (stale && (await readFile(lockPath, "utf8").catch(() => "")) === holder) {
        await unlink(lockPath).catch(() => undefined)
      }
      return "busy"
    },
    catch: (error) =>
      new StoreError({ path: lockPath, reason: `cannot create the lock file: ${errorText(error)}` }),
  })
  // A deadline rather than a timeout: acquisition is uninterruptible, and an attempt interrupted
  // after creating the file would leave a lock nobody releases.
  const attempt = (deadline: number): Effect.Effect<void, StoreError> =>
    tryTake.pipe(
      Effect.flatMap((result) =>
        result === "taken"
          ? Effect.void
          : Effect.flatMap(Clock.currentTimeMillis, (now) =>
              now > deadline
                ? Effect.fail(
                    new StoreError({
                      path: lockPath,
                      reason: "another process holds the lock; remove the file if it is stale",
                    }),
                  )
                : Effect.sleep(Duration.millis(2 + Math.floor(Math.random() * 10))).pipe(
                    Effect.zipRight(attempt(deadline)),
                  ),
            ),
      ),
    )
  return Effect.acquireRelease(
    Effect.flatMap(Clock.currentTimeMillis, (now) => attempt(now + Duration.toMillis(timeout))),
    () =>
      Effect.promise(async () => {
        // Only remove the lock if it is still ours.
        if ((await readFile(lockPath, "utf8").catch(() => "")) === mine)
          await unlink(lockPath).catch(() => undefined)
      }),
  )
}

/**
 * A secret given directly (flag, variable, JSON) or as a file; both at once is an error. A file
 * others may read gets a warning, not a refusal: mounted secrets are often 0644.
 */
export const loadSecret = (options: {
  readonly value: string | undefined
  readonly file: string | undefined
  readonly flag: string
}) =>
  Effect.gen(function* () {
    const { value, file, flag } = options
    if (value !== undefined && file !== undefined) {
      return yield* new ConfigError({ message: `give --${flag} or --${flag}-file, not both` })
    }
    if (file === undefined) return value
    const read = yield* readTextIfExists(file).pipe(
      Effect.mapError((error) => new ConfigError({ message: `--${flag}-file: ${error.message}` })),
    )
    if (Option.isNone(read))
      return yield* new ConfigError({ message: `--${flag}-file: ${file} does not exist` })
    const secret = read.value.text.trim()
    if (secret.length < minimumSecretLength || /\s/.test(secret)) {
      return yield* new ConfigError({
        message: `--${flag}-file: ${file} must hold one token of at least ${minimumSecretLength} characters`,
      })
    }
    if ((read.value.mode & 0o077) !== 0) {
      yield* Effect.logWarning(`${file} is readable by group or others; chmod 600 it`)
    }
    return secret
  })
