/**
 * The user's known_hosts file (--known-hosts): read once at start, consulted for the gateway's host
 * key, and appended to when a key fetched from the key API is pinned. Pinned lines are written in
 * plain form (`[host]:port type key`), readable by OpenSSH and by people; hashed lines that are
 * already there are understood.
 */
import { dirname } from "node:path"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { appendLine, makeDirectory, readTextIfExists } from "../shared/fileSystem.js"
import { ClientConfig } from "./ClientConfig.js"
import { KnownHostsError } from "./errors.js"
import {
  type HostKeyVerdict,
  type KnownHostEntry,
  knownHostsLine,
  knownKeyTypes,
  parseKnownHosts,
  verifyHostKey,
} from "./knownHostsFormat.js"

export interface KnownHostsShape {
  readonly path: string
  /** What the file (and what this run pinned) says about `blob` presented by host `name`. */
  readonly verify: (name: string, blob: Buffer) => HostKeyVerdict
  /** Key types on file for the host, to ask the gateway for one of them first. */
  readonly knownTypes: (name: string) => ReadonlyArray<string>
  /**
   * Trust `blob` for `name` from now on: append its line to the file. If the file cannot be
   * written, the key is trusted for this run only (with a warning).
   */
  readonly pin: (name: string, blob: Buffer) => Effect.Effect<void>
}

export class KnownHosts extends Context.Tag("mcp-ssh/KnownHosts")<KnownHosts, KnownHostsShape>() {}

export const loadKnownHosts = (path: string) =>
  Effect.gen(function* () {
    const content = yield* readTextIfExists(path).pipe(
      Effect.mapError((error) => new KnownHostsError({ path, reason: `cannot read: ${error.message}` })),
    )
    const parsed = parseKnownHosts(Option.getOrElse(content, () => ""))
    for (const problem of parsed.problems) {
      yield* Effect.logDebug(`${path}:${problem.line} ignored: ${problem.reason}`)
    }
    const entries: Array<KnownHostEntry> = [...parsed.entries]

    const pin = (name: string, blob: Buffer) =>
      Effect.gen(function* () {
        const line = knownHostsLine(name, blob)
        const last = entries[entries.length - 1]
        // Trusted from now on in this run, whether or not the file can be written.
        entries.push({
          line: (last?.line ?? 0) + 1,
          marker: undefined,
          hosts: { _tag: "Patterns", patterns: [name] },
          keyType: line.split(" ")[1] ?? "",
          blob,
        })
        yield* makeDirectory(dirname(path)).pipe(
          Effect.zipRight(appendLine(path, line)),
          Effect.zipRight(Effect.logInfo(`pinned the host key of ${name} in ${path}`)),
          Effect.catchAll((error) =>
            Effect.logWarning(
              `cannot add the host key of ${name} to ${path} (${error.message}); trusting it for this run only`,
            ),
          ),
        )
      })

    return {
      path,
      verify: (name, blob) => verifyHostKey(entries, name, blob),
      knownTypes: (name) => knownKeyTypes(entries, name),
      pin,
    } satisfies KnownHostsShape
  })

export const KnownHostsLive = Layer.effect(
  KnownHosts,
  Effect.flatMap(ClientConfig, (settings) => loadKnownHosts(settings.knownHosts)),
)
