/** The real `node dist/client.js` as a child process, with its stdout kept byte for byte. */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process"
import { join } from "node:path"
import { repoRoot } from "./gateway.js"

export const clientScript = join(repoRoot, "dist/client.js")

export interface RunningClient {
  readonly process: ChildProcessWithoutNullStreams
  /** Everything written to stdout so far, as bytes. */
  readonly stdout: () => Buffer
  readonly stderr: () => string
  /** stdout's complete lines, parsed. */
  readonly messages: () => Array<Record<string, unknown>>
  readonly send: (message: Record<string, unknown> | string) => void
  /** Resolves with the first message (seen so far or to come) that matches. */
  readonly waitFor: (
    match: (message: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ) => Promise<Record<string, unknown>>
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

/** Start the client with `args`; HOME is always given, so no test touches the real ~/.ssh. */
export const startClient = (args: ReadonlyArray<string>, home: string): RunningClient => {
  const child = spawn(process.execPath, [clientScript, ...args], {
    stdio: ["pipe", "pipe", "pipe"],
    env: { ...process.env, HOME: home },
  })
  const chunks: Array<Buffer> = []
  let stderr = ""
  const watchers = new Set<() => void>()
  child.stdout.on("data", (chunk: Buffer) => {
    chunks.push(chunk)
    for (const watcher of watchers) watcher()
  })
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8")
  })
  // The client may exit before reading what we sent; that is not an error here.
  child.stdin.on("error", () => {})
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("close", (code, signal) => {
      for (const watcher of watchers) watcher()
      resolve({ code, signal })
    }),
  )
  const stdout = () => Buffer.concat(chunks)
  const messages = () =>
    stdout()
      .toString("utf8")
      .split("\n")
      .slice(0, -1)
      .filter((line) => line.trim() !== "")
      .map((line) => JSON.parse(line) as Record<string, unknown>)
  return {
    process: child,
    stdout,
    stderr: () => stderr,
    messages,
    send: (message) =>
      child.stdin.write(typeof message === "string" ? message : `${JSON.stringify(message)}\n`),
    waitFor: (match, timeoutMs = 10_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          const found = messages().find(match)
          if (found !== undefined) {
            cleanup()
            resolve(found)
          } else if (child.exitCode !== null || child.signalCode !== null) {
            cleanup()
            reject(new Error(`client exited without the message; stderr:\n${stderr}`))
          }
        }
        const timer = setTimeout(() => {
          cleanup()
          reject(new Error(`no matching message within ${timeoutMs} ms; stderr:\n${stderr}`))
        }, timeoutMs)
        const cleanup = () => {
          clearTimeout(timer)
          watchers.delete(check)
        }
        watchers.add(check)
        check()
      }),
    exited,
  }
}

export const initializeRequest = (id: number | string = "init") => ({
  jsonrpc: "2.0",
  id,
  method: "initialize",
  params: {
    protocolVersion: "2025-06-18",
    capabilities: {},
    clientInfo: { name: "mcp-ssh-client-tests", version: "1" },
  },
})
