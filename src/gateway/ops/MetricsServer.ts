/**
 * The listener of GET /metrics (--metrics-host, --metrics-port): an HTTP server of its own, never
 * the key API's, so scraping needs no route through the public API and the public API exposes no
 * metrics. Off without a port. It also answers GET /ready, so a load balancer can check readiness
 * when the key API is off. Anything else is 404.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import type { AddressInfo } from "node:net"
import { Context, Effect, FiberSet, Layer } from "effect"
import { isLoopbackHost, urlHost } from "../../shared/net.js"
import { GatewayConfig } from "../config/GatewayConfig.js"
import { ListenError } from "../errors.js"
import { GatewayStatus, type GatewayStatusShape } from "./GatewayStatus.js"
import { Metrics, type MetricsShape } from "./Metrics.js"

export interface MetricsServerShape {
  /** Where /metrics is served (the real port when 0 was asked for); undefined when metrics are off. */
  readonly address: { readonly host: string; readonly port: number } | undefined
}

export class MetricsServer extends Context.Tag("mcp-ssh/MetricsServer")<
  MetricsServer,
  MetricsServerShape
>() {}

const listen = (server: Server, host: string, port: number) =>
  Effect.async<AddressInfo, ListenError>((resume) => {
    const onError = (error: Error) =>
      resume(Effect.fail(new ListenError({ address: `${urlHost(host)}:${port}`, reason: error.message })))
    server.once("error", onError)
    server.listen({ host, port }, () => {
      server.off("error", onError)
      resume(Effect.succeed(server.address() as AddressInfo))
    })
  })

const answer = (response: ServerResponse, status: number, contentType: string, body: string) => {
  response.writeHead(status, { "content-type": contentType, "cache-control": "no-store" })
  response.end(body)
}

/** One request: the scrape as the registry renders it, readiness, or 404. */
const handle = (
  metrics: MetricsShape,
  status: GatewayStatusShape,
  request: IncomingMessage,
  response: ServerResponse,
) => {
  const path = (request.url ?? "").split("?")[0]
  if (request.method === "GET" && path === "/ready") {
    return Effect.flatMap(status.ready, (ready) =>
      Effect.sync(() => answer(response, ready.status, "application/json", JSON.stringify(ready.body))),
    )
  }
  if (request.method !== "GET" || path !== "/metrics") {
    return Effect.sync(() => answer(response, 404, "text/plain; charset=utf-8", "not found\n"))
  }
  return metrics.scrape.pipe(
    Effect.matchEffect({
      onSuccess: ({ contentType, text }) => Effect.sync(() => answer(response, 200, contentType, text)),
      onFailure: (error) =>
        Effect.logError(error.message).pipe(
          Effect.zipRight(
            Effect.sync(() => answer(response, 500, "text/plain; charset=utf-8", "scrape failed\n")),
          ),
        ),
    }),
  )
}

export const MetricsServerLive = Layer.scoped(
  MetricsServer,
  Effect.gen(function* () {
    const { settings } = yield* GatewayConfig
    const metrics = yield* Metrics
    const status = yield* GatewayStatus
    const port = settings.metricsPort
    if (port === undefined || !metrics.enabled) return { address: undefined }
    const host = settings.metricsHost
    // Scrapes run as fibers of the layer's scope: the stop interrupts one still running.
    const run = yield* FiberSet.makeRuntime<never, void, never>()
    // Timeouts bound how long a slow client can hold a connection.
    const server = createServer({ requestTimeout: 10_000, headersTimeout: 5_000 }, (request, response) => {
      run(handle(metrics, status, request, response))
    })
    server.on("clientError", (_error, socket) => socket.destroy())
    const address = yield* Effect.acquireRelease(listen(server, host, port), () =>
      Effect.sync(() => {
        server.close()
        server.closeAllConnections()
      }),
    )
    if (!isLoopbackHost(host)) {
      yield* Effect.logWarning(
        `metrics on ${urlHost(host)}:${address.port} can be read by anyone who reaches that address ` +
          "(server names, call counts, timings); bind it to 127.0.0.1 or firewall it",
      )
    }
    yield* Effect.logInfo(`metrics listening on http://${urlHost(address.address)}:${address.port}/metrics`)
    return { address: { host: address.address, port: address.port } }
  }),
)
