/**
 * Scripted in-memory MCP servers behind a fake `Upstream`: what the gateway would start as child
 * processes, with no process. Each keeps the JSON-RPC contract of UpstreamConnection (the gateway's
 * own ids at the child, answers returned with the caller's id, one ordered output stream read only
 * when the session can take more, UpstreamError once the child is gone), and records everything it
 * receives so tests can assert what reached the child.
 */
import { Deferred, Effect, Fiber, FiberSet, Layer, Queue, type Scope } from "effect"
import {
  type ChildMessage,
  Upstream,
  type UpstreamConnection,
  type UpstreamOptions,
} from "../../../src/gateway/children/Upstream.js"
import type { ChildServer } from "../../../src/gateway/config/GatewayConfig.js"
import { UpstreamError } from "../../../src/gateway/errors.js"
import {
  ErrorCode,
  isObject,
  type JsonObject,
  type JsonRpcMessage,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
} from "../../../src/shared/jsonRpc.js"
import { whenOpen } from "../../../src/shared/streams.js"
import { Recorded } from "./recorded.js"

/** A JSON-RPC error a scripted handler answers with. */
export class ChildError {
  constructor(
    readonly code: number,
    readonly message: string,
  ) {}
}

/** What a handler answers: a result, or an error. */
export type Reply = JsonObject | ChildError

/** A tool call as the fake child sees it, with what it can do while answering. */
export interface ToolCall {
  readonly server: string
  readonly name: string
  readonly arguments: JsonObject
  /** The request as the child received it: the gateway's id, not the client's. */
  readonly request: JsonRpcRequest
  /** notifications/progress with the caller's progressToken (nothing when the call has none). */
  readonly progress: (progress: number, total?: number) => Effect.Effect<void>
  /** A notification the child sends on its own, in order with everything else it writes. */
  readonly notify: (method: string, params?: JsonObject) => Effect.Effect<void>
  readonly log: (level: string, data: unknown, logger?: string) => Effect.Effect<void>
  /** A request of the child to the client (sampling, elicitation, roots): waits for the answer. */
  readonly ask: (method: string, params?: JsonObject) => Effect.Effect<JsonRpcResponse>
  /** The child exits now, as a crash: nothing in progress gets an answer. */
  readonly crash: (code?: number) => Effect.Effect<never>
}

export interface FakeTool {
  readonly name: string
  readonly description?: string
  readonly inputSchema?: JsonObject
  /** Answers the call; by default, the `message` argument as text. */
  readonly run?: (call: ToolCall) => Effect.Effect<Reply>
}

export interface FakePrompt {
  readonly name: string
  readonly description?: string
  /** By default, one user message naming the prompt and its arguments. */
  readonly get?: (args: JsonObject) => Effect.Effect<Reply>
}

export interface FakeResource {
  readonly uri: string
  readonly name?: string
  /** By default "content of URI". */
  readonly text?: string
}

export interface FakeResourceTemplate {
  /** Level-1 URI template: each {name} matches one path segment. */
  readonly uriTemplate: string
  readonly name?: string
}

export interface FakeServerScript {
  /** A capability per kind that is given, even empty (a child with an empty list). */
  readonly tools?: ReadonlyArray<FakeTool>
  readonly prompts?: ReadonlyArray<FakePrompt>
  readonly resources?: ReadonlyArray<FakeResource>
  readonly resourceTemplates?: ReadonlyArray<FakeResourceTemplate>
  /** Items per page of every list (default: all on one page). */
  readonly pageSize?: number
  readonly logging?: boolean
  /** completion/complete: the values offered for a request. */
  readonly complete?: (params: JsonObject) => ReadonlyArray<string>
  /** tools/call with `task` runs as a task (tasks/get, tasks/result, tasks/cancel). */
  readonly tasks?: boolean
  readonly instructions?: string
  /** Methods outside MCP's own that the child answers. */
  readonly methods?: Readonly<Record<string, (request: JsonRpcRequest) => Effect.Effect<Reply>>>
  /** The server's `prefix` in the config (undefined: its name). */
  readonly prefix?: string
  /** The server's request timeout in seconds (the config's `timeout`). */
  readonly timeout?: number
  /** Who shares the child (the config's `scope`; default "session"), and its idle timeout in seconds. */
  readonly scope?: "session" | "identity" | "shared"
  readonly idleTimeout?: number
  /** Every start fails with this reason, until FakeChild.failStarts changes it. */
  readonly failStart?: string
}

/** A child as a test sees it, across its restarts. */
export interface FakeChild {
  readonly name: string
  /** How often the gateway started it, failed starts and the probe at gateway start included. */
  readonly starts: () => number
  /** Each life's connection, held weakly: which lives the gateway still keeps reachable. */
  readonly lives: () => ReadonlyArray<WeakRef<UpstreamConnection>>
  /** Whether a started child is running now. */
  readonly running: () => boolean
  /** Every message it received, in order, over all its lives. */
  readonly received: Recorded<JsonRpcMessage>
  /** Exit now, as a crash with this exit code. */
  readonly crash: (code?: number) => Effect.Effect<void>
  /** Make later starts fail with this reason (undefined: start normally again). */
  readonly failStarts: (reason: string | undefined) => void
  /** Send a notification on its own, as the running child. */
  readonly notify: (method: string, params?: JsonObject) => Effect.Effect<void>
}

export const text = (value: string): JsonObject => ({ content: [{ type: "text", text: value }] })

/** What the child writes, in order; a crash ends the stream. */
type Output =
  | { readonly _tag: "Response"; readonly response: JsonRpcResponse }
  | { readonly _tag: "Message"; readonly message: ChildMessage }
  | { readonly _tag: "Exit" }

interface Task {
  readonly fiber: Fiber.RuntimeFiber<Reply>
  status: "working" | "completed" | "cancelled"
}

const templatePattern = (template: string): RegExp =>
  new RegExp(
    `^${template
      .split(/(\{[^}]+\})/)
      .map((part) => (part.startsWith("{") ? "[^/]+" : part.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
      .join("")}$`,
  )

const capabilitiesOf = (script: FakeServerScript): JsonObject => ({
  ...(script.tools === undefined ? {} : { tools: { listChanged: true } }),
  ...(script.prompts === undefined ? {} : { prompts: { listChanged: true } }),
  ...(script.resources === undefined && script.resourceTemplates === undefined
    ? {}
    : { resources: { subscribe: true, listChanged: true } }),
  ...(script.logging === true ? { logging: {} } : {}),
  ...(script.complete === undefined ? {} : { completions: {} }),
  ...(script.tasks === true ? { tasks: { requests: { tools: { call: {} } }, cancel: {} } } : {}),
})

/** One page of a list, the cursor being the index of its first item. */
const page = (items: ReadonlyArray<unknown>, params: JsonObject | undefined, size: number | undefined) => {
  const start = typeof params?.cursor === "string" ? Number(params.cursor) : 0
  const end = size === undefined ? items.length : start + size
  return { items: items.slice(start, end), nextCursor: end < items.length ? String(end) : undefined }
}

/** The state of one configured child across its lives, and how to start a life. */
const makeChild = (server: string, script: FakeServerScript) => {
  let starts = 0
  let startFailure = script.failStart
  let current: { readonly crash: (code: number) => Effect.Effect<void> } | undefined
  let currentNotify: ((message: ChildMessage) => Effect.Effect<void>) | undefined
  const received = new Recorded<JsonRpcMessage>(`message received by '${server}'`)
  const lives: Array<WeakRef<UpstreamConnection>> = []

  const start = (options: UpstreamOptions): Effect.Effect<UpstreamConnection, UpstreamError, Scope.Scope> =>
    Effect.gen(function* () {
      starts++
      if (startFailure !== undefined) {
        return yield* new UpstreamError({
          server,
          code: ErrorCode.ServerUnavailable,
          reason: `could not start: ${startFailure}`,
        })
      }
      const outbox = yield* Queue.unbounded<Output>()
      const closed = yield* Deferred.make<UpstreamError>()
      /** Set once the child is gone: later calls get it at once. */
      let gone: UpstreamError | undefined
      const pending = new Map<number, (outcome: JsonRpcResponse | UpstreamError) => void>()
      const handlers = new Map<number, Fiber.RuntimeFiber<void>>()
      const questions = new Map<string, Deferred.Deferred<JsonRpcResponse>>()
      const tasks = new Map<string, Task>()
      let nextId = 1
      let nextQuestion = 1
      let nextTask = 1
      const runInChild = yield* FiberSet.makeRuntime<never>()

      const write = (output: Output) => (gone === undefined ? Queue.offer(outbox, output) : Effect.void)
      const writeMessage = (message: ChildMessage) => write({ _tag: "Message", message })
      const answer = (id: number, reply: Reply): Output => ({
        _tag: "Response",
        response:
          reply instanceof ChildError
            ? { jsonrpc: "2.0", id, error: { code: reply.code, message: reply.message } }
            : { jsonrpc: "2.0", id, result: reply },
      })

      /** Drains waiting for the last pending request to be settled (as PendingCalls.whenIdle). */
      const idleWaiters: Array<() => void> = []
      const noteIdle = () => {
        if (pending.size === 0) for (const waiter of idleWaiters.splice(0)) waiter()
      }
      const failAllPending = (error: UpstreamError) => {
        const waiting = [...pending.values()]
        pending.clear()
        for (const settle of waiting) settle(error)
        noteIdle()
      }

      const crash = (code: number) =>
        Effect.suspend(() => {
          if (gone !== undefined) return Effect.void
          // What the child wrote before it died is still read; then every request still open fails.
          const exit = Queue.offer(outbox, { _tag: "Exit" })
          gone = new UpstreamError({
            server,
            code: ErrorCode.ServerUnavailable,
            reason: `exited with code ${code}`,
          })
          return exit.pipe(
            Effect.zipRight(
              Effect.forEach(
                [...handlers.values(), ...[...tasks.values()].map((task) => task.fiber)] as ReadonlyArray<
                  Fiber.Fiber<unknown>
                >,
                (fiber) => Fiber.interruptFork(fiber),
              ),
            ),
            Effect.asVoid,
          )
        })

      const toolCall = (request: JsonRpcRequest, tool: FakeTool): ToolCall => {
        const params = request.params ?? {}
        const meta = isObject(params._meta) ? params._meta : {}
        return {
          server,
          name: tool.name,
          arguments: isObject(params.arguments) ? params.arguments : {},
          request,
          progress: (progress, total) =>
            meta.progressToken === undefined
              ? Effect.void
              : writeMessage({
                  jsonrpc: "2.0",
                  method: "notifications/progress",
                  params: {
                    progressToken: meta.progressToken,
                    progress,
                    ...(total === undefined ? {} : { total }),
                  },
                }),
          notify: (method, notifyParams) =>
            writeMessage({
              jsonrpc: "2.0",
              method,
              ...(notifyParams === undefined ? {} : { params: notifyParams }),
            }),
          log: (level, data, logger) =>
            writeMessage({
              jsonrpc: "2.0",
              method: "notifications/message",
              params: { level, data, ...(logger === undefined ? {} : { logger }) },
            }),
          ask: (method, askParams) =>
            Effect.gen(function* () {
              const id = `ask-${nextQuestion++}`
              const answered = yield* Deferred.make<JsonRpcResponse>()
              questions.set(id, answered)
              yield* writeMessage({ jsonrpc: "2.0", id, method, params: askParams ?? {} })
              return yield* Deferred.await(answered)
            }),
          crash: (code = 1) => crash(code).pipe(Effect.zipRight(Effect.never)),
        }
      }

      const listed = (request: JsonRpcRequest, key: string, items: ReadonlyArray<unknown>): Reply => {
        const { items: pageItems, nextCursor } = page(items, request.params, script.pageSize)
        return { [key]: pageItems, ...(nextCursor === undefined ? {} : { nextCursor }) }
      }

      const readResource = (uri: unknown): Reply => {
        const resource = script.resources?.find((candidate) => candidate.uri === uri)
        const templated = script.resourceTemplates?.some(
          (template) => typeof uri === "string" && templatePattern(template.uriTemplate).test(uri),
        )
        if (typeof uri !== "string" || (resource === undefined && templated !== true)) {
          return new ChildError(-32002, `Resource not found: ${String(uri)}`)
        }
        return { contents: [{ uri, mimeType: "text/plain", text: resource?.text ?? `content of ${uri}` }] }
      }

      const callTool = (request: JsonRpcRequest): Effect.Effect<Reply> => {
        const name = request.params?.name
        const tool = script.tools?.find((candidate) => candidate.name === name)
        if (tool === undefined)
          return Effect.succeed(new ChildError(ErrorCode.InvalidParams, `Unknown tool: ${String(name)}`))
        const run =
          tool.run ?? ((call: ToolCall) => Effect.succeed(text(String(call.arguments.message ?? ""))))
        const task = request.params?.task
        if (script.tasks !== true || !isObject(task)) return run(toolCall(request, tool))
        const taskId = `${server}-task-${nextTask++}`
        const entry: Task = { fiber: runInChild(run(toolCall(request, tool))), status: "working" }
        entry.fiber.addObserver(() => {
          if (entry.status === "working") entry.status = "completed"
        })
        tasks.set(taskId, entry)
        return Effect.succeed({
          task: { taskId, status: "working", ttl: task.ttl ?? null, createdAt: "2026-01-01T00:00:00Z" },
        })
      }

      const taskRequest = (request: JsonRpcRequest): Effect.Effect<Reply> => {
        const taskId = request.params?.taskId
        const task = typeof taskId === "string" ? tasks.get(taskId) : undefined
        if (task === undefined)
          return Effect.succeed(new ChildError(ErrorCode.InvalidParams, `Unknown task: ${String(taskId)}`))
        switch (request.method) {
          case "tasks/get":
            return Effect.succeed({ taskId, status: task.status })
          case "tasks/cancel":
            task.status = "cancelled"
            return Fiber.interrupt(task.fiber).pipe(Effect.as({ taskId, status: task.status }))
          default:
            return Fiber.join(task.fiber).pipe(
              Effect.catchAllCause(() =>
                Effect.succeed(new ChildError(ErrorCode.InternalError, "task cancelled")),
              ),
            )
        }
      }

      const handle = (request: JsonRpcRequest): Effect.Effect<Reply> => {
        const params = request.params ?? {}
        switch (request.method) {
          case "initialize":
            return Effect.succeed({
              protocolVersion:
                typeof params.protocolVersion === "string" ? params.protocolVersion : "2025-11-25",
              capabilities: capabilitiesOf(script),
              serverInfo: { name: `fake-${server}`, version: "1.0.0" },
              ...(script.instructions === undefined ? {} : { instructions: script.instructions }),
            })
          case "ping":
          case "logging/setLevel":
          case "resources/subscribe":
          case "resources/unsubscribe":
            return Effect.succeed({})
          case "tools/list":
            return Effect.succeed(
              listed(
                request,
                "tools",
                (script.tools ?? []).map(({ name, description, inputSchema }) => ({
                  name,
                  description: description ?? `${name} of ${server}`,
                  inputSchema: inputSchema ?? { type: "object" },
                })),
              ),
            )
          case "prompts/list":
            return Effect.succeed(
              listed(
                request,
                "prompts",
                (script.prompts ?? []).map(({ name, description }) => ({
                  name,
                  description: description ?? `${name} of ${server}`,
                })),
              ),
            )
          case "resources/list":
            return Effect.succeed(
              listed(
                request,
                "resources",
                (script.resources ?? []).map(({ uri, name }) => ({
                  uri,
                  name: name ?? uri,
                  mimeType: "text/plain",
                })),
              ),
            )
          case "resources/templates/list":
            return Effect.succeed(
              listed(
                request,
                "resourceTemplates",
                (script.resourceTemplates ?? []).map(({ uriTemplate, name }) => ({
                  uriTemplate,
                  name: name ?? uriTemplate,
                })),
              ),
            )
          case "resources/read":
            return Effect.succeed(readResource(params.uri))
          case "prompts/get": {
            const prompt = script.prompts?.find((candidate) => candidate.name === params.name)
            const args = isObject(params.arguments) ? params.arguments : {}
            if (prompt === undefined)
              return Effect.succeed(
                new ChildError(ErrorCode.InvalidParams, `Unknown prompt: ${String(params.name)}`),
              )
            return (
              prompt.get?.(args) ??
              Effect.succeed({
                messages: [
                  { role: "user", content: { type: "text", text: `${prompt.name} ${JSON.stringify(args)}` } },
                ],
              })
            )
          }
          case "completion/complete": {
            const values = script.complete?.(params)
            if (values === undefined) break
            return Effect.succeed({ completion: { values: [...values], hasMore: false } })
          }
          case "tools/call":
            return callTool(request)
          case "tasks/get":
          case "tasks/result":
          case "tasks/cancel":
            if (script.tasks === true) return taskRequest(request)
            break
        }
        const custom = script.methods?.[request.method]
        return (
          custom?.(request) ?? Effect.succeed(new ChildError(ErrorCode.MethodNotFound, "Method not found"))
        )
      }

      /** Everything the gateway writes to the child arrives here, recorded first. */
      const receive = (message: JsonRpcMessage) => {
        received.push(message)
        const method = typeof message.method === "string" ? message.method : undefined
        if (method !== undefined && typeof message.id === "number") {
          const id = message.id
          const fiber = runInChild(
            handle({ ...message, jsonrpc: "2.0", id, method }).pipe(
              Effect.flatMap((reply) => write(answer(id, reply))),
              Effect.ensuring(Effect.sync(() => handlers.delete(id))),
            ),
          )
          // A handler that answered at once is done already.
          if (fiber.unsafePoll() === null) handlers.set(id, fiber)
          return
        }
        if (method === "notifications/cancelled") {
          const params = isObject(message.params) ? message.params : {}
          const fiber = typeof params.requestId === "number" ? handlers.get(params.requestId) : undefined
          if (fiber !== undefined) runInChild(Fiber.interrupt(fiber))
          return
        }
        const question =
          method === undefined && typeof message.id === "string" ? questions.get(message.id) : undefined
        if (question !== undefined && typeof message.id === "string") {
          questions.delete(message.id)
          Deferred.unsafeDone(question, Effect.succeed(message as JsonRpcResponse))
        }
      }

      const call = (message: JsonRpcRequest, done: (outcome: JsonRpcResponse | UpstreamError) => void) => {
        if (gone !== undefined) {
          done(gone)
          return () => {}
        }
        const id = nextId++
        pending.set(id, (outcome) =>
          done(outcome instanceof UpstreamError ? outcome : { ...outcome, id: message.id }),
        )
        receive({ ...message, id })
        return () => {
          if (!pending.delete(id)) return
          noteIdle()
          receive({
            jsonrpc: "2.0",
            method: "notifications/cancelled",
            params: { requestId: id, reason: "cancelled by the client" },
          })
        }
      }

      const connection: UpstreamConnection = {
        name: server,
        call,
        request: (message) =>
          Effect.async<JsonRpcResponse, UpstreamError>((resume) => {
            const cancel = call(message, (outcome) =>
              resume(outcome instanceof UpstreamError ? Effect.fail(outcome) : Effect.succeed(outcome)),
            )
            return Effect.sync(cancel)
          }),
        send: (message: JsonRpcNotification | JsonRpcResponse) =>
          Effect.suspend(() => {
            if (gone !== undefined) return Effect.fail(gone)
            receive(message)
            return Effect.void
          }),
        exited: Deferred.await(closed),
        drain: (within, reason) =>
          Effect.async<void>((resume) => {
            if (pending.size === 0) resume(Effect.void)
            else idleWaiters.push(() => resume(Effect.void))
          }).pipe(
            Effect.timeout(within),
            Effect.ignore,
            Effect.ensuring(Effect.sync(() => failAllPending(reason))),
          ),
      }

      // One reader hands on what the child wrote, in order, and only when the session can take more.
      const ready = options.outputReady
      const reader = Effect.gen(function* () {
        while (true) {
          const output = yield* Queue.take(outbox)
          if (output._tag === "Exit") {
            const error =
              gone ?? new UpstreamError({ server, code: ErrorCode.ServerUnavailable, reason: "exited" })
            failAllPending(error)
            yield* Deferred.succeed(closed, error)
            return
          }
          yield* whenOpen(ready)
          if (output._tag === "Message") {
            yield* options.onMessage(connection, output.message)
            continue
          }
          const id = output.response.id as number
          const settle = pending.get(id)
          pending.delete(id)
          settle?.(output.response)
          noteIdle()
        }
      })
      yield* Effect.forkScoped(reader)

      current = { crash }
      currentNotify = writeMessage
      yield* Effect.addFinalizer(() =>
        Effect.sync(() => {
          current = undefined
          currentNotify = undefined
          gone ??= new UpstreamError({ server, code: ErrorCode.ServerUnavailable, reason: "was stopped" })
          failAllPending(gone)
        }),
      )
      lives.push(new WeakRef(connection))
      return connection
    })

  const child: FakeChild = {
    name: server,
    starts: () => starts,
    lives: () => lives,
    running: () => current !== undefined,
    received,
    crash: (code = 1) =>
      Effect.suspend(() => current?.crash(code) ?? Effect.dieMessage(`'${server}' is not running`)),
    failStarts: (reason) => {
      startFailure = reason
    },
    notify: (method, params) =>
      Effect.suspend(
        () =>
          currentNotify?.({ jsonrpc: "2.0", method, ...(params === undefined ? {} : { params }) }) ??
          Effect.dieMessage(`'${server}' is not running`),
      ),
  }
  return { child, start }
}

/** The fake Upstream over these scripts, and the children's handles for the test. */
export const makeFakeUpstream = (scripts: Readonly<Record<string, FakeServerScript>>) => {
  const children = new Map(Object.entries(scripts).map(([name, script]) => [name, makeChild(name, script)]))
  /** A server a reload brings: its fake child, made once (a later reload keeps the same one). */
  const add = (name: string, script: FakeServerScript): FakeChild => {
    const existing = children.get(name)
    if (existing !== undefined) return existing.child
    const made = makeChild(name, script)
    children.set(name, made)
    return made.child
  }
  const layer = Layer.succeed(Upstream, {
    start: (server: ChildServer, options: UpstreamOptions) => {
      const child = children.get(server.name)
      return child === undefined
        ? Effect.dieMessage(`no fake child named '${server.name}'`)
        : child.start(options)
    },
  })
  return {
    layer,
    add,
    child: (name: string): FakeChild | undefined => children.get(name)?.child,
  }
}
