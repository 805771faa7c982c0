/**
 * A throwaway PostgreSQL server for tests: `initdb` in a temporary directory, `pg_ctl` on a free
 * loopback port with its socket in that directory, stopped with `pg_ctl stop` (never a signal to a
 * pid we did not check). initdb refuses to run as root, so as root the binaries run as the
 * `postgres` user (Debian's package creates it) on a directory chowned to it.
 *
 *   const pg = await startPostgres()
 *   try { ... pg.url("mcp") ... await pg.stop(); await pg.start() ... } finally { await pg.dispose() }
 *
 * Logins over TCP need the password (scram-sha-256), so the tests go through the same password path
 * as production; `pg.password` is it, `pg.url()` never carries it.
 */
import { execFile } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import { rm } from "node:fs/promises"
import { createServer } from "node:net"
import { userInfo } from "node:os"
import { join } from "node:path"
import { promisify } from "node:util"
import pg from "pg"

const run = promisify(execFile)

/** The newest installed server's bin directory, e.g. /usr/lib/postgresql/15/bin. */
export const postgresBinDir = (): string => {
  const root = "/usr/lib/postgresql"
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((name) => existsSync(join(root, name, "bin", "initdb")))
        .sort((a, b) => Number(b) - Number(a))
    : []
  const newest = versions[0]
  if (newest === undefined)
    throw new Error(`no PostgreSQL server under ${root}/*/bin (apt install postgresql)`)
  return join(root, newest, "bin")
}

export interface PostgresServer {
  readonly host: "127.0.0.1"
  readonly port: number
  /** The superuser the tests log in as. */
  readonly user: string
  readonly password: string
  /** The temporary directory: data, socket, log. */
  readonly dir: string
  /** `postgres://USER@127.0.0.1:PORT/DATABASE`, without the password (PGPASSWORD or a file gives it). */
  readonly url: (database?: string) => string
  /** The same with the password in it, for the tests' own clients. */
  readonly urlWithPassword: (database?: string) => string
  /** Create a database (owned by the superuser) and return its URL, without the password. */
  readonly createDatabase: (name: string) => Promise<string>
  /** Run SQL as the superuser on a database (default "postgres"). */
  readonly query: (sql: string, params?: ReadonlyArray<unknown>, database?: string) => Promise<pg.QueryResult>
  readonly running: () => boolean
  /** `pg_ctl stop -m fast`: connections are closed, as in an outage. */
  readonly stop: () => Promise<void>
  /** Start again on the same port and data. */
  readonly start: () => Promise<void>
  /** The server's own log, for a failing test's message. */
  readonly log: () => string
  /** Stop (if running) and remove the directory. */
  readonly dispose: () => Promise<void>
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      const address = server.address()
      server.close(() =>
        typeof address === "object" && address !== null
          ? resolve(address.port)
          : reject(new Error("no port")),
      )
    })
  })

export const startPostgres = async (): Promise<PostgresServer> => {
  const bin = postgresBinDir()
  const asRoot = userInfo().uid === 0
  const dir = mkdtempSync("/tmp/mcp-ssh-pg-")
  const data = join(dir, "data")
  const logPath = join(dir, "server.log")
  const user = "mcp_test"
  const password = `pw-${Math.random().toString(36).slice(2)}${Date.now().toString(36)}`
  writeFileSync(join(dir, "pwfile"), `${password}\n`, { mode: 0o600 })
  if (asRoot) {
    const { uid, gid } = postgresUser()
    chownSync(dir, uid, gid)
    chownSync(join(dir, "pwfile"), uid, gid)
  }
  /** A server binary, as the postgres user when we are root; cwd inside the directory it may read. */
  const tool = (name: string, args: ReadonlyArray<string>) =>
    asRoot
      ? run("runuser", ["-u", "postgres", "--", join(bin, name), ...args], { cwd: dir })
      : run(join(bin, name), [...args], { cwd: dir })

  const port = await freePort()
  let running = false
  const start = async () => {
    await tool("pg_ctl", [
      "start",
      "-w",
      "-t",
      "60",
      "-D",
      data,
      "-l",
      logPath,
      "-o",
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off`,
    ])
    running = true
  }
  const stop = async () => {
    if (!running) return
    await tool("pg_ctl", ["stop", "-w", "-t", "60", "-m", "fast", "-D", data])
    running = false
  }
  const log = () => {
    try {
      return readFileSync(logPath, "utf8")
    } catch {
      return ""
    }
  }
  try {
    await tool("initdb", [
      "-D",
      data,
      "-U",
      user,
      "--pwfile",
      join(dir, "pwfile"),
      "--auth-local=trust",
      "--auth-host=scram-sha-256",
      "-E",
      "UTF8",
      "--no-instructions",
    ])
    await start()
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw error
  }
  const url = (database = "postgres") => `postgres://${user}@127.0.0.1:${port}/${database}`
  const urlWithPassword = (database = "postgres") =>
    `postgres://${user}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`
  const query = async (sql: string, params: ReadonlyArray<unknown> = [], database = "postgres") => {
    const client = new pg.Client({ connectionString: urlWithPassword(database) })
    await client.connect()
    try {
      return await client.query(sql, [...params])
    } finally {
      await client.end()
    }
  }
  return {
    host: "127.0.0.1",
    port,
    user,
    password,
    dir,
    url,
    urlWithPassword,
    createDatabase: async (name) => {
      if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`not a plain database name: ${name}`)
      await query(`CREATE DATABASE ${name}`)
      return url(name)
    },
    query,
    running: () => running,
    stop,
    start,
    log,
    dispose: async () => {
      try {
        await stop()
      } finally {
        await rm(dir, { recursive: true, force: true })
      }
    },
  }
}

const postgresUser = (): { readonly uid: number; readonly gid: number } => {
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((entry) => entry.startsWith("postgres:"))
  const [, , uid, gid] = line?.split(":") ?? []
  if (uid === undefined || gid === undefined)
    throw new Error(
      "running as root, but there is no postgres user to run initdb as (apt install postgresql)",
    )
  return { uid: Number(uid), gid: Number(gid) }
}
