/**
 * The gateway's state for /ready and /health: starting (servers being probed) until SSH listens,
 * then ready (or no server can start), then draining. Built before everything else, so the HTTP
 * listeners that serve it can answer "starting" while the servers are probed.
 */
import type { AddressInfo } from "node:net"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Context, Effect, Layer, Option } from "effect"
import { urlHost } from "../../shared/net.js"
import { Catalog } from "../children/Catalog.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { SshServer } from "../ssh/SshServer.js"
import { Drain } from "./Drain.js"
import {
  gatewayState,
  type ReadyAnswer,
  readyAnswer,
  type ServerStartState,
  type StatusSnapshot,
  shortReason,
} from "./readiness.js"

export interface GatewayStatusShape {
  readonly snapshot: Effect.Effect<StatusSnapshot>
  /** GET /ready's status and body, for any listener that serves it (the key API, the metrics listener). */
  readonly ready: Effect.Effect<ReadyAnswer>
  /**
   * SSH listens at `address`: the gateway serves. `servers` says how each server did at its start
   * probe, asked at each look (so a later re-probe shows).
   */
  readonly serving: (
    address: AddressInfo,
    servers: () => ReadonlyArray<readonly [string, ServerStartState]>,
  ) => Effect.Effect<void>
}

export class GatewayStatus extends Context.Tag("mcp-ssh/GatewayStatus")<
  GatewayStatus,
  GatewayStatusShape
>() {}

export const GatewayStatusLive = Layer.effect(
  GatewayStatus,
  Effect.gen(function* () {
    const config = yield* GatewayConfig
    const drain = yield* Drain
    const { settings } = config
    let serving:
      | {
          readonly address: string
          readonly servers: () => ReadonlyArray<readonly [string, ServerStartState]>
        }
      | undefined

    const snapshot = Effect.sync((): StatusSnapshot => {
      const draining = drain.draining()
      const servers =
        serving?.servers() ?? config.servers.map((server) => [server.name, { state: "starting" }] as const)
      return {
        state: gatewayState({ serving: serving !== undefined, draining, servers }),
        // The listener closes when the drain begins.
        ssh: {
          listening: serving !== undefined && !draining,
          address: serving?.address ?? `${urlHost(settings.host)}:${settings.port}`,
        },
        servers,
      }
    })

    return {
      snapshot,
      ready: Effect.map(snapshot, (status) => readyAnswer(status.state)),
      serving: (address, servers) =>
        Effect.sync(() => {
          serving = { address: `${urlHost(address.address)}:${address.port}`, servers }
        }),
    } satisfies GatewayStatusShape
  }),
)

/**
 * GET /ready as an HTTP answer, for a listener other than the key API to mount (the metrics
 * listener), so load balancers can check readiness when the key API is off.
 */
export const readyResponse: Effect.Effect<HttpServerResponse.HttpServerResponse, never, GatewayStatus> =
  Effect.flatMap(GatewayStatus, (status) =>
    Effect.map(status.ready, (answer) =>
      HttpServerResponse.unsafeJson(answer.body, {
        status: answer.status,
        headers: { "cache-control": "no-store" },
      }),
    ),
  )

/** Built once SSH listens (after the start probes): the gateway serves, each server as its probe found it. */
export const GatewayServingLive = Layer.effectDiscard(
  Effect.gen(function* () {
    const catalog = yield* Catalog
    const { address } = yield* SshServer
    const status = yield* GatewayStatus
    const stateOf = (name: string): ServerStartState => {
      if (Option.isSome(catalog.profile(name))) return { state: "up" }
      const failure = catalog.probeFailure(name)
      return Option.isSome(failure)
        ? { state: "failed", reason: shortReason(failure.value) }
        : { state: "starting" }
    }
    // The servers as configured now: a reload changes them, and re-probes those that failed.
    yield* status.serving(address, () =>
      catalog.servers().map((server) => [server.name, stateOf(server.name)] as const),
    )
  }),
)
