/**
 * mcp-ssh-client's pure code: known_hosts parsing and matching (checked against OpenSSH's own
 * ssh-keygen), the streaming scan of relayed JSON-RPC lines, pending-request bookkeeping, and the
 * client's settings.
 */
import { execFileSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import {
  hashedKnownHostsLine,
  hostKeyAlgorithms,
  hostMatches,
  knownHostsLine,
  knownHostsName,
  knownKeyTypes,
  parseKnownHosts,
  preferredHostKeyAlgorithms,
  verifyHostKey,
} from "../src/client/knownHostsFormat.js"
import { connectionLostResponse, PendingRequests } from "../src/client/pendingRequests.js"
import { type LineFacts, LineScanner } from "../src/client/requestTracker.js"
import {
  isPlainHttpOverNetwork,
  keyServerBase,
  parseLogLevel,
  parseServers,
  redirectProblem,
  sessionCommand,
} from "../src/client/settings.js"
import { expandHome } from "../src/shared/paths.js"

const dir = mkdtempSync(join(tmpdir(), "mcp-ssh-client-domain-"))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

/** A real ed25519 public key line from ssh-keygen. */
const newKey = (name: string): { line: string; blob: Buffer } => {
  const path = join(dir, name)
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", name, "-f", path])
  const line = execFileSync("ssh-keygen", ["-y", "-f", path]).toString().trim()
  return {
    line: line.split(" ").slice(0, 2).join(" "),
    blob: Buffer.from(line.split(" ")[1] ?? "", "base64"),
  }
}
const keyA = newKey("a")
const keyB = newKey("b")

describe("known_hosts", () => {
  it("names hosts as OpenSSH looks them up", () => {
    expect(knownHostsName("Tools.Example.com", 22)).toBe("tools.example.com")
    expect(knownHostsName("localhost", 8022)).toBe("[localhost]:8022")
    expect(knownHostsName("::1", 8022)).toBe("[::1]:8022")
    expect(knownHostsName("[::1]", 22)).toBe("::1")
  })

  it("matches patterns, lists, wildcards and negations, ignoring case", () => {
    const match = (field: string, name: string) => {
      const [entry] = parseKnownHosts(`${field} ${keyA.line}`).entries
      return entry !== undefined && hostMatches(entry.hosts, name)
    }
    expect(match("tools.example.com", "tools.example.com")).toBe(true)
    expect(match("TOOLS.example.com", "tools.example.com")).toBe(true)
    expect(match("other,tools.example.com", "tools.example.com")).toBe(true)
    expect(match("*.example.com", "tools.example.com")).toBe(true)
    expect(match("tool?.example.com", "tools.example.com")).toBe(true)
    expect(match("tool?.example.com", "tool.example.com")).toBe(false)
    expect(match("*.example.com,!tools.example.com", "tools.example.com")).toBe(false)
    expect(match("*.example.com,!tools.example.com", "mail.example.com")).toBe(true)
    expect(match("[tools.example.com]:8022", "[tools.example.com]:8022")).toBe(true)
    expect(match("[tools.example.com]:8022", "tools.example.com")).toBe(false)
    expect(match("tools.example.com", "[tools.example.com]:8022")).toBe(false)
    expect(match("[*.example.com]:8022", "[tools.example.com]:8022")).toBe(true)
  })

  it("reads names hashed by ssh-keygen -H, and writes hashes ssh-keygen -F finds", () => {
    const file = join(dir, "hashed")
    writeFileSync(file, `[tools.example.com]:8022 ${keyA.line}\nplain.example.com ${keyB.line}\n`)
    execFileSync("ssh-keygen", ["-H", "-f", file], { stdio: "ignore" })
    const { entries, problems } = parseKnownHosts(execFileSync("cat", [file]).toString())
    expect(problems).toEqual([])
    expect(entries.map((entry) => entry.hosts._tag)).toEqual(["Hashed", "Hashed"])
    expect(verifyHostKey(entries, "[tools.example.com]:8022", keyA.blob)._tag).toBe("Known")
    expect(verifyHostKey(entries, "plain.example.com", keyB.blob)._tag).toBe("Known")
    expect(verifyHostKey(entries, "tools.example.com", keyA.blob)._tag).toBe("Unknown")

    const ours = join(dir, "ours")
    writeFileSync(ours, `${hashedKnownHostsLine("[gw.example.com]:8022", keyA.blob, randomBytes(20))}\n`)
    const found = execFileSync("ssh-keygen", ["-F", "[gw.example.com]:8022", "-f", ours]).toString()
    expect(found).toContain(keyA.line)
  })

  it("judges a presented key: known, changed, unknown, revoked; cert-authority lines are ignored", () => {
    const file = [
      "# comment",
      "",
      `[gw]:8022 ${keyA.line} a comment`,
      `other ${keyB.line}`,
      `@cert-authority * ${keyB.line}`,
      `@revoked [bad]:8022 ${keyB.line}`,
      `[bad]:8022 ${keyA.line}`,
      "@future * ssh-ed25519 AAAA",
      "onlyhost",
      "host ssh-ed25519 not*base64",
    ].join("\n")
    const { entries, problems } = parseKnownHosts(file)
    expect(problems.map((problem) => problem.line)).toEqual([8, 9, 10])
    expect(verifyHostKey(entries, "[gw]:8022", keyA.blob)).toMatchObject({
      _tag: "Known",
      entry: { line: 3 },
    })
    const changed = verifyHostKey(entries, "[gw]:8022", keyB.blob)
    expect(changed._tag).toBe("Changed")
    expect(changed._tag === "Changed" && changed.known.map((entry) => entry.line)).toEqual([3])
    expect(verifyHostKey(entries, "[new]:8022", keyA.blob)._tag).toBe("Unknown")
    expect(verifyHostKey(entries, "[bad]:8022", keyB.blob)).toMatchObject({
      _tag: "Revoked",
      entry: { line: 6 },
    })
    expect(verifyHostKey(entries, "[bad]:8022", keyA.blob)._tag).toBe("Known")
    expect(knownKeyTypes(entries, "[gw]:8022")).toEqual(["ssh-ed25519"])
  })

  it("writes the line to add, and offers the known key types first", () => {
    expect(knownHostsLine("[gw]:8022", keyA.blob)).toBe(`[gw]:8022 ${keyA.line}`)
    expect(preferredHostKeyAlgorithms(["ssh-rsa"], hostKeyAlgorithms).slice(0, 3)).toEqual([
      "rsa-sha2-512",
      "rsa-sha2-256",
      "ssh-rsa",
    ])
    expect(preferredHostKeyAlgorithms([], hostKeyAlgorithms)).toEqual(hostKeyAlgorithms)
  })
})

/** Ground truth for a line: what JSON.parse says its facts are. */
const truth = (line: string): LineFacts | undefined => {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return undefined
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined
  const message = value as Record<string, unknown>
  const idOf = (id: unknown) =>
    typeof id === "string" || typeof id === "number" ? JSON.stringify(id) : undefined
  const method = typeof message.method === "string" ? message.method : undefined
  if (!("id" in message) && method === undefined) return undefined
  const params = message.params
  return {
    id: idOf(message.id),
    method,
    answers: "result" in message || "error" in message,
    cancels:
      typeof params === "object" && params !== null && !Array.isArray(params)
        ? idOf((params as Record<string, unknown>).requestId)
        : undefined,
  }
}

const lines = [
  '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}',
  '{"method":"tools/call","params":{"name":"x","arguments":{"id":"inner","method":"no","text":"a \\"quoted\\" } ] { id"}},"jsonrpc":"2.0","id":"abc"}',
  '{ "jsonrpc" : "2.0" , "id" : 42 , "result" : { "id" : 7, "content" : [ { "type" : "text" } ] } }',
  '{"jsonrpc":"2.0","id":"p\\u00e9","error":{"code":-1,"message":"no"}}',
  '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"reason":"x","requestId":"abc"}}',
  '{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"nested":{"requestId":9},"requestId":3}}',
  '{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}',
  '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}',
  '{"result":{},"jsonrpc":"2.0","id":1.0}',
  '{"jsonrpc":"2.0","id":-3e2,"method":"ping"}',
  '{"jsonrpc":"2.0","id":5,"method":"sampling/createMessage","params":{"messages":[{"content":{"text":"\\\\"}}]}}',
  '[{"jsonrpc":"2.0","id":1,"method":"ping"}]',
  "not json at all",
  '{"jsonrpc":"2.0","id":{"object":"id"},"method":"ping"}',
  `{"jsonrpc":"2.0","id":"big","result":{"blob":"${'x\\\\y\\".'.repeat(20_000)}"}}`,
  "   ",
]

describe("the line scanner", () => {
  it("finds the same ids and methods as JSON.parse, however the stream is cut", () => {
    const expected = lines.map(truth).filter((facts): facts is LineFacts => facts !== undefined)
    const stream = Buffer.from(`${lines.join("\n")}\n`)
    const whole = new LineScanner().push(stream)
    expect(whole).toEqual(expected)
    for (const size of [1, 2, 3, 7, 64, 1000]) {
      const scanner = new LineScanner()
      const found: Array<LineFacts> = []
      for (let offset = 0; offset < stream.length; offset += size) {
        found.push(...scanner.push(stream.subarray(offset, offset + size)))
      }
      expect(found, `cut every ${size} bytes`).toEqual(expected)
      expect(scanner.midLine).toBe(false)
    }
  })

  it("knows when it is in the middle of a line, and reads a last line without newline", () => {
    const scanner = new LineScanner()
    expect(scanner.push(Buffer.from('{"jsonrpc":"2.0","id":7,"me'))).toEqual([])
    expect(scanner.midLine).toBe(true)
    expect(scanner.push(Buffer.from('thod":"ping"}'))).toEqual([])
    expect(scanner.end()).toEqual([{ id: "7", method: "ping", answers: false, cancels: undefined }])
    expect(scanner.midLine).toBe(false)
    expect(scanner.push(Buffer.from('{"id":1,"result":{}}\r\n'))).toEqual([
      { id: "1", method: undefined, answers: true, cancels: undefined },
    ])
  })
})

describe("pending requests", () => {
  const facts = (line: string) => new LineScanner().push(Buffer.from(`${line}\n`))[0] as LineFacts

  it("keeps the host's requests until answered or cancelled", () => {
    const pending = new PendingRequests()
    pending.fromHost(facts('{"jsonrpc":"2.0","id":1,"method":"tools/call"}'))
    pending.fromHost(facts('{"jsonrpc":"2.0","id":"two","method":"tools/call"}'))
    pending.fromHost(facts('{"jsonrpc":"2.0","id":3,"method":"ping"}'))
    // The host answering the gateway's own request is not a request.
    pending.fromHost(facts('{"jsonrpc":"2.0","id":99,"result":{}}'))
    // The gateway's requests to the host are not the host's.
    pending.fromGateway(facts('{"jsonrpc":"2.0","id":1,"method":"sampling/createMessage"}'))
    expect(pending.list()).toEqual(["1", '"two"', "3"])
    pending.fromGateway(facts('{"jsonrpc":"2.0","id":1.0,"result":{}}'))
    pending.fromHost(
      facts('{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"two"}}'),
    )
    expect(pending.list()).toEqual(["3"])
    pending.fromGateway(facts('{"jsonrpc":"2.0","id":3,"error":{"code":1,"message":"x"}}'))
    expect(pending.size).toBe(0)
  })

  it("answers a lost request with a JSON-RPC error line", () => {
    const line = connectionLostResponse('"a\\"b"', "read ECONNRESET")
    expect(line.endsWith("\n")).toBe(true)
    expect(JSON.parse(line)).toEqual({
      jsonrpc: "2.0",
      id: 'a"b',
      error: { code: -32000, message: "connection to the gateway lost: read ECONNRESET" },
    })
  })
})

describe("client settings", () => {
  it("derives the key API's URL, and never changes its scheme", () => {
    expect(keyServerBase(undefined, "gw.example.com", 8000)).toBe("http://gw.example.com:8000/")
    expect(keyServerBase(undefined, "::1", 8000)).toBe("http://[::1]:8000/")
    expect(keyServerBase("https://gw.example.com/keys", "x", 1)).toBe("https://gw.example.com/keys/")
    expect(keyServerBase("ftp://gw.example.com", "x", 1)).toMatchObject({
      problem: expect.stringMatching(/https or http/),
    })
    expect(keyServerBase("https://user:pw@gw.example.com", "x", 1)).toMatchObject({
      problem: expect.any(String),
    })
    expect(keyServerBase("not a url", "x", 1)).toMatchObject({ problem: expect.any(String) })
    expect(redirectProblem("https://a/x", "http://a/y")).toMatch(/from https to http/)
    expect(redirectProblem("https://a/x", "https://b/y")).toBeUndefined()
    expect(redirectProblem("http://a/x", "https://a/y")).toBeUndefined()
    expect(isPlainHttpOverNetwork("http://gw.example.com:8000/")).toBe(true)
    expect(isPlainHttpOverNetwork("http://127.0.0.1:8000/")).toBe(false)
    expect(isPlainHttpOverNetwork("https://gw.example.com/")).toBe(false)
  })

  it("reads server selections, log levels and home-relative paths", () => {
    expect(parseServers("github, everything,github")).toEqual(["github", "everything"])
    expect(parseServers("ok;rm -rf")).toMatchObject({ problem: expect.stringMatching(/not a server name/) })
    expect(sessionCommand([])).toBeUndefined()
    expect(sessionCommand(["a", "b"])).toBe("a,b")
    expect(parseLogLevel("warn")).toBe("WARNING")
    expect(parseLogLevel("Debug")).toBe("DEBUG")
    expect(parseLogLevel("loud")).toMatchObject({ problem: expect.any(String) })
    expect(expandHome("~/.ssh/key", "/home/me")).toBe("/home/me/.ssh/key")
    expect(expandHome("/abs", "/home/me")).toBe("/abs")
  })
})
