/**
 * OpenSSH sshd as a baseline: the same MCP server run as a forced command (`command="..."` in an
 * authorized_keys file), on a loopback port, with its own config, host key and pid file in the
 * workspace. Nothing system-wide is touched besides installing the package when it is missing and
 * creating /run/sshd (sshd's privilege-separation directory) when it does not exist.
 */
import { execFile } from "node:child_process"
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeFileSync } from "node:fs"
import { chmod } from "node:fs/promises"
import { createServer } from "node:net"
import { userInfo } from "node:os"
import { join } from "node:path"
import { helpersOf, isAlive, spawnTracked, stopTracked, type Tracked, waitFor } from "./procs.js"
import type { SshTarget } from "./ssh.js"
import type { ClientKey, Workspace } from "./workspace.js"

export const sshdPath = "/usr/sbin/sshd"

export type SshdAvailability =
  | { readonly ok: true; readonly version: string; readonly installed: boolean }
  | { readonly ok: false; readonly reason: string }

const run = (command: string, args: ReadonlyArray<string>, timeoutMs: number) =>
  new Promise<{ code: number | null; output: string }>((resolve) => {
    execFile(
      command,
      [...args],
      {
        timeout: timeoutMs,
        maxBuffer: 16 * 1024 * 1024,
        env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" },
      },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === "number" ? error.code : 1
        resolve({ code, output: `${stdout}${stderr}` })
      },
    )
  })

const sshdVersion = async (): Promise<string> => {
  // `sshd -V` does not exist on older releases; an unknown option prints the version on stderr.
  const { output } = await run(sshdPath, ["-V"], 5_000)
  return /OpenSSH_[^\s,]+/.exec(output)?.[0] ?? "unknown version"
}

/** Is sshd there (installing openssh-server with apt-get when it is missing and we are root)? */
export const ensureSshd = async (log: (line: string) => void): Promise<SshdAvailability> => {
  let installed = false
  if (!existsSync(sshdPath)) {
    if (process.getuid?.() !== 0) {
      return { ok: false, reason: `${sshdPath} is missing and installing openssh-server needs root` }
    }
    if (!existsSync("/usr/bin/apt-get")) {
      return { ok: false, reason: `${sshdPath} is missing and there is no apt-get to install openssh-server` }
    }
    log("sshd is missing: apt-get install openssh-server (once)")
    const update = await run("apt-get", ["update", "-qq"], 180_000)
    if (update.code !== 0) {
      return { ok: false, reason: `apt-get update failed: ${update.output.trim().slice(-500)}` }
    }
    const install = await run(
      "apt-get",
      ["install", "-y", "-qq", "--no-install-recommends", "openssh-server"],
      300_000,
    )
    if (install.code !== 0 || !existsSync(sshdPath)) {
      return {
        ok: false,
        reason: `apt-get install openssh-server failed: ${install.output.trim().slice(-500)}`,
      }
    }
    installed = true
  }
  if (process.getuid?.() === 0 && !existsSync("/run/sshd")) {
    try {
      mkdirSync("/run/sshd", { mode: 0o755 })
    } catch (error) {
      return {
        ok: false,
        reason: `cannot create /run/sshd: ${error instanceof Error ? error.message : error}`,
      }
    }
  }
  return { ok: true, version: await sshdVersion(), installed }
}

export const freePort = () =>
  new Promise<number>((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen({ host: "127.0.0.1", port: 0 }, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

export interface Sshd extends SshTarget {
  readonly process: Tracked
  readonly logTail: () => string
  readonly stop: () => Promise<void>
}

export interface ForcedCommand {
  readonly key: ClientKey
  /** A shell command line. */
  readonly command: string
}

/** The gateway's algorithm lists (src/gateway/ssh/SshServer.ts), so both servers negotiate the same ones. */
const algorithms = [
  "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org",
  "Ciphers aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr",
  "MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com",
  "HostKeyAlgorithms ssh-ed25519",
]

export const startSshd = async (
  workspace: Workspace,
  forced: ReadonlyArray<ForcedCommand>,
  name = "sshd",
): Promise<Sshd> => {
  const dir = workspace.subdir(name)
  const hostKeyPath = join(dir, "ssh_host_ed25519_key")
  await new Promise<void>((resolve, reject) =>
    execFile("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", hostKeyPath], (error) =>
      error === null ? resolve() : reject(error),
    ),
  )
  const authorizedKeysPath = join(dir, "authorized_keys")
  const options = "no-pty,no-port-forwarding,no-agent-forwarding,no-X11-forwarding"
  writeFileSync(
    authorizedKeysPath,
    `${forced
      .map(({ key, command }) => `command="${command.replaceAll('"', '\\"')}",${options} ${key.publicLine}`)
      .join("\n")}\n`,
  )
  await chmod(authorizedKeysPath, 0o600)
  const port = await freePort()
  const root = process.getuid?.() === 0
  const configPath = join(dir, "sshd_config")
  writeFileSync(
    configPath,
    [
      `Port ${port}`,
      "ListenAddress 127.0.0.1",
      `HostKey ${hostKeyPath}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${authorizedKeysPath}`,
      // The workspace is under /tmp (world-writable): sshd's path checks would refuse the key file.
      "StrictModes no",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "UsePAM no",
      root ? "PermitRootLogin prohibit-password" : "",
      "MaxStartups 4000",
      "MaxSessions 10",
      "LoginGraceTime 30",
      "UseDNS no",
      "PrintMotd no",
      "PrintLastLog no",
      "X11Forwarding no",
      "AllowTcpForwarding no",
      "AllowAgentForwarding no",
      "PermitTTY no",
      "ClientAliveInterval 15",
      "ClientAliveCountMax 3",
      "LogLevel INFO",
      ...algorithms,
      "",
    ]
      .filter((line, index, lines) => line !== "" || index === lines.length - 1)
      .join("\n"),
  )
  await chmod(configPath, 0o600)
  const logPath = join(dir, "sshd.log")
  const logFd = openSync(logPath, "a")
  const sshd = (() => {
    try {
      return spawnTracked(name, sshdPath, ["-D", "-e", "-f", configPath], { stdio: ["ignore", logFd, logFd] })
    } finally {
      closeSync(logFd)
    }
  })()
  const logTail = () => {
    try {
      return readFileSync(logPath, "utf8").slice(-3_000)
    } catch {
      return ""
    }
  }
  const up = await waitFor(
    () => !isAlive(sshd.pid) || /Server listening on 127\.0\.0\.1 port/.test(logTail()),
    10_000,
    10,
  )
  if (!up || !isAlive(sshd.pid)) {
    await stopTracked(sshd, 1_000)
    throw new Error(`sshd did not start listening:\n${logTail()}`)
  }
  const hostKeyLine = readFileSync(`${hostKeyPath}.pub`, "utf8").trim().split(" ").slice(0, 2).join(" ")
  return {
    label: name,
    port,
    pid: sshd.pid,
    hostKeyLine,
    username: userInfo().username,
    // The forced command ignores what is asked for; exec is what `ssh host` sends with a command.
    channel: { exec: "mcp" },
    dir,
    helpers: await helpersOf(sshd.pid),
    process: sshd,
    logTail,
    // Connection processes outlive the listener: stopTracked ends everything below it too.
    stop: () => stopTracked(sshd, 5_000),
  }
}
