/**
 * The access policy in the real gateway over SSH: two keys see different tool lists, a call across
 * the line fails as an unknown name does, a server it may not use is an unknown server, a bad policy
 * is refused at reload, and a policy edit reaches a live session.
 *
 * The identities are listed both by key fingerprint (the identity today) and by key comment (the
 * identity once key lines carry them, without `mcp-identity`), so the test holds either way.
 */
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { fingerprintOf } from "../src/shared/publicKey.js"
import {
  type ClientKey,
  disposeGateway,
  makeKey,
  node,
  type RunningGateway,
  type ServerEntry,
  startGateway,
  tempDir,
} from "./support/gateway.js"
import { signalProcess } from "./support/processes.js"
import { callTool as call, openSession, toolNames } from "./support/ssh.js"

const mini = (tag: string): ServerEntry => node("mini-server.mjs", "normal", tag)
const servers = { alpha: mini("alpha"), beta: mini("beta") }

let gateway: RunningGateway | undefined
afterEach(async () => {
  await disposeGateway(gateway)
  gateway = undefined
})

const fingerprint = (key: ClientKey) =>
  fingerprintOf(Buffer.from(key.publicLine.split(" ")[1] ?? "", "base64"))

/** The identity of a key both ways: its fingerprint, and its comment. */
const identitiesOf = (key: ClientKey, groups: Array<string>) => ({
  [fingerprint(key)]: { groups },
  [key.publicLine.split(" ")[2] ?? ""]: { groups },
})

/** Replace the config as editors do, ask for a reload, and wait for a log line of its outcome. */
const reloadWith = async (running: RunningGateway, config: unknown, outcome: RegExp) => {
  const path = join(running.dir, "servers_config.json")
  writeFileSync(`${path}.new`, JSON.stringify(config))
  renameSync(`${path}.new`, path)
  signalProcess(running.pid, "SIGHUP")
  const until = Date.now() + 15_000
  while (Date.now() < until) {
    const matching = running
      .log()
      .split("\n")
      .filter((line) => outcome.test(line))
    if (matching.length > 0) return matching.at(-1) ?? ""
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`no reload outcome ${outcome} in:\n${running.log()}`)
}

describe("access policy over SSH", () => {
  it("two keys see different tools; calls across the line fail as unknown; edits reach a live session", async () => {
    const keysDir = tempDir()
    const ciKey = makeKey(keysDir, "ci", "ed25519", "ci-runner@test")
    gateway = await startGateway({ servers, authorizedLines: [ciKey.publicLine] })
    const running = gateway
    const asCi = { privateKey: readFileSync(ciKey.privatePath) }
    const access = (dev: Record<string, unknown>) => ({
      mcpServers: servers,
      access: {
        default: { servers: [] },
        groups: { dev, ci: { servers: ["alpha"], allow: ["alpha__echo"] } },
        identities: {
          ...identitiesOf(running.clientKey, ["dev"]),
          ...identitiesOf(ciKey, ["ci"]),
        },
      },
    })

    // A policy naming a server that does not exist is refused; the running config stays.
    const bad = access({ servers: ["*"] })
    await reloadWith(
      running,
      { ...bad, access: { ...bad.access, groups: { ...bad.access.groups, ci: { servers: ["gihub"] } } } },
      /refused; the running config stays.*access\.groups\.ci\.servers\[0\]: no server 'gihub'/,
    )
    await reloadWith(running, access({ servers: ["*"] }), /config reloaded/)

    const dev = await openSession(running, "")
    await dev.initialize()
    const ci = await openSession(running, "", asCi)
    await ci.initialize()
    expect(await toolNames(dev, "d1")).toEqual([
      "alpha__echo",
      "alpha__env",
      "alpha__sleep",
      "alpha__updated",
      "beta__echo",
      "beta__env",
      "beta__sleep",
      "beta__updated",
    ])
    expect(await toolNames(ci, "c1")).toEqual(["alpha__echo"])
    expect(await call(ci, "c2", "alpha__echo", { message: "hi" })).toMatchObject({
      result: { content: [{ text: "hi" }] },
    })
    for (const name of ["alpha__env", "beta__echo", "alpha__no_such_tool"]) {
      expect(await call(ci, name, name)).toEqual({
        jsonrpc: "2.0",
        id: name,
        error: { code: -32602, message: `Unknown tool: ${name}` },
      })
    }
    const ciOnBeta = await openSession(running, "beta", asCi)
    expect(await ciOnBeta.exit).toBe(1)
    expect(ciOnBeta.stderr).toBe("mcp-ssh: unknown server(s): beta; available: alpha\n")

    // dev loses alpha while a call to it is in flight: list_changed, the call finishes, then alpha is unknown.
    dev.send({
      jsonrpc: "2.0",
      id: "slow",
      method: "tools/call",
      params: { name: "alpha__sleep", arguments: { ms: 1000 } },
    })
    await new Promise((resolve) => setTimeout(resolve, 200))
    await reloadWith(running, access({ servers: ["beta"] }), /access policy changed for identity/)
    expect(running.log()).toMatch(
      /config reloaded \((SIGHUP|servers_config\.json changed)\): no server changed; the access policy changed/,
    )
    await dev.waitFor((message) => message.method === "notifications/tools/list_changed")
    expect(await toolNames(dev, "d2")).toEqual(["beta__echo", "beta__env", "beta__sleep", "beta__updated"])
    expect(await dev.response("slow")).toMatchObject({ result: { content: [{ text: "slept" }] } })
    expect(await call(dev, "d3", "alpha__echo", { message: "x" })).toMatchObject({
      error: { code: -32602, message: "Unknown tool: alpha__echo" },
    })
    // ci's view did not change.
    expect(ci.messages.some((message) => message.method === "notifications/tools/list_changed")).toBe(false)
    dev.channel.end()
    ci.channel.end()
    rmSync(keysDir, { recursive: true, force: true })
  }, 60_000)
})
