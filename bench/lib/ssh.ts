/**
 * SSH clients for the bench: ssh2 connections and channels in this process, and OpenSSH `ssh -T`
 * processes. A target is anything that serves MCP on an SSH session channel: the gateway, or sshd
 * with a forced command.
 */
import { writeFileSync } from "node:fs"
import { join } from "node:path"
import type { ClientChannel, Client as Ssh2Client } from "ssh2"
import ssh2 from "ssh2"
import { spawnTracked, type Tracked } from "./procs.js"
import { RpcClient } from "./rpc.js"
import type { ClientKey } from "./workspace.js"

const { Client } = ssh2

export interface SshTarget {
  readonly label: string
  readonly port: number
  /** The server process (gateway or sshd listener). */
  readonly pid: number
  /** "ssh-ed25519 AAAA..." of the host key. */
  readonly hostKeyLine: string
  readonly username: string
  /** How MCP is asked for on a session channel. */
  readonly channel: { readonly subsystem: string } | { readonly exec: string }
  readonly dir: string
  /** Processes the idle server keeps below it (not children of sessions). */
  readonly helpers: ReadonlySet<number>
}

/** Connections already closed, so closing them again does not wait for a 'close' that never comes. */
const closedClients = new WeakSet<Ssh2Client>()

const hostKeyBlob = (target: SshTarget) => Buffer.from(target.hostKeyLine.split(" ")[1] ?? "", "base64")

/** Connect and authenticate with ssh2; resolves at "ready". */
export const connectSsh2 = (target: SshTarget, key: ClientKey, timeoutMs = 30_000): Promise<Ssh2Client> =>
  new Promise((resolve, reject) => {
    const client = new Client()
    const expected = hostKeyBlob(target)
    client
      .once("ready", () => resolve(client))
      // Kept for the client's life: a second error event must not become an uncaught exception.
      .on("error", (error: Error) => reject(new Error(`ssh2 to ${target.label}: ${error.message}`)))
      .once("close", () => {
        closedClients.add(client)
        reject(new Error(`ssh2 to ${target.label}: closed before authentication`))
      })
      .connect({
        host: "127.0.0.1",
        port: target.port,
        username: target.username,
        privateKey: key.privateKey,
        hostVerifier: (presented: Buffer) => presented.equals(expected),
        readyTimeout: timeoutMs,
      })
    // As the gateway does on its side: no packet waits for the ACK of the previous one (Nagle), from
    // the handshake on (its socket exists once connect() is called).
    client.setNoDelay(true)
  })

export const openChannel = (client: Ssh2Client, target: SshTarget): Promise<ClientChannel> =>
  new Promise((resolve, reject) => {
    const done = (error: Error | undefined, channel: ClientChannel) =>
      error === undefined ? resolve(channel) : reject(new Error(`${target.label}: ${error.message}`))
    if ("subsystem" in target.channel) client.subsys(target.channel.subsystem, done)
    else client.exec(target.channel.exec, done)
  })

/** Resolves once the connection is closed (after `end()`), or after `timeoutMs`. */
export const closeSsh2 = (client: Ssh2Client, timeoutMs = 5_000): Promise<void> =>
  new Promise((resolve) => {
    if (closedClients.has(client)) return resolve()
    const timer = setTimeout(() => {
      client.destroy()
      resolve()
    }, timeoutMs)
    client.once("close", () => {
      clearTimeout(timer)
      resolve()
    })
    client.on("error", () => {})
    client.end()
  })

export interface Ssh2Session {
  readonly client: Ssh2Client
  readonly channel: ClientChannel
  readonly rpc: RpcClient
  readonly close: () => Promise<void>
}

/** Connect, open the MCP channel and initialize: a ready MCP session over ssh2. */
export const openSsh2Session = async (
  target: SshTarget,
  key: ClientKey,
  label = `${target.label} via ssh2`,
): Promise<Ssh2Session> => {
  const client = await connectSsh2(target, key)
  client.on("error", () => {})
  try {
    const channel = await openChannel(client, target)
    const rpc = new RpcClient(label, channel, channel, channel.stderr)
    await rpc.initialize()
    return { client, channel, rpc, close: () => closeSsh2(client) }
  } catch (error) {
    client.destroy()
    throw error
  }
}

/** Arguments for OpenSSH `ssh -T` that trust exactly the target's host key and offer only `key`. */
export const opensshArgs = (target: SshTarget, key: ClientKey): Array<string> => {
  const knownHosts = join(target.dir, "known_hosts")
  writeFileSync(knownHosts, `[127.0.0.1]:${target.port} ${target.hostKeyLine}\n`)
  return [
    "-T",
    "-p",
    String(target.port),
    "-i",
    key.privatePath,
    "-F",
    "/dev/null",
    "-o",
    "IdentitiesOnly=yes",
    "-o",
    "IdentityAgent=none",
    "-o",
    "BatchMode=yes",
    "-o",
    `UserKnownHostsFile=${knownHosts}`,
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "ControlMaster=no",
    "-o",
    "ControlPath=none",
    "-o",
    "LogLevel=ERROR",
    `${target.username}@127.0.0.1`,
    ...("subsystem" in target.channel ? [] : [target.channel.exec]),
  ]
}

export interface OpenSshSession {
  readonly process: Tracked
  readonly rpc: RpcClient
}

/** Start `ssh -T` to the target; its stdin/stdout is the MCP session (not yet initialized). */
export const spawnOpenSsh = (target: SshTarget, key: ClientKey, label = `${target.label} via ssh -T`) => {
  const ssh = spawnTracked(label, "ssh", opensshArgs(target, key))
  const { stdout, stdin, stderr } = ssh.child
  if (stdout === null || stdin === null) throw new Error("ssh was started without pipes")
  return {
    process: ssh,
    rpc: new RpcClient(label, stdout, stdin, stderr ?? undefined),
  } satisfies OpenSshSession
}

/** Start a server directly, its stdin/stdout the MCP session: the direct-pipe baseline. */
export const spawnDirect = (label: string, command: string, args: ReadonlyArray<string>) => {
  const child = spawnTracked(label, command, args)
  const { stdout, stdin, stderr } = child.child
  if (stdout === null || stdin === null) throw new Error("the server was started without pipes")
  return { process: child, rpc: new RpcClient(label, stdout, stdin, stderr ?? undefined) }
}

/**
 * OpenSSH's `ssh` from process start until it is authenticated, in ms: `-N` (no session) and a
 * LocalCommand, which ssh runs once the login succeeded, that ends it. The same client and the same
 * process overhead for a plain key and for a certificate (`-o CertificateFile`), so their ratio is the
 * server's difference. ssh2's client cannot log in with a certificate (it names the certificate's
 * algorithm in the signature), which is why this one uses OpenSSH.
 */
export const opensshHandshake = async (
  target: SshTarget,
  key: ClientKey,
  certificatePath?: string,
): Promise<number> => {
  const args = opensshArgs(target, key)
  const destination = args.indexOf(`${target.username}@127.0.0.1`)
  const start = process.hrtime.bigint()
  const ssh = spawnTracked(`${target.label} ssh handshake`, "ssh", [
    "-N",
    "-o",
    "PermitLocalCommand=yes",
    "-o",
    "LocalCommand=kill $PPID",
    ...(certificatePath === undefined ? [] : ["-o", `CertificateFile=${certificatePath}`]),
    ...args.slice(0, destination + 1),
  ])
  let stderr = ""
  ssh.child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString()
  })
  await ssh.exited
  const millis = Number(process.hrtime.bigint() - start) / 1e6
  if (/Permission denied|Connection refused|Host key verification failed/.test(stderr)) {
    throw new Error(`ssh to ${target.label} was not let in: ${stderr.trim()}`)
  }
  return millis
}
