/**
 * The merged MCP server a session talks to: every selected child behind one initialize, one set of
 * lists (renamed tools and prompts, resources under their own URIs, one cursor across children), and
 * every request routed to the child that owns it. Messages flow both ways: notifications, progress,
 * logging (tagged with the server's name) and the children's own requests (sampling, elicitation,
 * roots) to the client and their answers back.
 *
 * A session's Hub is made of parts that each own their state: the routing table, the merged lists,
 * dispatch, the lifecycle, server-to-client requests (2025 clients), input_required rounds (2026
 * clients), the change feed, the session's children and the fast path. This file only composes them.
 *
 * Children are per session by default (the original tool's model): started when the session opens,
 * supervised and restarted while it lasts, stopped with it. A `shared` or `identity` server's child
 * belongs to SharedChildren; the session leases it and sees it as one of its own. A config reload adds, retires or restarts a
 * session's children in place.
 *
 * The access policy decides the session's view (access.ts): a server the identity may not use is
 * never started for it, and a name it may not use never enters its routing table. A reload that
 * changes the policy changes the view in place, as it changes the servers.
 */
import { Context, Data, Duration, Effect, FiberSet, Layer, Option, type Scope } from "effect"
import type { JsonRpcNotification, JsonRpcResponse } from "../../shared/jsonRpc.js"
import { IdentityLimits, type SessionLimitReached } from "../access/IdentityLimits.js"
import { resolveAccess, type SessionAccess } from "../access/sessionAccess.js"
import { Catalog, type Configured } from "../children/Catalog.js"
import { ChildBudget } from "../children/ChildBudget.js"
import type { ChildState, SupervisedChild } from "../children/ChildSupervisor.js"
import { ProtocolMemory } from "../children/ProtocolMemory.js"
import { SharedChildren } from "../children/SharedChildren.js"
import { Spares } from "../children/Spares.js"
import { Upstream } from "../children/Upstream.js"
import { type ChildServer, GatewayConfig } from "../config/GatewayConfig.js"
import { describeDiff, diffServers } from "../config/serverDiff.js"
import { Audit } from "../session/Audit.js"
import { makeSessionPolicy } from "./access.js"
import { makeChangeFeed } from "./changeFeed.js"
import { makeChildMessages } from "./childMessages.js"
import { makeSessionChildren } from "./children.js"
import { makeDispatch } from "./dispatch.js"
import { makeFastPath } from "./fastPath.js"
import { makeForward } from "./forward.js"
import { makeInputRounds } from "./inputRounds.js"
import { makeLifecycle } from "./lifecycle.js"
import { makeMergedLists } from "./lists.js"
import { SessionProtocol } from "./protocol.js"
import { makeRequests, type StartRequest } from "./requests.js"
import { RoutingTable } from "./routing.js"
import { makeServerRequests } from "./serverRequests.js"
import type { ClientIdentity, ClientOutput } from "./types.js"

export type { ClientIdentity, ClientOutput } from "./types.js"

export interface HubSession {
  /**
   * Start answering a client request: `respond` gets the answer (never a defect) once, unless the
   * returned function cancels the request first, at the child too.
   */
  readonly request: StartRequest
  readonly notify: (notification: JsonRpcNotification) => Effect.Effect<void>
  /** The client's answer to a request a server made. */
  readonly respond: (response: JsonRpcResponse) => Effect.Effect<void>
  /** The client will send nothing more: long-lived requests (subscriptions/listen) end now. */
  readonly endOfInput: Effect.Effect<void>
}

/** The session asked for servers that cannot be served; `message` says why, for the client's stderr. */
export class SelectionError extends Data.TaggedError("SelectionError")<{ readonly message: string }> {}

export class Hub extends Context.Tag("mcp-ssh/Hub")<
  Hub,
  {
    /**
     * Open a session over the named servers (empty: all those the client may use); what the servers
     * send the client goes to `output`, in order. Closing the scope ends it.
     */
    readonly open: (
      selection: ReadonlyArray<string>,
      client: ClientIdentity,
      output: ClientOutput,
    ) => Effect.Effect<HubSession, SelectionError | SessionLimitReached, Scope.Scope>
  }
>() {}

/** `ssh host NAME[,NAME...]`: the servers an exec command selects (empty: all). */
export const parseSelection = (command: string): ReadonlyArray<string> =>
  command
    .split(/[\s,]+/)
    .map((name) => name.trim())
    .filter((name) => name.length > 0)

export const HubLive = Layer.effect(
  Hub,
  Effect.gen(function* () {
    const config = yield* GatewayConfig
    const upstream = yield* Upstream
    const catalog = yield* Catalog
    const audit = yield* Audit
    const limits = yield* IdentityLimits
    const shared = yield* SharedChildren
    const budget = yield* ChildBudget
    const spares = yield* Spares
    const memory = yield* ProtocolMemory
    const { settings } = config

    /**
     * The servers a session uses out of the configured ones: those its command named, else all; only
     * those its access allows either way.
     */
    const selected = (
      selection: ReadonlyArray<string>,
      servers: ReadonlyArray<ChildServer>,
      access: SessionAccess,
    ) =>
      servers.filter(
        (server) => (selection.length === 0 || selection.includes(server.name)) && access.server(server.name),
      )

    const openSession = (
      selection: ReadonlyArray<string>,
      client: ClientIdentity,
      output: ClientOutput,
      access: SessionAccess,
      basis: Configured,
    ) =>
      Effect.gen(function* () {
        const servers = selected(selection, basis.servers, access)
        const log = (effect: Effect.Effect<void>) =>
          effect.pipe(Effect.annotateLogs({ client: client.fingerprint }))
        const protocol = new SessionProtocol()
        const routing = new RoutingTable(servers.map((server) => server.name))
        const policy = makeSessionPolicy(access, client, limits, routing)
        if (access.undefinedGroups.length > 0) {
          yield* log(
            Effect.logWarning(
              `identity '${client.identity}' is in group(s) ${access.undefinedGroups.join(", ")} that access.groups does not define; they grant nothing`,
            ),
          )
        }
        const feed = yield* makeChangeFeed(output, protocol)
        const serverRequests = yield* makeServerRequests(output, log)
        const inputRounds = yield* makeInputRounds(log)
        const onStateChange = (child: SupervisedChild, previous: ChildState, next: ChildState) =>
          Effect.suspend(() => {
            if ((previous._tag === "Ready") === (next._tag === "Ready")) return Effect.void
            feed.childChanged(child, previous, next)
            const state = next._tag === "Ready" ? "is up" : "is down"
            return log(Effect.logInfo(`server '${child.server.name}' ${state}`))
          })
        const children = yield* makeSessionChildren({
          upstream,
          catalog,
          servers,
          supervisor: {
            maxLineBytes: settings.maxLineBytes,
            stopTimeout: Duration.seconds(settings.childStopTimeout),
            startupTimeout: Duration.seconds(settings.startupTimeout),
            outputReady: output.ready,
          },
          startupWait: Duration.seconds(settings.startupWait),
          protocol,
          shared,
          identity: client.identity,
          budget,
          spares,
          memory,
          hooks: {
            onMessage: makeChildMessages(output, protocol, serverRequests, inputRounds, feed),
            onStateChange,
          },
        })
        const forward = makeForward(children, protocol, inputRounds)
        const lists = makeMergedLists(children, routing, forward, log)
        const dispatch = makeDispatch(children, routing, lists, forward, feed)
        const lifecycle = yield* makeLifecycle({ protocol, children, dispatch, forward, feed })
        const fastPath = makeFastPath(protocol, routing, children)
        // Made after the parts it runs against, so it closes first: no request or reload runs on in
        // a session whose children have gone.
        const run = yield* FiberSet.makeRuntime<never, void, never>()
        const request = yield* makeRequests(run, lifecycle.route, fastPath, audit, client, policy.refuse)

        const notify = (notification: JsonRpcNotification): Effect.Effect<void> => {
          if (notification.method === "notifications/initialized") return Effect.void
          if (notification.method === "notifications/progress") return serverRequests.progress(notification)
          return Effect.forEach(
            children.all,
            (child) => {
              const ready = children.ready(child.server.name)
              return ready === undefined
                ? Effect.void
                : ready.connection.send(notification).pipe(Effect.ignore)
            },
            { discard: true },
          )
        }

        // A reload changes the session's servers and view in place: the others, and their calls, are
        // not touched.
        const follow = (configured: Configured) =>
          Effect.gen(function* () {
            // Names it may no longer use leave the routing table at once: from now on they are unknown.
            const viewChanged = policy.update(configured.access)
            const wanted = selected(selection, configured.servers, policy.current())
            const diff = diffServers(
              children.all.map((child) => child.server),
              wanted,
            )
            const change = yield* children.apply(wanted)
            if (change.retired.length > 0 || change.started.length > 0) {
              routing.retire(
                change.retired.map((child) => child.server.name),
                children.all.map((child) => child.server.name),
              )
              for (const child of change.retired) {
                const state = child.state()
                const profile = Option.getOrUndefined(catalog.profile(child.server.name))
                feed.listsChanged(state._tag === "Ready" ? state.capabilities : (profile?.capabilities ?? {}))
              }
              yield* log(Effect.logDebug(`servers reloaded for this session: ${describeDiff(diff)}`))
            }
            if (viewChanged) {
              // The tools and prompts it may use changed, even on servers it keeps.
              const { tools, prompts } = children.mergedView().capabilities
              feed.listsChanged({
                ...(tools === undefined ? {} : { tools }),
                ...(prompts === undefined ? {} : { prompts }),
              })
              yield* log(Effect.logInfo(`access policy changed for identity '${client.identity}'`))
            }
          })
        // The latest change only: the session catches up to it, however many reloads it missed.
        let pending: Configured | undefined
        let following = false
        const catchUp: Effect.Effect<void> = Effect.suspend(() => {
          const next = pending
          pending = undefined
          if (next === undefined) {
            following = false
            return Effect.void
          }
          return Effect.zipRight(follow(next), catchUp)
        })
        // A defect in one reload must not stop the session following the next.
        const catchUpOrReset = Effect.onError(catchUp, () =>
          Effect.sync(() => {
            following = false
          }),
        )
        yield* catalog.follow(basis, (configured) => {
          pending = configured
          if (following) return
          following = true
          run(catchUpOrReset)
        })

        return {
          request,
          notify,
          respond: serverRequests.answer,
          endOfInput: feed.endOfInput,
        } satisfies HubSession
      })

    const open = (selection: ReadonlyArray<string>, client: ClientIdentity, output: ClientOutput) =>
      Effect.gen(function* () {
        // Servers and policy read together: the session follows every reload from this one on.
        const basis = catalog.configured()
        const access = resolveAccess(basis.access, client)
        // A server the client may not use is as unknown to it as one that is not configured.
        const names = basis.servers.map((server) => server.name).filter((name) => access.server(name))
        const unknown = selection.filter((name) => !names.includes(name))
        if (unknown.length > 0) {
          return yield* new SelectionError({
            message: `unknown server(s): ${unknown.join(", ")}; available: ${names.join(", ")}`,
          })
        }
        yield* limits
          .holdSession(client.identity, access.maxSessions)
          .pipe(Effect.tapError((refused) => Effect.logInfo(`refused session: ${refused.message}`)))
        return yield* openSession(selection, client, output, access, basis)
      })

    return { open }
  }),
)
