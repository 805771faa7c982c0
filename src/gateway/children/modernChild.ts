/**
 * A child that speaks MCP 2026-07-28, seen by the rest of the gateway as a 2025-era child: one
 * connection with the same interface, so the Hub, the multiplexer and both client generations use it
 * unchanged. Underneath:
 *
 * - every request carries the envelope (protocol version, the client capabilities the gateway can
 *   relay, client info) and the log level `logging/setLevel` last asked for;
 * - `ping`, `logging/setLevel` and `resources/subscribe`/`unsubscribe` (gone in 2026) are answered
 *   here; subscriptions become the filter of one `subscriptions/listen` at the child, whose change
 *   notifications go on as a 2025 child's would;
 * - an `input_required` result becomes the requests a 2025 child would have sent (elicitation,
 *   sampling, roots); their answers go back to the child in a retry with `inputResponses` and
 *   `requestState`, and the caller sees one call and one result (a 2026 client's call, marked by the
 *   Hub, gets the input_required result itself instead);
 * - `resultType` and cache hints leave the results (the Hub adds its own for 2026 clients).
 *
 * The per-call path is plain callbacks; all state is this life's, owned here.
 */
import { Effect } from "effect"
import {
  ErrorCode,
  errorResponse,
  isObject,
  type JsonObject,
  type JsonRpcId,
  type JsonRpcNotification,
  type JsonRpcRequest,
  type JsonRpcResponse,
  parsedResponse,
} from "../../shared/jsonRpc.js"
import { UpstreamError } from "../errors.js"
import { answerAsGiven, callOwner, metaKey, modernVersion } from "../hub/modern.js"
import { relayableCapabilities } from "./discover.js"
import type { CallOutcome } from "./pendingCalls.js"
import { type ChildMessage, requestThrough, type UpstreamConnection } from "./Upstream.js"

export interface ModernChildOptions {
  readonly raw: UpstreamConnection
  /** The child's capabilities, from server/discover. */
  readonly capabilities: JsonObject
  readonly clientCapabilities: JsonObject
  readonly clientInfo: JsonObject
  /** Where the child's messages go, as a 2025 child's would (with this connection). */
  readonly deliver: (connection: UpstreamConnection, message: ChildMessage) => Effect.Effect<void>
  /** Runs a delivery from the per-call path, in a fiber the child's life owns. */
  readonly run: (effect: Effect.Effect<void>) => void
}

export interface ModernChild {
  readonly connection: UpstreamConnection
  /** What the child sends of its own accord (its output reader calls this). */
  readonly fromChild: (message: ChildMessage) => Effect.Effect<void>
}

const reservedResultKeys = ["resultType", "ttlMs", "cacheScope"]

/** A 2026 answer as a 2025 child would give it: no resultType, cache hints or serverInfo. */
export const toLegacyResponse = (response: JsonRpcResponse): JsonRpcResponse => {
  if (!isObject(response.result)) return response
  const result: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(response.result))
    if (!reservedResultKeys.includes(key)) result[key] = value
  const meta = result._meta
  if (isObject(meta) && meta[metaKey.serverInfo] !== undefined) {
    const { [metaKey.serverInfo]: _serverInfo, ...rest } = meta
    if (Object.keys(rest).length === 0) delete result._meta
    else result._meta = rest
  }
  return { ...response, result }
}

/** The envelope keys a request lacks, filled in (a caller may have set the capabilities already). */
export const withEnvelope = (
  params: JsonObject | undefined,
  envelope: { clientCapabilities: JsonObject; clientInfo: JsonObject; logLevel: string | undefined },
): JsonObject => {
  const meta = isObject(params?._meta) ? params._meta : {}
  return {
    ...params,
    _meta: {
      [metaKey.protocolVersion]: modernVersion,
      [metaKey.clientCapabilities]: envelope.clientCapabilities,
      [metaKey.clientInfo]: envelope.clientInfo,
      ...(envelope.logLevel === undefined ? {} : { [metaKey.logLevel]: envelope.logLevel }),
      ...meta,
    },
  }
}

/** The input requests of an input_required result that the gateway can put to a client. */
export const inputRequestsOf = (
  result: JsonObject,
): ReadonlyArray<{ readonly key: string; readonly method: string; readonly params: JsonObject }> | string => {
  const requests = result.inputRequests
  if (!isObject(requests)) return "input_required without inputRequests"
  const asks: Array<{ key: string; method: string; params: JsonObject }> = []
  for (const [key, request] of Object.entries(requests)) {
    if (!isObject(request) || typeof request.method !== "string")
      return `input request '${key}' has no method`
    asks.push({ key, method: request.method, params: isObject(request.params) ? request.params : {} })
  }
  return asks.length === 0 ? "input_required with no input requests" : asks
}

/** The change notifications a listen at the child asks for: what it offers, and the URIs held. */
export const listenFilter = (capabilities: JsonObject, uris: ReadonlySet<string>) => {
  const listChanged = (name: string) => {
    const capability = capabilities[name]
    return isObject(capability) && capability.listChanged === true
  }
  const resources = capabilities.resources
  const subscribes = isObject(resources) && resources.subscribe === true
  return {
    toolsListChanged: listChanged("tools"),
    promptsListChanged: listChanged("prompts"),
    resourcesListChanged: listChanged("resources"),
    resourceSubscriptions: subscribes ? [...uris] : [],
  }
}

/**
 * A modern spare's connection, adopted by a session: its envelope was made for the spare (every
 * capability), so each call carries the session's own relayable client capabilities instead, unless
 * the caller set them (the multiplexer of a shared child does).
 */
export const withClientCapabilities = (
  connection: UpstreamConnection,
  capabilities: () => JsonObject | undefined,
): UpstreamConnection => {
  const call: UpstreamConnection["call"] = (request, done, takesBytes) => {
    const current = capabilities()
    if (current === undefined) return connection.call(request, done, takesBytes)
    const params = request.params ?? {}
    const meta = isObject(params._meta) ? params._meta : {}
    const sent = {
      ...request,
      params: {
        ...params,
        _meta: { [metaKey.clientCapabilities]: relayableCapabilities(current), ...meta },
      },
    }
    return connection.call(sent, done, takesBytes)
  }
  return { ...connection, call, request: requestThrough(call) }
}

const withoutKey = (object: JsonObject, key: string): JsonObject =>
  Object.fromEntries(Object.entries(object).filter(([name]) => name !== key))

const ok = (id: JsonRpcId): JsonRpcResponse => ({ jsonrpc: "2.0", id, result: {} })

export const makeModernChild = (options: ModernChildOptions): ModernChild => {
  const { raw, capabilities, deliver, run } = options
  const clientCapabilities = relayableCapabilities(options.clientCapabilities)
  let level: string | undefined
  const envelope = (params: JsonObject | undefined) =>
    withEnvelope(params, { clientCapabilities, clientInfo: options.clientInfo, logLevel: level })

  /** Answers the client owes for input requests put to it, by the request id the gateway gave them. */
  const awaitedInputs = new Map<string, (response: JsonRpcResponse) => void>()
  let nextInput = 1

  /** The URIs subscribed, and the one listen at the child that carries them. */
  const uris = new Set<string>()
  let listen: { cancel: () => void } | undefined
  /** Set once the child drains before it stops: no listen is opened again. */
  let draining = false
  let ackWaiters: Array<() => void> = []
  const acknowledged = () => {
    const waiters = ackWaiters
    ackWaiters = []
    for (const waiter of waiters) waiter()
  }

  /** Replace the listen with one for the current filter; `then` runs once the child acknowledged it. */
  const relisten = (then: () => void) => {
    const filter = listenFilter(capabilities, uris)
    const wanted =
      filter.toolsListChanged ||
      filter.promptsListChanged ||
      filter.resourcesListChanged ||
      filter.resourceSubscriptions.length > 0
    listen?.cancel()
    listen = undefined
    if (!wanted || draining) {
      // No listen will acknowledge: those waiting on the one just withdrawn are answered too.
      ackWaiters.push(then)
      acknowledged()
      return
    }
    ackWaiters.push(then)
    const current = { cancel: () => {} }
    listen = current
    current.cancel = raw.call(
      {
        jsonrpc: "2.0",
        id: "listen",
        method: "subscriptions/listen",
        params: envelope({ notifications: filter }),
      },
      (outcome) => {
        if (listen !== current) return
        listen = undefined
        // Only the gateway's own deadline ends a listen that should go on: it is opened again. The
        // child's exit (the next life listens anew), a refusal or the child's own close end it.
        if (outcome instanceof UpstreamError && outcome.code === ErrorCode.RequestTimeout) relisten(() => {})
        else acknowledged()
      },
    )
  }

  /**
   * A call that may go through input_required rounds: the caller sees one answer. A caller that
   * asked for it (a 2026 client's call, marked by the Hub) gets the input_required result itself.
   */
  const converse = (marked: JsonRpcRequest, done: (outcome: CallOutcome) => void) => {
    const meta = marked.params?._meta
    const asGiven = isObject(meta) && meta[answerAsGiven] === true
    // The gateway's own marks are read here and never reach the child.
    const owner = isObject(meta) ? meta[callOwner] : undefined
    const request =
      isObject(meta) && (asGiven || owner !== undefined)
        ? {
            ...marked,
            params: { ...marked.params, _meta: withoutKey(withoutKey(meta, answerAsGiven), callOwner) },
          }
        : marked
    let over = false
    let cancelCurrent = () => {}
    const asked = new Set<string>()
    const finish = (outcome: CallOutcome) => {
      if (over) return
      over = true
      done(outcome)
    }
    const withdrawAsked = (reason: string) => {
      for (const id of asked) {
        awaitedInputs.delete(id)
        run(
          deliver(connection, {
            jsonrpc: "2.0",
            method: "notifications/cancelled",
            params: { requestId: id, reason },
          }),
        )
      }
      asked.clear()
    }
    const attempt = (params: JsonObject | undefined) => {
      cancelCurrent = raw.call({ ...request, params: envelope(params) }, (outcome) => {
        if (over) return
        if (outcome instanceof UpstreamError) return finish(outcome)
        const response = parsedResponse(outcome)
        const result = response.result
        // A 2026 client's call gets the answer as the child gave it (input_required, a task handle).
        if (asGiven) return finish(response)
        if (isObject(result) && result.resultType === "input_required") return ask(params, result)
        finish(toLegacyResponse(response))
      })
    }
    /** Put each input request to the client as a 2025 child would; retry once all are answered. */
    const ask = (params: JsonObject | undefined, result: JsonObject) => {
      const asks = inputRequestsOf(result)
      if (typeof asks === "string") {
        return finish(
          errorResponse(request.id, {
            code: ErrorCode.InternalError,
            message: `server '${raw.name}' sent ${asks}`,
          }),
        )
      }
      const answers: Record<string, unknown> = {}
      let left = asks.length
      const { inputResponses: _old, requestState: _state, ...rest } = params ?? {}
      for (const { key, method, params: inputParams } of asks) {
        const id = `mcp-ssh-input-${nextInput++}`
        asked.add(id)
        awaitedInputs.set(id, (response) => {
          asked.delete(id)
          if (over) return
          if (response.error !== undefined) {
            withdrawAsked("another input request of the call failed")
            return finish(errorResponse(request.id, response.error))
          }
          answers[key] = response.result
          left--
          if (left > 0) return
          attempt({
            ...rest,
            inputResponses: answers,
            ...(typeof result.requestState === "string" ? { requestState: result.requestState } : {}),
          })
        })
        // The call's owner (a session of a shared child) goes with its questions.
        const tagged =
          owner === undefined
            ? inputParams
            : {
                ...inputParams,
                _meta: { ...(isObject(inputParams._meta) ? inputParams._meta : {}), [callOwner]: owner },
              }
        run(deliver(connection, { jsonrpc: "2.0", id, method, params: tagged }))
      }
    }
    attempt(request.params)
    return () => {
      if (over) return
      over = true
      cancelCurrent()
      withdrawAsked("the call was cancelled")
    }
  }

  const call = (request: JsonRpcRequest, done: (outcome: CallOutcome) => void): (() => void) => {
    const uri = request.params?.uri
    switch (request.method) {
      // 2026-07-28 has no ping (a v2 server answers -32601): the gateway answers for the child.
      case "ping":
        done(ok(request.id))
        return () => {}
      case "logging/setLevel": {
        const wanted = request.params?.level
        level = typeof wanted === "string" ? wanted : undefined
        done(ok(request.id))
        return () => {}
      }
      case "resources/subscribe":
      case "resources/unsubscribe": {
        if (typeof uri !== "string") {
          done(
            errorResponse(request.id, {
              code: ErrorCode.InvalidParams,
              message: "Invalid params: uri is missing",
            }),
          )
          return () => {}
        }
        const before = uris.size
        if (request.method === "resources/subscribe") uris.add(uri)
        else uris.delete(uri)
        if (uris.size === before) done(ok(request.id))
        else relisten(() => done(ok(request.id)))
        return () => {}
      }
      default:
        return converse(request, done)
    }
  }

  const send = (message: JsonRpcNotification | JsonRpcResponse) =>
    Effect.sync(() => {
      // The client's notifications have no 2026 meaning at the child: its cancellations reach the
      // child through each call's cancel, and there are no roots to announce.
      if ("method" in message) return
      const id = typeof message.id === "string" ? message.id : undefined
      const answered = id === undefined ? undefined : awaitedInputs.get(id)
      if (answered === undefined || id === undefined) return
      awaitedInputs.delete(id)
      answered(message)
    })

  const connection: UpstreamConnection = {
    name: raw.name,
    ...(raw.pid === undefined ? {} : { pid: raw.pid }),
    call,
    request: requestThrough(call),
    send,
    exited: raw.exited,
    // The listen never ends on its own: the drain waits only for the calls.
    drain: (within, reason) =>
      Effect.suspend(() => {
        draining = true
        listen?.cancel()
        listen = undefined
        acknowledged()
        return raw.drain(within, reason)
      }),
  }

  const fromChild = (message: ChildMessage): Effect.Effect<void> => {
    const meta = message.params?._meta
    if ("id" in message || !isObject(meta) || meta[metaKey.subscriptionId] === undefined)
      return deliver(connection, message)
    if (message.method === "notifications/subscriptions/acknowledged") return Effect.sync(acknowledged)
    // A change from the listen: as a 2025 child sends it, without the subscription's id.
    const { [metaKey.subscriptionId]: _subscription, ...rest } = meta
    const { _meta: _dropped, ...params } = message.params ?? {}
    return deliver(connection, {
      ...message,
      params: Object.keys(rest).length === 0 ? params : { ...params, _meta: rest },
    })
  }

  relisten(() => {})
  return { connection, fromChild }
}
