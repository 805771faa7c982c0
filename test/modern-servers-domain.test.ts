/**
 * Speaking to children of MCP 2026-07-28, without IO: reading a server/discover answer, the envelope
 * and the answers a modern child's connection gives the gateway, input_required passed through with
 * its requestState namespaced, and the `protocol` setting of the config.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { classifyDiscover, refusedVersions, relayableCapabilities } from "../src/gateway/children/discover.js"
import {
  inputRequestsOf,
  listenFilter,
  toLegacyResponse,
  withEnvelope,
} from "../src/gateway/children/modernChild.js"
import { makeProtocolMemory } from "../src/gateway/children/ProtocolMemory.js"
import type { ChildServer } from "../src/gateway/config/GatewayConfig.js"
import { decodeServersConfig } from "../src/gateway/config/serversConfig.js"
import {
  answerAsGiven,
  childState,
  fromModernChild,
  metaKey,
  namespacedState,
  tasksExtension,
  toModernChild,
  toTaskOwner,
} from "../src/gateway/hub/modern.js"

const answer = (result: unknown) => ({ jsonrpc: "2.0" as const, id: 1, result })
const failure = (code: number, data?: unknown) => ({
  jsonrpc: "2.0" as const,
  id: 1,
  error: { code, message: "no", ...(data === undefined ? {} : { data }) },
})

describe("reading the answer to server/discover", () => {
  it("a result that offers 2026-07-28 is a modern server", () => {
    const verdict = classifyDiscover(
      answer({ supportedVersions: ["2026-07-28"], capabilities: { tools: {} } }),
    )
    expect(verdict).toMatchObject({ _tag: "Modern", discover: { capabilities: { tools: {} } } })
  })

  it("any error, or a result that is no discover result, is a legacy server", () => {
    expect(classifyDiscover(failure(-32601))._tag).toBe("Legacy")
    expect(classifyDiscover(failure(-32600))._tag).toBe("Legacy")
    expect(classifyDiscover(answer({}))._tag).toBe("Legacy")
    // A -32022 without a list of versions says nothing of modern support.
    expect(classifyDiscover(failure(-32022))._tag).toBe("Legacy")
    expect(classifyDiscover(failure(-32022, { supported: ["2025-06-18"] }))._tag).toBe("Legacy")
  })

  it("a server that offers only versions the gateway does not speak is left out", () => {
    expect(classifyDiscover(failure(-32022, { supported: ["2099-01-01"] }))).toEqual({
      _tag: "Unsupported",
      offered: ["2099-01-01"],
    })
    expect(classifyDiscover(answer({ supportedVersions: ["2099-01-01"] }))).toEqual({
      _tag: "Unsupported",
      offered: ["2099-01-01"],
    })
  })

  it("reads the versions a refused initialize names", () => {
    expect(refusedVersions(failure(-32022, { supported: ["2026-07-28"] }))).toEqual(["2026-07-28"])
    expect(refusedVersions(failure(-32601))).toBeUndefined()
    expect(refusedVersions(answer({}))).toBeUndefined()
  })
})

describe("the envelope of a request to a modern child", () => {
  it("relays sampling, elicitation (form when no mode is named) and roots, nothing else", () => {
    expect(
      relayableCapabilities({
        sampling: {},
        elicitation: {},
        roots: { listChanged: true },
        experimental: {},
      }),
    ).toEqual({ sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } })
    expect(relayableCapabilities({ elicitation: { url: {} } })).toEqual({ elicitation: { url: {} } })
    expect(relayableCapabilities({})).toEqual({})
  })

  it("fills in what the request lacks, and keeps what a caller set", () => {
    const envelope = {
      clientCapabilities: { sampling: {} },
      clientInfo: { name: "c", version: "1" },
      logLevel: "info",
    }
    const params = withEnvelope({ name: "t", _meta: { progressToken: 7 } }, envelope)
    expect(params).toEqual({
      name: "t",
      _meta: {
        [metaKey.protocolVersion]: "2026-07-28",
        [metaKey.clientCapabilities]: { sampling: {} },
        [metaKey.clientInfo]: { name: "c", version: "1" },
        [metaKey.logLevel]: "info",
        progressToken: 7,
      },
    })
    const own = withEnvelope(
      { _meta: { [metaKey.clientCapabilities]: {} } },
      { ...envelope, logLevel: undefined },
    )
    expect(own._meta).toMatchObject({ [metaKey.clientCapabilities]: {} })
    expect(own._meta).not.toHaveProperty(metaKey.logLevel)
  })
})

describe("a modern child's answers, as a 2025-era child gives them", () => {
  it("leave out resultType, cache hints and serverInfo, and keep the rest", () => {
    const response = toLegacyResponse(
      answer({
        content: [],
        resultType: "complete",
        ttlMs: 5,
        cacheScope: "public",
        _meta: { [metaKey.serverInfo]: { name: "s" }, other: 1 },
      }),
    )
    expect(response.result).toEqual({ content: [], _meta: { other: 1 } })
    expect(
      toLegacyResponse(answer({ resultType: "complete", _meta: { [metaKey.serverInfo]: {} } })).result,
    ).toEqual({})
    expect(toLegacyResponse(failure(-32602))).toEqual(failure(-32602))
  })

  it("reads the input requests of an input_required result, or says what is wrong", () => {
    expect(
      inputRequestsOf({
        resultType: "input_required",
        inputRequests: {
          name: { method: "elicitation/create", params: { message: "?" } },
          roots: { method: "roots/list" },
        },
      }),
    ).toEqual([
      { key: "name", method: "elicitation/create", params: { message: "?" } },
      { key: "roots", method: "roots/list", params: {} },
    ])
    expect(inputRequestsOf({ resultType: "input_required" })).toMatch(/without inputRequests/)
    expect(inputRequestsOf({ inputRequests: {} })).toMatch(/no input requests/)
    expect(inputRequestsOf({ inputRequests: { x: { params: {} } } })).toMatch(/'x' has no method/)
  })

  it("listens for what the child offers and the URIs subscribed", () => {
    const capabilities = { tools: { listChanged: true }, resources: { subscribe: true } }
    expect(listenFilter(capabilities, new Set(["a://1"]))).toEqual({
      toolsListChanged: true,
      promptsListChanged: false,
      resourcesListChanged: false,
      resourceSubscriptions: ["a://1"],
    })
    expect(listenFilter({ resources: {} }, new Set(["a://1"])).resourceSubscriptions).toEqual([])
  })
})

describe("input_required from a modern child to a 2026 client", () => {
  it("namespaces requestState by server, and takes back only the server's own", () => {
    expect(namespacedState("s", "abc")).toBe("s:abc")
    expect(childState("s", "s:abc")).toBe("abc")
    expect(childState("s", "other:abc")).toBeUndefined()
    const passed = fromModernChild(
      "s",
      answer({ resultType: "input_required", inputRequests: {}, requestState: "abc" }),
    )
    expect(passed.result).toMatchObject({ resultType: "input_required", requestState: "s:abc" })
    expect(fromModernChild("s", answer({ resultType: "complete" })).result).toEqual({
      resultType: "complete",
    })
  })

  it("marks the request to come back as it is, with the child's own requestState", () => {
    const request = {
      jsonrpc: "2.0" as const,
      id: 3,
      method: "tools/call",
      params: { name: "t", requestState: "s:abc" },
    }
    const sent = toModernChild("s", request)
    expect(sent).toMatchObject({
      params: { name: "t", requestState: "abc", _meta: { [answerAsGiven]: true } },
    })
    expect(toModernChild("s", { ...request, params: { requestState: "other:abc" } })).toMatch(
      /not given by server 's'/,
    )
    expect(toModernChild("s", { ...request, params: { requestState: 5 } })).toMatch(/Invalid params/)
  })
})

describe("task ids of the tasks extension", () => {
  it("are namespaced by server in task handles and task states", () => {
    expect(
      fromModernChild("s", answer({ resultType: "task", taskId: "t1", status: "working" })).result,
    ).toEqual({
      resultType: "task",
      taskId: "s:t1",
      status: "working",
    })
    expect(fromModernChild("s", answer({ task: { taskId: "t1" } })).result).toEqual({
      task: { taskId: "s:t1" },
    })
  })

  it("route a task request to the server whose task it is, with its own id", () => {
    const request = { jsonrpc: "2.0" as const, id: 4, method: "tasks/get", params: { taskId: "b:t1" } }
    expect(toTaskOwner(["a", "b"], request)).toEqual({
      server: "b",
      request: { ...request, params: { taskId: "t1", _meta: { [answerAsGiven]: true } } },
    })
    expect(toTaskOwner(["a"], request)).toMatch(/unknown task b:t1/)
    expect(toTaskOwner(["a"], { ...request, params: {} })).toMatch(/taskId is missing/)
  })

  it("are offered to a modern child only when the client declared the extension", () => {
    const extension = { [tasksExtension]: {} }
    expect(relayableCapabilities({ extensions: { ...extension, other: {} } })).toEqual({
      extensions: extension,
    })
    expect(relayableCapabilities({ tasks: {} })).toEqual({})
  })
})

describe("the protocol setting", () => {
  const problems = (server: Record<string, unknown>) => {
    const decoded = decodeServersConfig({ mcpServers: { s: { command: "x", ...server } } })
    return Either.isLeft(decoded) ? decoded.left : ""
  }

  it("accepts auto and the two generations", () => {
    for (const protocol of ["auto", "2026-07-28", "2025-11-25"]) expect(problems({ protocol })).toBe("")
  })

  it("refuses anything else, naming the field", () => {
    expect(problems({ protocol: "2024-11-05" })).toMatch(/^mcpServers\.s\.protocol: .*"auto".*"2024-11-05"/)
    expect(problems({ protocol: true })).toMatch(/mcpServers\.s\.protocol/)
  })
})

describe("what the gateway remembers of a server's protocol", () => {
  const server = (overrides: Partial<ChildServer> = {}): ChildServer => ({
    name: "s",
    command: "node",
    args: ["server.js"],
    env: { PATH: "/usr/bin" },
    cwd: undefined,
    prefix: undefined,
    requestTimeout: 60,
    ...overrides,
  })

  it("is forgotten when a reload changes how the server is started, its environment or protocol included", () => {
    const memory = makeProtocolMemory()
    memory.rememberLeftOut(server(), "speaks only 2099-01-01")
    memory.rememberLegacy(server())
    expect(memory.leftOut(server())).toBe("speaks only 2099-01-01")
    for (const changed of [
      { env: { PATH: "/usr/bin", MCP_VERSION: "2026-07-28" } },
      { protocol: "2026-07-28" as const },
    ]) {
      expect(memory.leftOut(server(changed))).toBeUndefined()
      expect(memory.legacyOnly(server(changed))).toBe(false)
    }
  })
})
