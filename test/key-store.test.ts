/**
 * The file key store in-process: reloads from many concurrent logins while the file is rewritten
 * (each removed key announced exactly once), revocations announced once, and file system errors
 * reported as themselves.
 */

import { execFileSync } from "node:child_process"
import { generateKeyPairSync } from "node:crypto"
import { chmodSync, linkSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { writeFile } from "node:fs/promises"
import { join } from "node:path"
import { Chunk, Duration, Effect, Fiber, Logger, Option, Queue } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import { makeFileKeyStore } from "../src/gateway/keys/KeyStore.js"
import { fingerprintOf } from "../src/shared/publicKey.js"
import { tempDir } from "./support/gateway.js"

const sshString = (data: string | Buffer): Buffer => {
  const bytes = Buffer.from(data)
  const length = Buffer.alloc(4)
  length.writeUInt32BE(bytes.length)
  return Buffer.concat([length, bytes])
}

interface TestKey {
  readonly line: string
  readonly blob: Buffer
  readonly fingerprint: string
}

const edKey = (comment: string): TestKey => {
  const { publicKey } = generateKeyPairSync("ed25519")
  const raw = Buffer.from(publicKey.export({ format: "jwk" }).x ?? "", "base64url")
  const blob = Buffer.concat([sshString("ssh-ed25519"), sshString(raw)])
  return { line: `ssh-ed25519 ${blob.toString("base64")} ${comment}`, blob, fingerprint: fingerprintOf(blob) }
}

/** Replace the file as editors and tools do: a new file renamed over the old one. */
const replaceFile = (path: string, keys: ReadonlyArray<TestKey>, notes: ReadonlyArray<string> = []) => {
  const temporary = `${path}.${Math.random().toString(16).slice(2)}.tmp`
  const lines = [...notes, ...keys.map((key) => key.line)]
  writeFileSync(temporary, lines.map((line) => `${line}\n`).join(""), { mode: 0o600 })
  chmodSync(temporary, 0o600)
  renameSync(temporary, path)
}

/** Every message logged while `effect` runs, in order. */
const withLogs = <A, E>(effect: Effect.Effect<A, E>) => {
  const messages: Array<string> = []
  const logger = Logger.make(({ logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    messages.push(`${logLevel.label} ${parts.map(String).join(" ")}`)
  })
  return Effect.map(Effect.provide(effect, Logger.replace(Logger.defaultLogger, logger)), (value) => ({
    value,
    messages,
  }))
}

/** Run `effect` with its log kept out of the test output. */
const runQuietly = <A, E>(effect: Effect.Effect<A, E>) =>
  Effect.runPromise(Effect.map(withLogs(effect), ({ value }) => value))

const drain = (queue: Queue.Dequeue<string>) => Effect.map(Queue.takeAll(queue), Chunk.toReadonlyArray)

let dirs: Array<string> = []
const freshDir = () => {
  const dir = tempDir("mcp-ssh-keystore-")
  dirs.push(dir)
  return dir
}
afterEach(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  dirs = []
})

describe("file key store", () => {
  it("announces each key removed by hand exactly once while many logins reload concurrently", async () => {
    const path = join(freshDir(), "authorized_keys")
    const keys = Array.from({ length: 12 }, (_, index) => edKey(`key-${index}@test`))
    // Long enough that reads take a while and overlap, as on a busy server with a large file.
    const padding = Array.from({ length: 4000 }, (_, index) => `# note ${index} ${"x".repeat(80)}`)
    replaceFile(path, keys, padding)
    const removedCount = 10
    const removed = keys.slice(keys.length - removedCount)
    /** Keys some finished login already saw gone: no login that starts later may find them. */
    const seenGone = new Set<string>()
    const resurrected = new Set<string>()

    const announced = await runQuietly(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* makeFileKeyStore(path)
          const revocations = yield* store.revocations
          // Loaded once first: a key is only known to be removed if it was seen there.
          yield* store.list
          yield* Effect.forkScoped(store.watchForRemovals)
          // Logins: each looks up a key, as the SSH server does for every authentication attempt.
          const login = (key: TestKey) =>
            Effect.suspend(() => {
              const goneBefore = seenGone.has(key.fingerprint)
              return Effect.map(store.find(key.blob), (found) => {
                if (Option.isNone(found)) seenGone.add(key.fingerprint)
                else if (goneBefore) resurrected.add(key.fingerprint)
              })
            })
          const logins = Effect.forEach(removed, login, { concurrency: "unbounded", discard: true })
          yield* Effect.forkScoped(Effect.forever(logins))
          for (let kept = keys.length - 1; kept >= keys.length - removedCount; kept--) {
            yield* Effect.sync(() => replaceFile(path, keys.slice(0, kept), padding))
            yield* Effect.sleep(Duration.millis(20))
          }
          // Two full watcher rounds after the last edit, and one more to catch a second announcement.
          yield* Effect.sleep(Duration.millis(3500))
          for (const key of keys.slice(0, keys.length - removedCount))
            expect(Option.isSome(yield* store.find(key.blob))).toBe(true)
          for (const key of removed) expect(Option.isNone(yield* store.find(key.blob))).toBe(true)
          return yield* drain(revocations)
        }),
      ),
    )
    expect([...resurrected]).toEqual([])
    expect([...announced].sort()).toEqual(removed.map((key) => key.fingerprint).sort())
  }, 20_000)

  it("lets no slow load of an older file land after a newer one and announce a removal twice", async () => {
    const dir = freshDir()
    const path = join(dir, "authorized_keys")
    const [gone, kept] = [edKey("gone@test"), edKey("kept@test")]
    replaceFile(path, [gone, kept])
    // A FIFO holds a read open until it is written to: a load of it is as slow as the test wants.
    const slowFile = join(dir, "slow")
    execFileSync("mkfifo", ["-m", "600", slowFile])

    const announced = await runQuietly(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* makeFileKeyStore(path)
          const revocations = yield* store.revocations
          yield* store.list
          // A login starts loading a version that still has the key, and is slow to read it...
          yield* Effect.sync(() => {
            linkSync(slowFile, `${path}.slow`)
            renameSync(`${path}.slow`, path)
          })
          const slowLogin = yield* Effect.fork(store.find(gone.blob))
          yield* Effect.sleep(Duration.millis(100))
          // ...while the key is removed and the watcher sees it go.
          yield* Effect.sync(() => replaceFile(path, [kept]))
          yield* Effect.forkScoped(store.watchForRemovals)
          yield* Effect.sleep(Duration.millis(700))
          yield* Effect.promise(() => writeFile(slowFile, `${gone.line}\n${kept.line}\n`))
          yield* Fiber.join(slowLogin)
          // Two more watcher rounds: time enough to announce the key a second time.
          yield* Effect.sleep(Duration.millis(2500))
          expect(Option.isNone(yield* store.find(gone.blob))).toBe(true)
          return yield* drain(revocations)
        }),
      ),
    )
    expect(announced).toEqual([gone.fingerprint])
  }, 20_000)

  it("announces a revoked key once, not again when the watcher sees it gone", async () => {
    const path = join(freshDir(), "authorized_keys")
    const keys = Array.from({ length: 4 }, (_, index) => edKey(`revoked-${index}@test`))
    replaceFile(path, keys)
    const announced = await runQuietly(
      Effect.scoped(
        Effect.gen(function* () {
          const store = yield* makeFileKeyStore(path)
          const revocations = yield* store.revocations
          // Loaded once first: a key is only known to be removed if it was seen there.
          yield* store.list
          yield* Effect.forkScoped(store.watchForRemovals)
          const logins = Effect.forEach(keys, (key) => store.find(key.blob), { concurrency: "unbounded" })
          const loginFiber = yield* Effect.forkScoped(Effect.forever(logins))
          const removed = yield* Effect.forEach(keys.slice(1), (key) => store.revoke(key.fingerprint), {
            concurrency: "unbounded",
          })
          expect(removed).toEqual([1, 1, 1])
          yield* Effect.sleep(Duration.millis(2500))
          yield* Fiber.interrupt(loginFiber)
          return yield* drain(revocations)
        }),
      ),
    )
    expect([...announced].sort()).toEqual(
      keys
        .slice(1)
        .map((key) => key.fingerprint)
        .sort(),
    )
  }, 20_000)

  it("reports a path under a regular file as ENOTDIR, not as a missing file", async () => {
    const dir = freshDir()
    writeFileSync(join(dir, "file"), "not a directory\n")
    const path = join(dir, "file", "authorized_keys")
    const { value: found, messages } = await Effect.runPromise(
      withLogs(
        Effect.flatMap(makeFileKeyStore(path), (store) =>
          Effect.zipLeft(store.find(edKey("any@test").blob), store.list),
        ),
      ),
    )
    expect(Option.isNone(found)).toBe(true)
    const reports = messages.filter((message) => message.includes(path))
    // Said once, while it lasts, and named as what it is.
    expect(reports).toHaveLength(1)
    expect(reports[0]).toMatch(/^ERROR .*ENOTDIR: not a directory/)
    expect(messages.join("\n")).not.toMatch(/does not exist/)
  })

  it.skipIf(process.getuid?.() === 0)(
    "reports a directory it may not search as EACCES, not as a missing file",
    async () => {
      const dir = freshDir()
      const locked = join(dir, "locked")
      mkdirSync(locked)
      const path = join(locked, "authorized_keys")
      writeFileSync(path, `${edKey("hidden@test").line}\n`, { mode: 0o600 })
      chmodSync(locked, 0o000)
      try {
        const { messages } = await Effect.runPromise(
          withLogs(Effect.flatMap(makeFileKeyStore(path), (store) => store.list)),
        )
        expect(messages.join("\n")).toMatch(/EACCES/)
        expect(messages.join("\n")).not.toMatch(/does not exist/)
      } finally {
        chmodSync(locked, 0o700)
      }
    },
  )

  it("still says a missing file does not exist", async () => {
    const path = join(freshDir(), "authorized_keys")
    const { messages } = await Effect.runPromise(
      withLogs(Effect.flatMap(makeFileKeyStore(path), (store) => store.list)),
    )
    expect(messages.join("\n")).toMatch(/authorized keys file .* does not exist/)
  })
})
