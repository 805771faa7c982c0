/**
 * Files that several processes share: the key store's reads and atomic writes, an exclusive lock
 * file, and secrets read from files. File failures become StoreError (ConfigError for secrets) here.
 */
import { randomBytes } from "node:crypto"
import { dirname } from "node:path"
import { Clock, Duration, Effect, Option, type Scope } from "effect"
import * as FileSystem from "../../shared/fileSystem.js"
import { ConfigError, StoreError } from "../errors.js"
import { minimumSecretLength } from "./keyApiRules.js"

const storeError = (action: string) => (error: FileSystem.FileError) =>
  new StoreError({ path: error.path, reason: `${action}: ${error.message}` })

/** The file's text and mode, or none when it does not exist (or vanishes while being read). */
export const readTextIfExists = (path: string) =>
  Effect.gen(function* () {
    const info = yield* FileSystem.statIfExists(path)
    if (Option.isNone(info)) return Option.none()
    const text = yield* FileSystem.readTextIfExists(path)
    return Option.map(text, (text) => ({ text, mode: info.value.mode }))
  }).pipe(Effect.mapError(storeError("cannot read")))

/** Replace the file's content all at once (see FileSystem.writeFileAtomic). */
export const writeFileAtomic = (path: string, content: string, mode = 0o600) =>
  FileSystem.writeFileAtomic(path, content, mode).pipe(Effect.mapError(storeError("cannot write")))

/**
 * Hold `lockPath` (created exclusively, holding our pid) for the scope. A lock left by a process
 * that died is taken over; one held longer than `timeout` by a live process is an error.
 */
export const lockFile = (
  lockPath: string,
  timeout: Duration.DurationInput = Duration.seconds(10),
): Effect.Effect<void, StoreError, Scope.Scope> => {
  const mine = `${process.pid} ${randomBytes(8).toString("hex")}\n`
  // Unreadable reads as empty: a lock being created or removed right now.
  const holderText = FileSystem.readText(lockPath).pipe(Effect.orElseSucceed(() => ""))
  const tryTake: Effect.Effect<"taken" | "busy", StoreError> = Effect.gen(function* () {
    yield* FileSystem.makeDirectory(dirname(lockPath))
    const taken = yield* FileSystem.writeFileWithMode(lockPath, mine, 0o600, { exclusive: true }).pipe(
      Effect.as(true),
      Effect.catchIf(
        (error) => error.code === "EEXIST",
        () => Effect.succeed(false),
      ),
    )
    if (taken) return "taken"
    const holder = yield* holderText
    const pid = Number(holder.split(" ")[0])
    // Our own pid cannot be a live holder: in this process the semaphore admits one writer. (In a
    // container a restarted server often gets the pid its dead predecessor had.)
    const stale =
      holder !== "" && Number.isInteger(pid) && (pid === process.pid || !FileSystem.isProcessAlive(pid))
    if (stale && (yield* holderText) === holder) yield* Effect.ignore(FileSystem.removeFile(lockPath))
    return "busy"
  }).pipe(
    Effect.mapError(
      (error) => new StoreError({ path: lockPath, reason: `cannot create the lock file: ${error.message}` }),
    ),
  )
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
    // Only remove the lock if it is still ours.
    () =>
      Effect.flatMap(holderText, (holder) =>
        holder === mine ? Effect.ignore(FileSystem.removeFile(lockPath)) : Effect.void,
      ),
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
