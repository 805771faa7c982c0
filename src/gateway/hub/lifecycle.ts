/**
 * The MCP lifecycle of a session, for both protocol generations. The client's first request decides
 * (as MCP servers on stdio do): `initialize` makes it a 2025-era session, a request carrying the
 * 2026-07-28 envelope in `_meta` a modern one. A 2025 client may send only ping before initialize;
 * a modern client's every request is checked for its envelope, and its answers dressed for 2026.
 */
import { Deferred, Effect, Option } from "effect"
import { ErrorCode, errorResponse, isObject, type JsonRpcRequest } from "../../shared/jsonRpc.js"
import { version } from "../../shared/version.js"
import type { ChangeFeed } from "./changeFeed.js"
import type { SessionChildren } from "./children.js"
import type { Dispatch } from "./dispatch.js"
import type { Forward } from "./forward.js"
import { latestHandshakeVersion, negotiateVersion } from "./mcp.js"
import {
  discoverResult,
  fromModernChild,
  legacyOnlyMethods,
  modernVersion,
  modernVersions,
  readEnvelope,
  taskMethods,
  toModernResponse,
  toTaskOwner,
  unsupportedVersion,
  withoutEnvelope,
} from "./modern.js"
import type { SessionProtocol } from "./protocol.js"
import { invalidParams, ok, optionalParams, type Routed, stringParam } from "./types.js"

const withoutEnvelopeRequest = (request: JsonRpcRequest): JsonRpcRequest => ({
  ...request,
  ...optionalParams(withoutEnvelope(request.params)),
})

const serverInfo = { name: "mcp-ssh", title: "mcp-ssh gateway", version }
const unknownClient = { name: "unknown", version: "0" }

export interface LifecycleParts {
  readonly protocol: SessionProtocol
  readonly children: SessionChildren
  readonly dispatch: Dispatch
  readonly forward: Forward
  readonly feed: ChangeFeed
}

/** The route of every request of a session: lifecycle first, then dispatch. */
export const makeLifecycle = (parts: LifecycleParts) =>
  Effect.gen(function* () {
    const { protocol, children, dispatch, feed } = parts
    /** Set once a 2025-era initialize has started the children (or given up on them). */
    const initializeDone = yield* Deferred.make<void>()

    const initialize = (request: JsonRpcRequest) =>
      Effect.gen(function* () {
        if (protocol.initialized) {
          const message = "Invalid Request: this session is already initialized"
          return {
            response: errorResponse(request.id, { code: ErrorCode.InvalidRequest, message }),
          } satisfies Routed
        }
        protocol.initialized = true
        const params = request.params ?? {}
        const protocolVersion = negotiateVersion(params.protocolVersion)
        yield* children
          .start({
            protocolVersion,
            capabilities: isObject(params.capabilities) ? params.capabilities : {},
            clientInfo: isObject(params.clientInfo) ? params.clientInfo : unknownClient,
          })
          .pipe(Effect.ensuring(Deferred.succeed(initializeDone, undefined)))
        const view = children.mergedView()
        protocol.announced = true
        return {
          response: ok(request.id, {
            protocolVersion,
            capabilities: view.capabilities,
            serverInfo,
            ...(view.instructions === undefined ? {} : { instructions: view.instructions }),
          }),
        } satisfies Routed
      })

    /** Subscribe at the owning child to a URI a modern client's listen names. */
    const subscribeAtOwner = (uri: string) =>
      dispatch.lookupUri(uri).pipe(
        Effect.flatMap((owner) =>
          Option.isNone(owner)
            ? Effect.void
            : parts
                .forward(owner.value, {
                  jsonrpc: "2.0",
                  id: "subscribe",
                  method: "resources/subscribe",
                  params: { uri },
                })
                .pipe(Effect.asVoid),
        ),
      )

    /** A task of the tasks extension: only a modern child gives a 2026 client task ids (namespaced). */
    const routeTask = (request: JsonRpcRequest) =>
      Effect.gen(function* () {
        const modernChildren = children.all
          .map((child) => child.server.name)
          .filter((name) => children.ready(name)?.protocolVersion === modernVersion)
        const owner = toTaskOwner(modernChildren, withoutEnvelopeRequest(request))
        if (typeof owner === "string") return invalidParams(request.id, owner)
        const response = yield* parts.forward(owner.server, owner.request)
        return {
          response: fromModernChild(owner.server, response),
          server: owner.server,
          target: stringParam(request.params, "taskId"),
        } satisfies Routed
      })

    /** A request of a client that speaks 2026-07-28: checked envelope, then the same dispatch. */
    const routeModern = (request: JsonRpcRequest, envelope: ReturnType<typeof readEnvelope>) =>
      Effect.gen(function* () {
        if (request.method === "initialize") {
          const requested = String(request.params?.protocolVersion ?? "")
          return { response: errorResponse(request.id, unsupportedVersion(requested)) } satisfies Routed
        }
        if (envelope === "none") {
          return invalidParams(
            request.id,
            `Invalid params: the request has no _meta envelope of protocol revision ${modernVersion}`,
          )
        }
        if ("problem" in envelope) return invalidParams(request.id, `Invalid params: ${envelope.problem}`)
        if (!modernVersions.includes(envelope.protocolVersion)) {
          return {
            response: errorResponse(request.id, unsupportedVersion(envelope.protocolVersion)),
          } satisfies Routed
        }
        yield* children.start({
          protocolVersion: latestHandshakeVersion,
          capabilities: envelope.clientCapabilities,
          clientInfo: envelope.clientInfo ?? unknownClient,
        })
        if (envelope.logLevel !== undefined && envelope.logLevel !== protocol.logLevel) {
          yield* children.setLevel({
            jsonrpc: "2.0",
            id: "set-level",
            method: "logging/setLevel",
            params: { level: envelope.logLevel },
          })
        }
        if (request.method === "server/discover") {
          const view = children.mergedView()
          return {
            response: ok(request.id, discoverResult(view.capabilities, view.instructions, serverInfo)),
          }
        }
        protocol.modernServed = true
        protocol.announced = true
        if (legacyOnlyMethods.includes(request.method)) {
          const message = `Method not found: ${request.method} does not exist in protocol revision ${modernVersion}`
          return {
            response: errorResponse(request.id, { code: ErrorCode.MethodNotFound, message }),
          } satisfies Routed
        }
        if (taskMethods.includes(request.method)) return yield* routeTask(request)
        if (request.method === "subscriptions/listen") {
          return yield* feed.listen(request, children.mergedView().capabilities, subscribeAtOwner)
        }
        return yield* dispatch.route({ ...request, ...optionalParams(withoutEnvelope(request.params)) })
      }).pipe(
        Effect.map((routed) => ({
          ...routed,
          response: toModernResponse(request.method, routed.response, serverInfo),
        })),
      )

    /**
     * What a 2025-era client may send before initialize: ping only (MCP lifecycle). Anything else is
     * refused rather than served by children that would know nothing of the client.
     */
    const beforeInitialize = (request: JsonRpcRequest): Routed =>
      request.method === "ping"
        ? { response: ok(request.id, {}) }
        : {
            response: errorResponse(request.id, {
              code: ErrorCode.InvalidRequest,
              message: `Invalid Request: ${request.method} before initialize; send initialize first (or, in MCP ${modernVersion}, the protocol version in _meta on every request)`,
            }),
          }

    /** A modern client that only asked server/discover may still initialize. */
    const route = (request: JsonRpcRequest): Effect.Effect<Routed> =>
      Effect.suspend(() => {
        const envelope = readEnvelope(request.params)
        const undecided =
          protocol.era === "undecided" ||
          (protocol.era === "modern" && !protocol.modernServed && request.method === "initialize")
        if (undecided) {
          if (request.method !== "initialize" && envelope === "none")
            return Effect.succeed(beforeInitialize(request))
          protocol.era = request.method === "initialize" ? "legacy" : "modern"
        }
        if (protocol.era === "modern") return routeModern(request, envelope)
        if (request.method === "initialize") return initialize(request)
        // A request sent right behind initialize waits for the children initialize is starting.
        return Deferred.await(initializeDone).pipe(Effect.zipRight(dispatch.route(request)))
      })

    return { route }
  })
