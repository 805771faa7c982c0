/**
 * N gateway replicas (`node dist/main.js`) as a fleet runs them: one host key file made once with
 * ssh-keygen and given to every replica (so one known_hosts line holds for all), one shared key
 * store (the authorized keys file, unless the flags name another with `--key-store`), each replica
 * with its own config directory, SSH port and metrics listener (whose `GET /ready` a load balancer
 * checks).
 */
import { execFileSync } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"
import { chmod, rm } from "node:fs/promises"
import { join } from "node:path"
import {
  type ClientKey,
  disposeGateway,
  type GatewayOptions,
  makeKey,
  type RunningGateway,
  startGateway,
  tempDir,
} from "./gateway.js"

export interface Replica {
  readonly name: string
  readonly gateway: RunningGateway
  /** Its metrics listener's port: `GET /ready` there is the load balancer's health check. */
  readonly metricsPort: number
}

export interface Fleet {
  readonly dir: string
  readonly hostKeyPath: string
  /** The host key's public half, `type base64`, as known_hosts holds it. */
  readonly hostPublicKey: string
  readonly authorizedKeysPath: string
  /** A key every replica authorizes. */
  readonly clientKey: ClientKey
  readonly replicas: ReadonlyArray<Replica>
  /** A known_hosts file pinning the fleet's one host key for `127.0.0.1:port` (the load balancer's). */
  readonly knownHostsFor: (port: number) => string
  /** Stop every replica still running, and remove every directory. */
  readonly dispose: () => Promise<void>
}

const startReplica = async (name: string, options: GatewayOptions): Promise<Replica> => {
  const gateway = await startGateway({
    ...options,
    flags: [...(options.flags ?? []), "--metrics-port", "0"],
    readyTimeoutMs: options.readyTimeoutMs ?? 45_000,
  })
  try {
    const line = await gateway.waitForLog(/metrics listening on http:\/\//)
    const metricsPort = Number(/metrics listening on http:\/\/[^\s"]*:(\d+)\//.exec(line)?.[1])
    if (!Number.isInteger(metricsPort) || metricsPort <= 0) throw new Error(`no metrics port in ${line}`)
    return { name, gateway, metricsPort }
  } catch (error) {
    await disposeGateway(gateway)
    throw error
  }
}

/**
 * Start `count` replicas at once. `options` apply to each (servers, flags...); `authorizedLines`
 * go into the shared key store beside the client key.
 */
export const startReplicas = async (
  count: number,
  options: Omit<GatewayOptions, "shared"> = {},
): Promise<Fleet> => {
  const dir = tempDir("mcp-ssh-fleet-")
  const hostKeyPath = join(dir, "host_key")
  // The operator's way: made once, then copied to every replica (e.g. from a secret).
  execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "mcp-ssh fleet", "-f", hostKeyPath])
  const hostPublicKey = readFileSync(`${hostKeyPath}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ")
  const clientKey = makeKey(dir, "client")
  const authorizedKeysPath = join(dir, "authorized_keys")
  writeFileSync(
    authorizedKeysPath,
    `${[clientKey.publicLine, ...(options.authorizedLines ?? [])].join("\n")}\n`,
  )
  await chmod(authorizedKeysPath, 0o600)
  const shared = { hostKeyPath, authorizedKeysPath, clientKey }
  const started = await Promise.allSettled(
    Array.from({ length: count }, (_, index) => startReplica(`replica${index + 1}`, { ...options, shared })),
  )
  const replicas = started.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []))
  const dispose = async () => {
    await Promise.all(replicas.map((replica) => disposeGateway(replica.gateway)))
    await rm(dir, { recursive: true, force: true })
  }
  const failed = started.find((result) => result.status === "rejected")
  if (failed !== undefined) {
    await dispose()
    throw failed.reason
  }
  return {
    dir,
    hostKeyPath,
    hostPublicKey,
    authorizedKeysPath,
    clientKey,
    replicas,
    knownHostsFor: (port) => {
      const path = join(dir, `known_hosts_${port}`)
      writeFileSync(path, `[127.0.0.1]:${port} ${hostPublicKey}\n`)
      return path
    },
    dispose,
  }
}
