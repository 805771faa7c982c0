/**
 * The pure domain code: line framing, JSON-RPC classification, authorized_keys parsing and the config
 * schema. Keys are made by the real ssh-keygen so fingerprints are checked against OpenSSH itself.
 */
import { execFileSync } from "node:child_process"
import { readFileSync, rmSync } from "node:fs"
import { join } from "node:path"
import { Either } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { childEnvironment, decodeServersConfig, expandEnvValue } from "../src/gateway/config/serversConfig.js"
import { decodeSettings, gatewaySettings } from "../src/gateway/config/settings.js"
import { type Classified, classifyLine, ErrorCode, recoverId } from "../src/shared/jsonRpc.js"
import { type Frame, LineFramer } from "../src/shared/lineFramer.js"
import {
  fingerprintOf,
  isKeyProblem,
  type KeyProblem,
  type PublicKey,
  parseAuthorizedKeys,
  parsePublicKey,
} from "../src/shared/publicKey.js"
import { tempDir } from "./support/gateway.js"

const text = (frame: Frame | undefined): string => {
  if (frame?._tag !== "Line") throw new Error(`expected a Line frame, got ${JSON.stringify(frame)}`)
  return Buffer.from(frame.bytes).toString("utf8")
}
const chunk = (value: string) => Buffer.from(value, "utf8")

// ---------------------------------------------------------------------------------------------

describe("LineFramer", () => {
  it("joins a line split across chunks", () => {
    const framer = new LineFramer(1024)
    expect(framer.push(chunk('{"jsonrpc":'))).toEqual([])
    expect(framer.push(chunk('"2.0","id"'))).toEqual([])
    const frames = framer.push(chunk(":1}\n"))
    expect(frames).toHaveLength(1)
    expect(text(frames[0])).toBe('{"jsonrpc":"2.0","id":1}')
  })

  it("splits several lines in one chunk, keeping a trailing partial line for later", () => {
    const framer = new LineFramer(1024)
    const frames = framer.push(chunk('{"a":1}\n{"b":2}\n{"c":3}\n{"d":'))
    expect(frames.map(text)).toEqual(['{"a":1}', '{"b":2}', '{"c":3}'])
    expect(framer.push(chunk("4}\n")).map(text)).toEqual(['{"d":4}'])
  })

  it("strips a CR before the newline, also when CR and LF arrive in different chunks", () => {
    const framer = new LineFramer(1024)
    expect(framer.push(chunk('{"a":1}\r\n{"b":2}\r')).map(text)).toEqual(['{"a":1}'])
    expect(framer.push(chunk("\n")).map(text)).toEqual(['{"b":2}'])
  })

  it("skips blank and whitespace-only lines", () => {
    const framer = new LineFramer(1024)
    expect(framer.push(chunk("\n\n   \n\t \t\n\r\n"))).toEqual([])
    expect(framer.push(chunk('\n  \n{"x":1}\n\n')).map(text)).toEqual(['{"x":1}'])
  })

  it("accepts a line of exactly the cap and refuses one byte more", () => {
    const framer = new LineFramer(16)
    const frames = framer.push(chunk(`${"a".repeat(16)}\n${"b".repeat(17)}\n`))
    expect(frames).toHaveLength(2)
    expect(text(frames[0])).toBe("a".repeat(16))
    expect(frames[1]).toMatchObject({ _tag: "Oversized", size: 17 })
  })

  it("reports an oversized line once, with its size, head and tail, without buffering it whole", () => {
    const cap = 1024
    const framer = new LineFramer(cap)
    const internals = framer as unknown as {
      pendingBytes: number
      discardHead: Buffer
      discardTail: Buffer
    }
    const filler = "x".repeat(200_000)
    const line = `{"jsonrpc":"2.0","method":"tools/call","params":{"data":"${filler}"},"id":42}`
    const bytes = chunk(line)
    const frames: Array<Frame> = []
    for (let offset = 0; offset < bytes.length; offset += 100) {
      frames.push(...framer.push(bytes.subarray(offset, offset + 100)))
      // Whatever the framer holds stays bounded by the cap and the head/tail windows.
      expect(internals.pendingBytes).toBeLessThanOrEqual(cap)
      expect(internals.discardHead.length).toBeLessThanOrEqual(4096)
      expect(internals.discardTail.length).toBeLessThanOrEqual(512)
    }
    expect(frames).toEqual([])
    frames.push(...framer.push(chunk('\n{"next":true}\n')))
    expect(frames).toHaveLength(2)
    const [oversized, next] = frames
    if (oversized?._tag !== "Oversized") throw new Error("expected an Oversized frame")
    expect(oversized.size).toBe(bytes.length)
    expect(oversized.head).toBe(line.slice(0, 4096))
    expect(oversized.tail).toBe(line.slice(-512))
    expect(recoverId(oversized.head, oversized.tail)).toBe(42)
    // The line after the oversized one is intact.
    expect(text(next)).toBe('{"next":true}')
  })

  it("starts a fresh line right after the oversized one inside the same chunk", () => {
    const framer = new LineFramer(8)
    const frames = framer.push(chunk(`${"z".repeat(50)}\nshort\n`))
    expect(frames.map((frame) => frame._tag)).toEqual(["Oversized", "Line"])
    expect(text(frames[1])).toBe("short")
  })

  it("end() flushes an unterminated last line, and nothing when there is none", () => {
    const framer = new LineFramer(1024)
    expect(framer.push(chunk('{"a":1}\n{"last":'))).toHaveLength(1)
    expect(framer.push(chunk("true}"))).toEqual([])
    expect(framer.end().map(text)).toEqual(['{"last":true}'])
    expect(framer.end()).toEqual([])
  })

  it("end() reports an unterminated oversized line", () => {
    const framer = new LineFramer(4)
    framer.push(chunk("0123456789"))
    expect(framer.end()).toEqual([{ _tag: "Oversized", size: 10, head: "0123456789", tail: "0123456789" }])
  })
})

// ---------------------------------------------------------------------------------------------

const classify = (value: string | Buffer): Classified =>
  classifyLine(typeof value === "string" ? chunk(value) : value)

const expectInvalid = (classified: Classified, code: number, id: string | number | null = null) => {
  if (classified._tag !== "Invalid") throw new Error(`expected Invalid, got ${JSON.stringify(classified)}`)
  expect(classified.error.code).toBe(code)
  expect(classified.id).toBe(id)
  return classified.error.message
}

describe("classifyLine", () => {
  it("classifies a request", () => {
    const line = '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"c"},"_meta":{"x":1}}'
    const classified = classify(line)
    expect(classified._tag).toBe("Request")
    // Unknown fields are kept as they came.
    expect(classified).toMatchObject({ message: JSON.parse(line) })
    expect(classify('{"jsonrpc":"2.0","id":"abc","method":"ping"}')._tag).toBe("Request")
  })

  it("classifies a notification (no id)", () => {
    const classified = classify('{"jsonrpc":"2.0","method":"notifications/initialized"}')
    expect(classified).toEqual({
      _tag: "Notification",
      message: { jsonrpc: "2.0", method: "notifications/initialized" },
    })
  })

  it("classifies a response and an error response", () => {
    expect(classify('{"jsonrpc":"2.0","id":7,"result":{}}')).toEqual({
      _tag: "Response",
      message: { jsonrpc: "2.0", id: 7, result: {} },
    })
    const error = classify('{"jsonrpc":"2.0","id":"q","error":{"code":-32601,"message":"Method not found"}}')
    expect(error._tag).toBe("Response")
    expect(error).toMatchObject({
      message: { id: "q", error: { code: -32601, message: "Method not found" } },
    })
  })

  it("answers invalid UTF-8 with a parse error", () => {
    const message = expectInvalid(classify(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])), -32700)
    expect(message).toMatch(/UTF-8/)
  })

  it("answers text that is not JSON with a parse error", () => {
    expectInvalid(classify('{"jsonrpc":"2.0","id":1,'), ErrorCode.ParseError)
    expectInvalid(classify("hello"), ErrorCode.ParseError)
  })

  it("refuses a batch (JSON array) as an invalid request", () => {
    const message = expectInvalid(classify('[{"jsonrpc":"2.0","id":1,"method":"ping"}]'), -32600)
    expect(message).toMatch(/batch/)
  })

  it("refuses a JSON value that is not an object", () => {
    for (const line of ["42", '"text"', "null", "true"]) expectInvalid(classify(line), -32600)
  })

  it('refuses a wrong "jsonrpc" but keeps the id so the sender can be answered', () => {
    expectInvalid(classify('{"jsonrpc":"1.0","id":9,"method":"ping"}'), -32600, 9)
    expectInvalid(classify('{"id":"s","method":"ping"}'), -32600, "s")
  })

  it("refuses params that are not an object with invalid params", () => {
    expectInvalid(classify('{"jsonrpc":"2.0","id":3,"method":"tools/call","params":[1,2]}'), -32602, 3)
    expectInvalid(classify('{"jsonrpc":"2.0","id":4,"method":"tools/call","params":"x"}'), -32602, 4)
  })

  it("refuses a response that has both result and error, or neither", () => {
    expectInvalid(
      classify('{"jsonrpc":"2.0","id":5,"result":{},"error":{"code":1,"message":"m"}}'),
      -32600,
      5,
    )
    expectInvalid(classify('{"jsonrpc":"2.0","id":6}'), -32600, 6)
  })

  it("refuses a request whose id is neither a string nor a number", () => {
    expectInvalid(classify('{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}'), -32600)
  })
})

describe("recoverId", () => {
  const filler = '"params":{"data":"xxxxxxxx"}'

  it("finds a trailing top-level id, number or string", () => {
    expect(recoverId("", `${filler},"id":17}`)).toBe(17)
    expect(recoverId("", `${filler}, "id" : -3 }\r`)).toBe(-3)
    expect(recoverId("", `${filler},"id":"req-\\"1\\""}`)).toBe('req-"1"')
  })

  it('finds a leading id, alone or right after "jsonrpc"', () => {
    expect(recoverId('{"jsonrpc":"2.0","id":8,"method":"tools/call",', "xxxx}}")).toBe(8)
    expect(recoverId('{"id":"abc","jsonrpc":"2.0",', "xxxx}}")).toBe("abc")
  })

  it("does not take a nested id", () => {
    expect(recoverId('{"jsonrpc":"2.0","result":{"id":5', '{"result":{"id":5}}')).toBeNull()
    expect(
      recoverId('{"jsonrpc":"2.0","method":"x","params":{"id":5,', 'xx","items":[{"id":6}]}}'),
    ).toBeNull()
    expect(recoverId('{"method":"x","id":5,', "xx}}")).toBeNull()
  })

  it("returns null when no id can be seen", () => {
    expect(recoverId("xxxx", "xxxx")).toBeNull()
    expect(recoverId('{"jsonrpc":"2.0","id":null,', '"id":null}')).toBeNull()
  })
})

// ---------------------------------------------------------------------------------------------

describe("authorized_keys", () => {
  let dir: string
  const keys: Record<string, { line: string; fingerprint: string; path: string }> = {}

  const keygen = (name: string, type: string, bits?: number) => {
    const path = join(dir, name)
    const size = bits === undefined ? [] : ["-b", String(bits)]
    execFileSync("ssh-keygen", ["-q", "-t", type, ...size, "-N", "", "-C", `${name}@test`, "-f", path])
    const listed = execFileSync("ssh-keygen", ["-lf", `${path}.pub`, "-E", "sha256"]).toString()
    const fingerprint = listed.split(" ")[1] ?? ""
    keys[name] = { line: readFileSync(`${path}.pub`, "utf8").trim(), fingerprint, path }
  }
  const key = (name: string) => {
    const found = keys[name]
    if (found === undefined) throw new Error(`no key ${name}`)
    return found
  }
  const blobOf = (name: string) => key(name).line.split(" ")[1] ?? ""

  const ok = (parsed: PublicKey | KeyProblem): PublicKey => {
    if (isKeyProblem(parsed)) throw new Error(`unexpected problem: ${parsed.reason}`)
    return parsed
  }
  const reason = (parsed: PublicKey | KeyProblem): string => {
    if (!isKeyProblem(parsed)) throw new Error(`expected a problem, got key ${parsed.fingerprint}`)
    return parsed.reason
  }

  beforeAll(() => {
    dir = tempDir("mcp-ssh-keys-")
    keygen("ed", "ed25519")
    keygen("ec", "ecdsa", 256)
    keygen("rsa", "rsa", 2048)
    keygen("rsa1024", "rsa", 1024)
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it("parses ssh-keygen's ed25519, ecdsa-256 and rsa-2048 keys with OpenSSH's fingerprints", () => {
    for (const [name, type] of [
      ["ed", "ssh-ed25519"],
      ["ec", "ecdsa-sha2-nistp256"],
      ["rsa", "ssh-rsa"],
    ] as const) {
      const { line, fingerprint } = key(name)
      expect(fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/)
      const parsed = ok(parsePublicKey(line))
      expect(parsed.type).toBe(type)
      expect(parsed.comment).toBe(`${name}@test`)
      expect(parsed.fingerprint).toBe(fingerprint)
      expect(fingerprintOf(parsed.blob)).toBe(fingerprint)
      expect(parsed.blob.equals(Buffer.from(blobOf(name), "base64"))).toBe(true)
    }
  })

  it("parses a file with comments, blank lines, CRLF and options with quoted strings", () => {
    const content = [
      "# clients allowed in",
      "",
      `${key("ed").line}`,
      "   ",
      `command="echo a, b",no-pty ${key("ec").line}`,
      `  # indented comment ${key("rsa").line}`,
      `from="10.0.0.1,192.168.0.0/24",command="/bin/echo \\"x y\\"" ssh-rsa ${blobOf("rsa")} rsa with spaces in comment`,
      `no-agent-forwarding\t${key("ed").line.replace("ed@test", "")}`,
    ].join("\r\n")
    const { keys: parsed, problems } = parseAuthorizedKeys(content)
    expect(problems).toEqual([])
    expect(parsed.map((k) => [k.line, k.type, k.options, k.comment, k.fingerprint])).toEqual([
      [3, "ssh-ed25519", undefined, "ed@test", key("ed").fingerprint],
      [5, "ecdsa-sha2-nistp256", 'command="echo a, b",no-pty', "ec@test", key("ec").fingerprint],
      [
        7,
        "ssh-rsa",
        'from="10.0.0.1,192.168.0.0/24",command="/bin/echo \\"x y\\""',
        "rsa with spaces in comment",
        key("rsa").fingerprint,
      ],
      [8, "ssh-ed25519", "no-agent-forwarding", "", key("ed").fingerprint],
    ])
  })

  it("refuses RSA keys under 2048 bits, saying how many bits", () => {
    expect(reason(parsePublicKey(key("rsa1024").line))).toMatch(/1024 bits.*2048/)
  })

  it("refuses ssh-dss", () => {
    // OpenSSH 9.8+ no longer makes DSA keys: build the blob (string "ssh-dss", then p, q, g, y).
    const field = (bytes: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, bytes.length]), bytes])
    const blob = Buffer.concat([
      field(Buffer.from("ssh-dss")),
      ...[1, 2, 3, 4].map((n) => field(Buffer.alloc(20, n))),
    ])
    const line = `ssh-dss ${blob.toString("base64")} old@host`
    expect(reason(parsePublicKey(line))).toMatch(/DSA/)
    const { keys: parsed, problems } = parseAuthorizedKeys(`# old\n${line}\n`)
    expect(parsed).toEqual([])
    expect(problems).toEqual([{ line: 2, reason: expect.stringMatching(/DSA/) }])
  })

  it("refuses a line whose type differs from the type inside the key data", () => {
    expect(reason(parsePublicKey(`ssh-ed25519 ${blobOf("ec")} liar`))).toMatch(
      /key data says 'ecdsa-sha2-nistp256' but the line says 'ssh-ed25519'/,
    )
    expect(reason(parsePublicKey(`ecdsa-sha2-nistp256 ${blobOf("rsa")} liar`))).toMatch(/ssh-rsa/)
  })

  it("refuses a private key, naming it as such", () => {
    const privateText = readFileSync(key("ed").path, "utf8")
    expect(reason(parsePublicKey(privateText))).toMatch(/private key/)
    const { keys: parsed, problems } = parseAuthorizedKeys(`${key("ec").line}\n${privateText}`)
    expect(parsed.map((k) => k.line)).toEqual([1])
    expect(problems[0]).toEqual({ line: 2, reason: expect.stringMatching(/private key/) })
  })

  it("refuses bad base64", () => {
    expect(reason(parsePublicKey("ssh-ed25519 AAAA!!!!bad c"))).toMatch(/base64/)
    expect(reason(parsePublicKey("ssh-ed25519 AAAAC3NzaC1 c"))).toMatch(/base64/)
    expect(reason(parsePublicKey(`ssh-ed25519 ${blobOf("ed").slice(0, 40)} c`))).toMatch(
      /truncated|malformed/,
    )
  })

  it("reports each problem with its line number and keeps the good keys", () => {
    const content = [
      "# header",
      key("ed").line,
      "ssh-ed25519 not*base64",
      "",
      key("rsa1024").line,
      "just-one-token",
      key("rsa").line,
    ].join("\n")
    const { keys: parsed, problems } = parseAuthorizedKeys(content)
    expect(parsed.map((k) => k.line)).toEqual([2, 7])
    expect(problems.map((p) => p.line)).toEqual([3, 5, 6])
    expect(problems[1]?.reason).toMatch(/bits/)
  })
})

// ---------------------------------------------------------------------------------------------

const left = <A>(either: Either.Either<A, string>): string => {
  if (Either.isRight(either)) throw new Error(`expected a failure, got ${JSON.stringify(either.right)}`)
  return either.left
}
const right = <A>(either: Either.Either<A, string>): A => {
  if (Either.isLeft(either)) throw new Error(`expected success, got: ${either.left}`)
  return either.right
}

describe("decodeServersConfig", () => {
  it("accepts a Claude Desktop config", () => {
    const config = {
      $schema: "https://example.com/schema.json",
      mcpServers: {
        filesystem: {
          command: "npx",
          args: ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],
        },
        github: {
          command: "docker",
          args: [
            "run",
            "-i",
            "--rm",
            "-e",
            "GITHUB_PERSONAL_ACCESS_TOKEN",
            "ghcr.io/github/github-mcp-server",
          ],
          env: { GITHUB_PERSONAL_ACCESS_TOKEN: "${GITHUB_TOKEN}" },
        },
        "local-tool_2": { command: "/usr/bin/tool", cwd: "~/work", disabled: true, type: "stdio" },
      },
      gateway: { port: 9022, logLevel: "debug" },
    }
    const decoded = right(decodeServersConfig(config))
    expect(Object.keys(decoded.mcpServers)).toEqual(["filesystem", "github", "local-tool_2"])
    expect(decoded.mcpServers.github?.env).toEqual({ GITHUB_PERSONAL_ACCESS_TOKEN: "${GITHUB_TOKEN}" })
    expect(decoded.gateway).toEqual({ port: 9022, logLevel: "debug" })
  })

  it("refuses an unknown field, naming its path", () => {
    expect(left(decodeServersConfig({ mcpServers: { a: { command: "x", bogus: 1 } } }))).toMatch(
      /mcpServers\.a\.bogus/,
    )
    expect(left(decodeServersConfig({ mcpServers: {}, extra: true }))).toMatch(/extra/)
  })

  it("refuses ill-typed fields, naming their path", () => {
    expect(left(decodeServersConfig({ mcpServers: { a: { command: "x", args: "--flag" } } }))).toMatch(
      /mcpServers\.a\.args/,
    )
    expect(left(decodeServersConfig({ mcpServers: { a: { command: "x", args: [1] } } }))).toMatch(
      /mcpServers\.a\.args/,
    )
    expect(left(decodeServersConfig({ mcpServers: { a: { command: "x", env: { K: 1 } } } }))).toMatch(
      /mcpServers\.a\.env\.K/,
    )
    expect(left(decodeServersConfig({ mcpServers: { a: { args: [] } } }))).toMatch(/mcpServers\.a\.command/)
    expect(left(decodeServersConfig({}))).toMatch(/mcpServers/)
  })

  it("refuses server names with '__' or spaces", () => {
    expect(left(decodeServersConfig({ mcpServers: { a__b: { command: "x" } } }))).toMatch(
      /mcpServers\.a__b: a server name may not contain '__'/,
    )
    expect(left(decodeServersConfig({ mcpServers: { "my server": { command: "x" } } }))).toMatch(
      /mcpServers\.my server: a server name must be 1-64 letters, digits/,
    )
    expect(right(decodeServersConfig({ mcpServers: { a_b: { command: "x" } } })).mcpServers.a_b).toBeDefined()
  })

  it("refuses unknown gateway settings, naming them", () => {
    const message = left(decodeServersConfig({ mcpServers: { a: { command: "x" } }, gateway: { prot: 1 } }))
    expect(message).toMatch(/gateway/)
    expect(message).toMatch(/'prot'/)
  })
})

describe("decodeSettings", () => {
  it("applies the defaults", () => {
    const settings = right(decodeSettings({}))
    expect(settings).toMatchObject({
      host: "127.0.0.1",
      port: 8022,
      keyServerHost: "127.0.0.1",
      keyServerPort: 8000,
      runKeyServer: false,
      logLevel: "INFO",
      passphrase: undefined,
    })
    for (const [key, spec] of Object.entries(gatewaySettings)) {
      expect(settings[key as keyof typeof settings]).toEqual(spec.default)
    }
  })

  it("converts text from flags and variables to the setting's type", () => {
    const settings = right(
      decodeSettings({
        port: { value: "8022", source: "--port" },
        keyServerPort: { value: " 9000 ", source: "MCP_SSH_KEY_SERVER_PORT" },
        runKeyServer: { value: "true", source: "MCP_SSH_RUN_KEY_SERVER" },
        loginGraceTime: { value: "2.5", source: "--login-grace-time" },
        logLevel: { value: "debug", source: "--log-level" },
        passphrase: { value: "1234", source: "--passphrase" },
      }),
    )
    expect(settings.port).toBe(8022)
    expect(settings.keyServerPort).toBe(9000)
    expect(settings.runKeyServer).toBe(true)
    expect(settings.loginGraceTime).toBe(2.5)
    expect(settings.logLevel).toBe("DEBUG")
    // A passphrase stays text even when it looks like a number.
    expect(settings.passphrase).toBe("1234")
    expect(right(decodeSettings({ runKeyServer: { value: "off", source: "x" } })).runKeyServer).toBe(false)
    expect(right(decodeSettings({ port: { value: 2222, source: "gateway.port" } })).port).toBe(2222)
  })

  it("names the source of a bad value", () => {
    expect(left(decodeSettings({ port: { value: "abc", source: "MCP_SSH_PORT" } }))).toMatch(
      /^MCP_SSH_PORT: .*"abc"/,
    )
    expect(left(decodeSettings({ port: { value: "70000", source: "--port" } }))).toMatch(/^--port: .*65535/)
    expect(left(decodeSettings({ runKeyServer: { value: "maybe", source: "--run-key-server" } }))).toMatch(
      /^--run-key-server:/,
    )
    expect(
      left(decodeSettings({ maxAuthTries: { value: "0", source: "cfg: gateway.maxAuthTries" } })),
    ).toMatch(/^cfg: gateway\.maxAuthTries: /)
    const both = left(
      decodeSettings({
        port: { value: "x", source: "--port" },
        host: { value: "  ", source: "MCP_SSH_HOST" },
      }),
    )
    expect(both.split("\n")).toHaveLength(2)
    expect(both).toMatch(/--port/)
    expect(both).toMatch(/MCP_SSH_HOST/)
  })
})

describe("expandEnvValue", () => {
  const environment = { TOKEN: "t0k", EMPTY: "", HOME: "/home/me" }

  it("expands ${VAR}, keeps $VAR without braces, and turns $$ into $", () => {
    expect(right(expandEnvValue("Bearer ${TOKEN}", environment))).toBe("Bearer t0k")
    expect(right(expandEnvValue("${HOME}/x:${TOKEN}${EMPTY}", environment))).toBe("/home/me/x:t0k")
    expect(right(expandEnvValue("$HOME", environment))).toBe("$HOME")
    expect(right(expandEnvValue("cost: $$5", environment))).toBe("cost: $5")
    expect(right(expandEnvValue("$${TOKEN}", environment))).toBe("${TOKEN}")
    expect(right(expandEnvValue("plain", environment))).toBe("plain")
  })

  it("reports unset variables", () => {
    const message = left(expandEnvValue("${NOPE_A}-${TOKEN}-${NOPE_B}", environment))
    expect(message).toMatch(/\$\{NOPE_A\}/)
    expect(message).toMatch(/\$\{NOPE_B\}/)
    expect(message).not.toMatch(/TOKEN/)
  })
})

describe("childEnvironment", () => {
  it("keeps only the safe inherited set plus the configured values", () => {
    const gateway = {
      PATH: "/usr/bin",
      HOME: "/home/me",
      USER: "me",
      LANG: "C.UTF-8",
      LC_ALL: "C.UTF-8",
      LC_TIME: "en_GB.UTF-8",
      SECRET_TOKEN: "s3cr3t",
      AWS_SECRET_ACCESS_KEY: "aws",
      NODE_OPTIONS: "--require evil.js",
      SSH_AUTH_SOCK: "/tmp/agent",
      MCP_SSH_PASSPHRASE: "host key passphrase",
      UNSET: undefined,
    }
    expect(childEnvironment(gateway, { API_KEY: "k", PATH: "/opt/bin" })).toEqual({
      PATH: "/opt/bin",
      HOME: "/home/me",
      USER: "me",
      LANG: "C.UTF-8",
      LC_ALL: "C.UTF-8",
      LC_TIME: "en_GB.UTF-8",
      API_KEY: "k",
    })
  })
})
