/**
 * The user's known_hosts file (--known-hosts): read once at start, consulted for the gateway's host
 * key, and appended to when a key fetched from the key API is pinned. Pinned lines are written in
 * plain form (`[host]:port type key`), readable by OpenSSH and by people; hashed lines that are
 * already there are understood.
 */
import { appendFile, mkdir, open, readFile } from "node:fs/promises"
import { dirname } from "node:path"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
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

const errorText = (error: unknown): string => (error instanceof Error ? error.message : String(error))

const codeOf = (error: unknown): string | undefined =>
  typeof error === "object" && error !== null && "code" in error && typeof error.code === "string"
    ? error.code
    : undefined

/** Does the file end without a newline (so an appended line must start with one)? */
const lacksFinalNewline = async (path: string): Promise<boolean> => {
  const handle = await open(path, "r").catch(() => undefined)
  if (handle === undefined) return false
  try {
    const { size } = await handle.stat()
    if (size === 0) return false
    const last = Buffer.alloc(1)
    await handle.read(last, 0, 1, size - 1)
    return last[0] !== 0x0a
  } finally {
    await handle.close()
  }
}

export const loadKnownHosts = (path: string) =>
  Effect.gen(function* () {
    const content = yield* Effect.tryPromise({
      try: () => readFile(path, "utf8"),
      catch: (error) => error,
    }).pipe(
      Effect.catchAll((error) =>
        codeOf(error) === "ENOENT"
          ? Effect.succeed("")
          : Effect.fail(new KnownHostsError({ path, reason: `cannot read: ${errorText(error)}` })),
      ),
    )
    const parsed = parseKnownHosts(content)
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
        yield* Effect.tryPromise(async () => {
          await mkdir(dirname(path), { recursive: true, mode: 0o700 })
          const prefix = (await lacksFinalNewline(path)) ? "\n" : ""
          await appendFile(path, `${prefix}${line}\n`, { mode: 0o600 })
        }).pipe(
          Effect.zipRight(Effect.logInfo(`pinned the host key of ${name} in ${path}`)),
          Effect.catchAll((error) =>
            Effect.logWarning(
              `cannot add the host key of ${name} to ${path} (${errorText(error.error)}); trusting it for this run only`,
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
