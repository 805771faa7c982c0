/**
 * Live reload of servers_config.json: the new config is read and checked in full first; if anything
 * is wrong the running config stays and every problem is reported naming its field. Otherwise only
 * the difference is applied (the Catalog publishes it; each session follows). Reloads run one at a
 * time; requests that arrive while one runs collapse into one more, which reads the file as it is
 * then, so the last config wins.
 */
import { Context, Data, Deferred, Effect, Layer, Option, Queue } from "effect"
import { describeAccess } from "../access/accessConfig.js"
import { Catalog, type CatalogShape } from "../children/Catalog.js"
import type { ConfigError } from "../errors.js"
import { Metrics } from "../ops/Metrics.js"
import { ConfigSource } from "./ConfigSource.js"
import { GatewayConfig, type GatewayConfigShape } from "./GatewayConfig.js"
import type { ServerDiff } from "./serverDiff.js"
import { describeDiff, isEmptyDiff } from "./serverDiff.js"
import { type SettingKey, settingKeys } from "./settings.js"

/** Every setting is read once at start (listeners, host key, limits): a reload only reports changes. */
export const changedSettings = (before: GatewayConfigShape, after: GatewayConfigShape): Array<SettingKey> =>
  settingKeys.filter((key) => JSON.stringify(before.settings[key]) !== JSON.stringify(after.settings[key]))

export interface ReloadOutcome {
  readonly added: ReadonlyArray<string>
  readonly removed: ReadonlyArray<string>
  readonly changed: ReadonlyArray<string>
  /** The `access` policy differs; live sessions work out their view again. */
  readonly accessChanged: boolean
  /** Changed settings that take effect only at the next start; their values are never shown. */
  readonly ignoredSettings: ReadonlyArray<string>
}

/** The new config was refused; the running one stays. Each problem names its source and field. */
export class ReloadFailed extends Data.TaggedError("ReloadFailed")<{
  readonly problems: ReadonlyArray<string>
}> {
  override get message(): string {
    return this.problems.join("; ")
  }
}

const problemsOf = (error: ConfigError): ReadonlyArray<string> =>
  error.message
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line.length > 0)

const namesOf = (servers: ServerDiff["added"]) => servers.map((server) => server.name)

export class Reloader extends Context.Tag("mcp-ssh/Reloader")<
  Reloader,
  {
    /** Reload now (after any reload under way) and say what changed, or why nothing did. */
    readonly reload: (trigger: string) => Effect.Effect<ReloadOutcome, ReloadFailed>
    /**
     * Ask for a reload soon, from a signal handler or a file watch: synchronous, never fails; the
     * outcome is logged. Requests made while a reload runs collapse into one.
     */
    readonly request: (trigger: string) => void
    /** The servers to reload into, once they are up (ReloadTargetLive): until then a reload is refused. */
    readonly attach: (catalog: CatalogShape) => Effect.Effect<void>
  }
>() {}

const stillStarting = new ReloadFailed({
  problems: ["the gateway is still starting; reload once it serves (GET /ready answers 200)"],
})

export const ReloaderLive = Layer.scoped(
  Reloader,
  Effect.gen(function* () {
    const running = yield* GatewayConfig
    const source = yield* ConfigSource
    const metrics = yield* Metrics
    // Built before the servers are probed (the key API answers from the start); they come later.
    const target = yield* Deferred.make<CatalogShape>()
    const oneAtATime = yield* Effect.makeSemaphore(1)

    const apply = (trigger: string, catalog: CatalogShape) =>
      Effect.gen(function* () {
        const next = yield* source.load
        const accessChanged = describeAccess(catalog.access()) !== describeAccess(next.access)
        const diff = yield* catalog.replace(next.servers, next.access)
        metrics.reloaded(isEmptyDiff(diff) && !accessChanged ? "unchanged" : "applied")
        const ignoredSettings = changedSettings(running, next)
        yield* Effect.logInfo(
          `config reloaded (${trigger}): ${describeDiff(diff)}${accessChanged ? "; the access policy changed" : ""}`,
        )
        if (ignoredSettings.length > 0) {
          yield* Effect.logWarning(
            `config reload (${trigger}): setting(s) ${ignoredSettings.join(", ")} changed; they take effect at the next start and are ignored until then`,
          )
        }
        return {
          added: namesOf(diff.added),
          removed: namesOf(diff.removed),
          changed: namesOf(diff.changed),
          accessChanged,
          ignoredSettings,
        } satisfies ReloadOutcome
      }).pipe(
        Effect.catchTag("ConfigError", (error) =>
          Effect.sync(() => metrics.reloaded("failed")).pipe(
            Effect.zipRight(
              Effect.logError(
                `config reload (${trigger}) refused; the running config stays:\n  ${problemsOf(error).join("\n  ")}`,
              ),
            ),
            Effect.zipRight(Effect.fail(new ReloadFailed({ problems: problemsOf(error) }))),
          ),
        ),
      )

    const reload = (trigger: string) =>
      Effect.flatMap(Deferred.poll(target), (attached) =>
        Option.match(attached, {
          onNone: () =>
            Effect.sync(() => metrics.reloaded("failed")).pipe(Effect.zipRight(Effect.fail(stillStarting))),
          onSome: (catalog) => oneAtATime.withPermits(1)(Effect.flatMap(catalog, (c) => apply(trigger, c))),
        }),
      )

    // Sliding, one slot: however many requests arrive during a reload, one more reload follows.
    const requests = yield* Queue.sliding<string>(1)
    yield* Deferred.await(target).pipe(
      Effect.zipRight(
        Queue.take(requests).pipe(
          Effect.flatMap((trigger) => Effect.ignore(reload(trigger))),
          Effect.forever,
        ),
      ),
      Effect.forkScoped,
    )
    yield* Effect.addFinalizer(() => Queue.shutdown(requests))

    return {
      reload,
      request: (trigger: string) => {
        Queue.unsafeOffer(requests, trigger)
      },
      attach: (catalog: CatalogShape) => Deferred.succeed(target, catalog).pipe(Effect.asVoid),
    }
  }),
)

/** Hands the Reloader the servers once they are probed and serving. */
export const ReloadTargetLive = Layer.effectDiscard(
  Effect.gen(function* () {
    const reloader = yield* Reloader
    yield* reloader.attach(yield* Catalog)
  }),
)
