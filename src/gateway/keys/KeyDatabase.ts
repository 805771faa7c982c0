/**
 * The PostgreSQL database behind `--key-store postgres://...`: a small connection pool, the schema's
 * migrations (applied at start under an advisory lock, so replicas starting together are safe), and
 * the change feed: a connection of its own LISTENs on the change channel, reconnecting with backoff,
 * and says "look again" at every notification and after every reconnect.
 *
 * Nothing here logs the URL as given: only `shown`, which has no password; driver messages are
 * redacted too. Failures are StoreUnavailable (cannot reach it now) or StoreError (the request failed).
 */
import { hostname } from "node:os"
import {
  Context,
  Deferred,
  Duration,
  Effect,
  Exit,
  Layer,
  Option,
  PubSub,
  type Queue,
  Runtime,
  Schedule,
  type Scope,
} from "effect"
import pg from "pg"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { ConfigError, StoreError, StoreUnavailable } from "../errors.js"
import { readTextIfExists } from "./files.js"
import { type KeyStoreLocation, parseKeyStoreLocation, urlSecrets } from "./keyStoreLocation.js"
import { classifyDatabaseError } from "./postgresErrors.js"
import { changeChannel, migrationLockKey, migrations, migrationsTable } from "./postgresMigrations.js"

export type DatabaseError = StoreError | StoreUnavailable

export interface Querier {
  readonly query: <R extends object>(
    sql: string,
    params?: ReadonlyArray<unknown>,
  ) => Effect.Effect<ReadonlyArray<R>, DatabaseError>
}

export interface KeyDatabaseShape extends Querier {
  /** The URL without its password: the only form that is logged. */
  readonly shown: string
  /** Who writes, for the history: this host and process. */
  readonly replica: string
  /** Run `body` in one transaction on one connection: committed when it succeeds, else rolled back. */
  readonly transaction: <A, E, R>(
    body: (tx: Querier) => Effect.Effect<A, E, R>,
  ) => Effect.Effect<A, E | DatabaseError, R>
  /** Run `effect` holding a session-level advisory lock on a connection of its own. */
  readonly withAdvisoryLock: <A, E, R>(
    key: bigint,
    effect: Effect.Effect<A, E, R>,
  ) => Effect.Effect<A, E | DatabaseError, R>
  /**
   * A signal at every change notification and every (re)connection of the listener, after which the
   * data must be read again. Empty for the offline CLI, which does not listen.
   */
  readonly changes: Effect.Effect<Queue.Dequeue<void>, never, Scope.Scope>
}

export class KeyDatabase extends Context.Tag("mcp-ssh/KeyDatabase")<KeyDatabase, KeyDatabaseShape>() {}

/** The password from --key-store-password-file (else the URL or PGPASSWORD, which pg reads itself). */
const passwordFromFile = (file: string | undefined) =>
  Effect.gen(function* () {
    if (file === undefined) return undefined
    const read = yield* readTextIfExists(file).pipe(
      Effect.mapError((error) => new ConfigError({ message: `--key-store-password-file: ${error.message}` })),
    )
    if (Option.isNone(read))
      return yield* new ConfigError({ message: `--key-store-password-file: ${file} does not exist` })
    // One line; the newline an editor or `echo` adds is not part of it.
    const password = read.value.text.replace(/\r?\n$/, "")
    if (password === "" || password.includes("\n"))
      return yield* new ConfigError({
        message: `--key-store-password-file: ${file} must hold the password on one line`,
      })
    if ((read.value.mode & 0o077) !== 0)
      yield* Effect.logWarning(`${file} is readable by group or others; chmod 600 it`)
    return password
  })

/** The connection string for the driver: the password from the file goes in here, and only here. */
const withPassword = (url: string, password: string | undefined): string => {
  if (password === undefined) return url
  const parsed = new URL(url)
  parsed.password = encodeURIComponent(password)
  return parsed.toString()
}

/** The live connection settings: short timeouts, so an outage is noticed rather than waited out. */
const connectionSettings = (connectionString: string) => ({
  connectionString,
  application_name: "mcp-ssh",
  connectionTimeoutMillis: 5_000,
  query_timeout: 10_000,
  keepAlive: true,
})

export const makeKeyDatabase = (
  location: Extract<KeyStoreLocation, { _tag: "Postgres" }>,
  options: { readonly passwordFile: string | undefined; readonly listen: boolean },
) =>
  Effect.gen(function* () {
    const { shown } = location
    const filePassword = yield* passwordFromFile(options.passwordFile)
    if (location.passwordInUrl)
      yield* Effect.logWarning(
        `the --key-store URL holds a password; prefer PGPASSWORD or --key-store-password-file (${shown})`,
      )
    const secrets = [filePassword, ...urlSecrets(location.url), process.env.PGPASSWORD]
    const connectionString = withPassword(location.url, filePassword)
    const replica = `${hostname()}:${process.pid}`

    const failure = (error: unknown): DatabaseError => {
      const classified = classifyDatabaseError(error, secrets)
      return classified.unavailable
        ? new StoreUnavailable({ store: shown, reason: classified.reason })
        : new StoreError({ path: shown, reason: classified.reason })
    }
    const querierOf = (client: pg.Pool | pg.PoolClient): Querier => ({
      query: <R extends object>(sql: string, params: ReadonlyArray<unknown> = []) =>
        Effect.tryPromise({
          try: () => client.query<R>(sql, [...params]),
          catch: failure,
        }).pipe(Effect.map((result) => result.rows)),
    })

    const pool = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const created = new pg.Pool({ ...connectionSettings(connectionString), max: 4 })
        // An idle connection that breaks (the server stopped) is dropped by the pool; the next query
        // reports the outage. Without a listener the error would end the process.
        created.on("error", () => {})
        return created
      }),
      (created) => Effect.promise(() => created.end().catch(() => undefined)),
    )
    const pooled = querierOf(pool)

    /** One connection of the pool for the scope, handed back broken when it failed. */
    const connection = Effect.acquireRelease(
      Effect.tryPromise({ try: () => pool.connect(), catch: failure }),
      (client, exit) => Effect.sync(() => client.release(exit._tag === "Failure")),
    )

    const transaction = <A, E, R>(body: (tx: Querier) => Effect.Effect<A, E, R>) =>
      Effect.scoped(
        Effect.gen(function* () {
          const client = yield* connection
          const tx = querierOf(client)
          yield* tx.query("BEGIN")
          const result = yield* Effect.onError(body(tx), () => Effect.ignore(tx.query("ROLLBACK")))
          yield* tx.query("COMMIT")
          return result
        }),
      )

    const withAdvisoryLock = <A, E, R>(key: bigint, effect: Effect.Effect<A, E, R>) =>
      Effect.scoped(
        Effect.gen(function* () {
          const client = querierOf(yield* connection)
          yield* Effect.acquireRelease(
            client.query("SELECT pg_advisory_lock($1::bigint)", [key.toString()]),
            () =>
              // A broken connection released its locks with it.
              Effect.ignore(client.query("SELECT pg_advisory_unlock($1::bigint)", [key.toString()])),
          )
          return yield* effect
        }),
      )

    // --- migrations: one replica at a time; the others find them applied.
    yield* withAdvisoryLock(
      migrationLockKey,
      Effect.gen(function* () {
        yield* pooled.query(
          `CREATE TABLE IF NOT EXISTS ${migrationsTable} (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
        )
        const applied = new Set(
          (yield* pooled.query<{ version: number }>(`SELECT version FROM ${migrationsTable}`)).map(
            (row) => row.version,
          ),
        )
        for (const migration of migrations) {
          if (applied.has(migration.version)) continue
          yield* transaction((tx) =>
            Effect.zipRight(
              tx.query(migration.sql),
              tx.query(`INSERT INTO ${migrationsTable} (version, name) VALUES ($1, $2)`, [
                migration.version,
                migration.name,
              ]),
            ),
          )
          yield* Effect.logInfo(
            `key database ${shown}: applied migration ${migration.version} (${migration.name})`,
          )
        }
        const newest = Math.max(0, ...applied)
        const known = Math.max(...migrations.map((migration) => migration.version))
        if (newest > known)
          yield* Effect.logWarning(
            `key database ${shown} has schema version ${newest}, newer than this gateway's ${known}: upgrade the gateway`,
          )
      }),
    )

    // --- the change feed
    const changed = yield* PubSub.sliding<void>(1)
    if (options.listen) {
      const runtime = yield* Effect.runtime<never>()
      /** One listening connection, from connect to loss; fails only when it cannot connect. */
      const listenOnce = Effect.scoped(
        Effect.gen(function* () {
          // Set from the moment the client exists: a loss before the wait below began is not missed.
          const loss = yield* Deferred.make<string>()
          yield* Effect.acquireRelease(
            Effect.tryPromise({
              try: async () => {
                const created = new pg.Client(connectionSettings(connectionString))
                const onLoss = (error?: Error) =>
                  Deferred.unsafeDone(
                    loss,
                    Exit.succeed(error === undefined ? "the connection ended" : failure(error).message),
                  )
                created.on("error", onLoss)
                created.once("end", () => onLoss())
                // Before LISTEN: a notification that comes as soon as it is in force is not dropped.
                created.on("notification", () => Runtime.runSync(runtime)(PubSub.publish(changed, undefined)))
                try {
                  await created.connect()
                  await created.query(`LISTEN ${changeChannel}`)
                } catch (error) {
                  await created.end().catch(() => undefined)
                  throw error
                }
                return created
              },
              catch: failure,
            }),
            (created) => Effect.promise(() => created.end().catch(() => undefined)),
          )
          const lost = Deferred.await(loss)
          yield* Effect.logInfo(`key database ${shown}: listening for key changes`)
          // Connected (again): whatever changed while nobody listened is read now.
          yield* PubSub.publish(changed, undefined)
          const reason = yield* lost
          yield* Effect.logWarning(
            `key database ${shown}: lost the change feed (${reason}); serving the last snapshot, reconnecting`,
          )
        }),
      )
      const backoff = Schedule.exponential(Duration.millis(250), 2).pipe(
        Schedule.modifyDelay((_, delay) => Duration.min(delay, Duration.seconds(5))),
        Schedule.tapInput((error: DatabaseError) =>
          Effect.logWarning(
            `key database ${shown}: cannot listen for key changes (${error.reason}); retrying`,
          ),
        ),
      )
      // A connection that is lost as soon as it is made (a flapping server) is not retried in a tight loop.
      const pause = Effect.sleep(Duration.millis(250))
      yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.retry(listenOnce, backoff), pause)))
    }

    return {
      shown,
      replica,
      query: pooled.query,
      transaction,
      withAdvisoryLock,
      changes: PubSub.subscribe(changed),
    } satisfies KeyDatabaseShape
  })

const locationOf = (text: string) => {
  const parsed = parseKeyStoreLocation(text)
  return parsed._tag === "Right" && parsed.right._tag === "Postgres"
    ? Effect.succeed(parsed.right)
    : Effect.fail(new ConfigError({ message: "--key-store: not a postgres:// URL" }))
}

const layer = (listen: boolean) =>
  Layer.scoped(
    KeyDatabase,
    Effect.gen(function* () {
      const { settings } = yield* GatewayConfig
      const location = yield* locationOf(settings.keyStore)
      return yield* makeKeyDatabase(location, { passwordFile: settings.keyStorePasswordFile, listen })
    }),
  )

/** The gateway's: listens for changes made by other replicas and the CLI. */
export const KeyDatabaseLive = layer(true)
/** The offline CLI's: reads and writes, listens to nothing. */
export const KeyDatabaseOfflineLive = layer(false)
