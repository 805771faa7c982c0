/** The real `node dist/client.js` as a child process, with its stdout kept byte for byte. */
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process"
import { join } from "node:path"
import { repoRoot } from "./gateway.js"
import { type Watchers, waitForMatch } from "./waiting.js"

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
  const watchers: Watchers = new Set()
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
      waitForMatch({
        watchers,
        find: () => messages().find(match),
        ended: () =>
          child.exitCode !== null || child.signalCode !== null
            ? `client exited without the message; stderr:\n${stderr}`
            : undefined,
        timeoutMs,
        timedOut: () => `no matching message within ${timeoutMs} ms; stderr:\n${stderr}`,
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
