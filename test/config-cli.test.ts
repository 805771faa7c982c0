/**
 * The server's command line against the real program (`node dist/main.js`): bad configuration stops
 * the start with a message naming the file, field and problem; settings resolve as
 * flags > MCP_SSH_* variables > the JSON file's `gateway` object > defaults; --help and --version.
 */
import { execFileSync, spawn } from "node:child_process"
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { createServer } from "node:net"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { version } from "../src/shared/version.js"
import { fixture, mainScript, repoRoot, tempDir } from "./support/gateway.js"

interface Run {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly stdout: string
  readonly stderr: string
  /** The port the gateway said it listens on, when it got that far. */
  readonly port: number | undefined
}

interface RunOptions {
  readonly cwd?: string
  readonly env?: Readonly<Record<string, string>>
  /** Stop the gateway with SIGTERM once it listens. */
  readonly stopWhenListening?: boolean
}

const listeningLine = /SSH server listening on 127\.0\.0\.1:(\d+)\D/

/** The test's environment without any MCP_SSH_* variable, so only what a test sets is seen. */
const cleanEnvironment = (): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("MCP_SSH_")))

const run = (args: ReadonlyArray<string>, options: RunOptions = {}): Promise<Run> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [mainScript, ...args], {
      cwd: options.cwd ?? repoRoot,
      env: { ...cleanEnvironment(), ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    })
    let stdout = ""
    let stderr = ""
    let port: number | undefined
    const timer = setTimeout(() => {
      child.kill("SIGKILL")
      reject(new Error(`mcp-ssh-server ${args.join(" ")} did not finish:\n${stderr}`))
    }, 15_000)
    child.stdout.on("data", (chunk: Buffer) => {
      stdout += chunk.toString()
    })
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString()
      const match = listeningLine.exec(stderr)
      if (port === undefined && match !== null) {
        port = Number(match[1])
        if (options.stopWhenListening === true) child.kill("SIGTERM")
      }
    })
    child.once("error", reject)
    child.once("close", (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, port })
    })
  })

/** A port nobody listens on right now, distinct from the others taken in the same call. */
const freePorts = async (count: number): Promise<Array<number>> => {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer()
          server.once("error", reject)
          server.listen(0, "127.0.0.1", () => resolve(server))
        }),
    ),
  )
  const ports = servers.map((server) => {
    const address = server.address()
    if (address === null || typeof address === "string") throw new Error("no port")
    return address.port
  })
  await Promise.all(servers.map((server) => new Promise((done) => server.close(done))))
  return ports
}

const isPortFree = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const server = createServer()
    server.once("error", () => resolve(false))
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)))
  })

/** A failed start: exit status 1, one clear message on stderr, no stack trace, nothing on stdout. */
const expectConfigFailure = (result: Run, ...expected: Array<string | RegExp>) => {
  expect(result.code, result.stderr).toBe(1)
  expect(result.port).toBeUndefined()
  expect(result.stdout).toBe("")
  expect(result.stderr).toMatch(/^mcp-ssh-server: configuration error: /)
  expect(result.stderr).not.toMatch(/\n\s+at /)
  for (const part of expected) {
    if (typeof part === "string") expect(result.stderr).toContain(part)
    else expect(result.stderr).toMatch(part)
  }
}

describe.concurrent("mcp-ssh-server command line", () => {
  let dir: string
  let hostKey: string
  let authorizedKeys: string
  const miniServer = { command: process.execPath, args: [fixture("mini-server.mjs")] }

  /** Write a servers config file in the temp dir and return its path. */
  const configFile = (name: string, content: unknown): string => {
    const path = join(dir, name)
    writeFileSync(path, typeof content === "string" ? content : JSON.stringify(content, null, 2))
    return path
  }
  /** The flags every gateway run gets: its files live in the temp dir. */
  const fileFlags = () => ["--server-key", hostKey, "--authorized-clients", authorizedKeys]

  beforeAll(() => {
    dir = tempDir("mcp-ssh-cli-")
    hostKey = join(dir, "host_key")
    // Made once up front: concurrent first starts would race to generate it.
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKey])
    authorizedKeys = join(dir, "authorized_keys")
    writeFileSync(authorizedKeys, "", { mode: 0o600 })
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  describe("refuses bad configuration, naming the file, field and problem", () => {
    it("a missing servers config file", async () => {
      const empty = join(dir, "empty-cwd")
      mkdirSync(empty, { recursive: true })
      // servers_config.json is looked up in the working directory, and the message gives the full path.
      expectConfigFailure(
        await run(fileFlags(), { cwd: empty }),
        `${join(empty, "servers_config.json")}: cannot read the servers config`,
        "ENOENT",
      )
    })

    it("a file that is not JSON", async () => {
      const path = configFile("broken.json", '{"mcpServers": {"a": {"command": "x",}}}')
      expectConfigFailure(await run(["--servers-config", path, ...fileFlags()]), `${path}: not valid JSON`)
    })

    it("an unknown field in one server entry and args of the wrong type in another, both at once", async () => {
      const path = configFile("entries.json", {
        mcpServers: { a: { ...miniServer, bogus: true }, b: { command: "node", args: "server.js" } },
      })
      expectConfigFailure(
        await run(["--servers-config", path, ...fileFlags()]),
        `${path}:\n`,
        /mcpServers\.a\.bogus: is unexpected/,
        /mcpServers\.b\.args: .*"server\.js"/,
      )
    })

    it("an unset variable in env", async () => {
      const path = configFile("unset-var.json", {
        mcpServers: {
          fine: miniServer,
          a: { ...miniServer, env: { API_KEY: "${MCP_TEST_UNSET_VARIABLE}" } },
        },
      })
      expectConfigFailure(
        await run(["--servers-config", path, ...fileFlags()]),
        path,
        "mcpServers.a.env.API_KEY: references unset variable(s) ${MCP_TEST_UNSET_VARIABLE}",
      )
    })

    it("--port abc", async () => {
      const path = configFile("ok-port-flag.json", { mcpServers: { a: miniServer } })
      expectConfigFailure(
        await run(["--servers-config", path, ...fileFlags(), "--port", "abc"]),
        /--port: .*"abc"/,
      )
    })

    it("--log-format xml, and MCP_SSH_LOG_FORMAT=yaml", async () => {
      const path = configFile("bad-log-format.json", { mcpServers: { a: miniServer } })
      expectConfigFailure(
        await run(["--servers-config", path, ...fileFlags(), "--log-format", "xml"]),
        /--log-format: .*"xml" is not one of logfmt, json/,
      )
      expectConfigFailure(
        await run(["--servers-config", path, ...fileFlags()], { env: { MCP_SSH_LOG_FORMAT: "yaml" } }),
        /MCP_SSH_LOG_FORMAT: /,
      )
    })

    it("MCP_SSH_PORT=abc", async () => {
      const path = configFile("ok-port-env.json", { mcpServers: { a: miniServer } })
      expectConfigFailure(
        await run(["--servers-config", path, ...fileFlags()], { env: { MCP_SSH_PORT: "abc" } }),
        /MCP_SSH_PORT: .*"abc"/,
      )
    })

    it('gateway: {"port": "x"} in the file', async () => {
      const path = configFile("gateway-port.json", { mcpServers: { a: miniServer }, gateway: { port: "x" } })
      expectConfigFailure(await run(["--servers-config", path, ...fileFlags()]), `${path}: gateway.port: `)
    })

    it("an unknown gateway setting", async () => {
      const path = configFile("gateway-unknown.json", {
        mcpServers: { a: miniServer },
        gateway: { prot: 2222 },
      })
      expectConfigFailure(
        await run(["--servers-config", path, ...fileFlags()]),
        path,
        "gateway: unknown setting(s) 'prot'",
      )
    })
  })

  describe("resolves the port as flags > MCP_SSH_PORT > gateway.port > default", () => {
    /** Start, wait until it listens, SIGTERM: it must exit 0 and have logged only on stderr. */
    const listenPort = async (args: ReadonlyArray<string>, env: Readonly<Record<string, string>> = {}) => {
      const result = await run(args, { env, stopWhenListening: true })
      expect(result.port, result.stderr).toBeDefined()
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout).toBe("")
      return result.port
    }

    it("a flag beats the variable and the file", async () => {
      const [flag, variable, file] = await freePorts(3)
      const path = configFile("precedence-flag.json", {
        mcpServers: { a: miniServer },
        gateway: { port: file },
      })
      const args = ["--servers-config", path, ...fileFlags(), "--port", String(flag)]
      expect(await listenPort(args, { MCP_SSH_PORT: String(variable) })).toBe(flag)
    })

    it("the variable beats the file", async () => {
      const [variable, file] = await freePorts(2)
      const path = configFile("precedence-env.json", {
        mcpServers: { a: miniServer },
        gateway: { port: file },
      })
      expect(
        await listenPort(["--servers-config", path, ...fileFlags()], { MCP_SSH_PORT: String(variable) }),
      ).toBe(variable)
    })

    it("the file beats the default", async () => {
      const [file] = await freePorts(1)
      const path = configFile("precedence-file.json", {
        mcpServers: { a: miniServer },
        gateway: { port: file },
      })
      expect(await listenPort(["--servers-config", path, ...fileFlags()])).toBe(file)
    })

    it("the default is 127.0.0.1:8022", async () => {
      const path = configFile("precedence-default.json", { mcpServers: { a: miniServer } })
      const args = ["--servers-config", path, ...fileFlags()]
      if (await isPortFree(8022)) {
        expect(await listenPort(args)).toBe(8022)
      } else {
        // Something else holds 8022 here: the attempt to listen still shows the default.
        const result = await run(args)
        expect(result.code).toBe(1)
        expect(result.stderr).toContain("cannot listen on 127.0.0.1:8022")
      }
    })
  })

  it("--help exits 0 and lists every flag of the original tool", async () => {
    const result = await run(["--help"])
    expect(result.code, result.stderr).toBe(0)
    for (const flag of [
      "--host",
      "--port",
      "--authorized-clients",
      "--server-key",
      "--passphrase",
      "--servers-config",
      "--log-level",
      "--run-key-server",
      "--key-server-host",
      "--key-server-port",
    ]) {
      expect(result.stdout).toMatch(new RegExp(`(^|[\\s\\[])${flag}\\b`))
    }
    expect(result.stdout).toContain("default: 127.0.0.1")
    expect(result.stdout).toContain("default: 8022")
    expect(result.stdout).toContain("default: 8000")
    expect(result.stdout).toContain("default: servers_config.json")
  })

  it("--version prints the version", async () => {
    const result = await run(["--version"])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout.trim()).toBe(version)
    const packageJson = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as {
      version: string
    }
    expect(version).toBe(packageJson.version)
  })
})
