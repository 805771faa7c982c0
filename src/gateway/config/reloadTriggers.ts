/**
 * What starts a reload besides the admin API: SIGHUP, and a change of servers_config.json. The file's
 * directory is watched, not the file: editors save by writing a new file and renaming it over the
 * old one, which a watch on the old file never sees. Bursts of events (an editor's several writes)
 * are debounced into one reload.
 */
import { watch } from "node:fs"
import { basename, dirname } from "node:path"
import { Duration, Effect, Layer } from "effect"
import { errorText } from "../../shared/errorText.js"
import { GatewayConfig } from "./GatewayConfig.js"
import { Reloader } from "./Reloader.js"

const debounce = Duration.millis(250)

const onSighup = (request: (trigger: string) => void) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const handler = () => request("SIGHUP")
      process.on("SIGHUP", handler)
      return handler
    }),
    (handler) => Effect.sync(() => process.off("SIGHUP", handler)),
  )

const onFileChange = (configPath: string, request: (trigger: string) => void) =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      let timer: NodeJS.Timeout | undefined
      const name = basename(configPath)
      const changed = (filename: string | Buffer | null) => {
        // Some platforms give no name: then any change in the directory counts.
        if (filename !== null && filename.toString() !== name) return
        clearTimeout(timer)
        timer = setTimeout(() => request(`${name} changed`), Duration.toMillis(debounce))
        timer.unref()
      }
      const watcher = yield* Effect.try(() =>
        watch(dirname(configPath), { persistent: false }, (_event, filename) => changed(filename)),
      )
      watcher.on("error", () => {})
      return { watcher, stop: () => clearTimeout(timer) }
    }).pipe(
      Effect.tapError((error) =>
        Effect.logWarning(
          `cannot watch ${dirname(configPath)} (${errorText(error.error)}); reload with SIGHUP or POST /admin/reload`,
        ),
      ),
      Effect.option,
    ),
    (watching) =>
      Effect.sync(() => {
        if (watching._tag === "None") return
        watching.value.stop()
        watching.value.watcher.close()
      }),
  )

/** Watches and signal handlers last as long as the gateway's scope. */
export const ReloadTriggersLive = Layer.scopedDiscard(
  Effect.gen(function* () {
    const reloader = yield* Reloader
    const { configPath } = yield* GatewayConfig
    yield* onSighup(reloader.request)
    yield* onFileChange(configPath, reloader.request)
  }),
)
