/**
 * Enrollment tokens that carry an identity: `POST /admin/tokens {identity, groups}` and
 * `mcp-ssh-server tokens create --identity --groups` issue them; the key registered with one is
 * written with `mcp-identity` / `mcp-groups`, whatever the client sent, and logs in as that identity.
 */
import { execFileSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  disposeGateway,
  mainScript,
  makeKey,
  node,
  type RunningGateway,
  startGateway,
} from "./support/gateway.js"
import { connect, openLineChannel } from "./support/ssh.js"

const adminToken = "admin-token-for-tests-0123456789"

const post = async (gateway: RunningGateway, path: string, json: unknown, bearer: string) => {
  const response = await fetch(`${gateway.keyApiUrl}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${bearer}` },
    body: JSON.stringify(json),
  })
  return { status: response.status, body: (await response.json()) as Record<string, unknown> }
}

const cleanEnvironment = (): NodeJS.ProcessEnv =>
  Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("MCP_SSH_")))

describe("enrollment tokens with an identity", () => {
  let gateway: RunningGateway
  beforeAll(async () => {
    gateway = await startGateway({
      servers: { mini: node("mini-server.mjs") },
      keyApi: true,
      env: { MCP_SSH_ADMIN_TOKEN: adminToken },
    })
  })
  afterAll(() => disposeGateway(gateway))

  it("POST /admin/tokens with identity and groups: the registered key is written with them and logs in as them", async () => {
    const created = await post(
      gateway,
      "/admin/tokens",
      { identity: "ci-runner-7", groups: ["ci"] },
      adminToken,
    )
    expect(created.status).toBe(201)
    expect(created.body).toMatchObject({ identity: "ci-runner-7", groups: ["ci"] })
    const key = makeKey(gateway.dir, "runner", "ed25519", "whatever-the-client-says")
    const registered = await post(
      gateway,
      "/register",
      { client_pub_key: key.publicLine },
      String(created.body.token),
    )
    expect(registered.status).toBe(200)
    const [, blob] = key.publicLine.split(" ")
    expect(readFileSync(gateway.authorizedKeysPath, "utf8")).toContain(
      `mcp-identity="ci-runner-7",mcp-groups="ci" ssh-ed25519 ${blob}`,
    )
    const connection = await connect(gateway, { privateKey: readFileSync(key.privatePath) })
    const channel = await openLineChannel(connection, { exec: "mini" })
    expect(await channel.request(1, "ping")).toMatchObject({ result: {} })
    connection.end()
    await gateway.waitForLog(
      /audit=true client=SHA256:\S+ identity=ci-runner-7 groups=ci server=gateway method=ping/,
    )
    const listed = await fetch(`${gateway.keyApiUrl}/admin/keys`, {
      headers: { authorization: `Bearer ${adminToken}` },
    })
    const { keys } = (await listed.json()) as { keys: Array<Record<string, unknown>> }
    expect(keys).toContainEqual(
      expect.objectContaining({
        identity: "ci-runner-7",
        groups: ["ci"],
        kind: "key",
        options: 'mcp-identity="ci-runner-7",mcp-groups="ci"',
      }),
    )
  })

  it("refuses names that could not be written as options, and a key that brings its own options", async () => {
    for (const body of [{ identity: 'x",command="sh' }, { groups: ["ci", "no spaces"] }, { identity: "" }]) {
      const refused = await post(gateway, "/admin/tokens", body, adminToken)
      expect(refused.status, JSON.stringify(body)).toBe(400)
    }
    const created = await post(gateway, "/admin/tokens", { identity: "someone" }, adminToken)
    const key = makeKey(gateway.dir, "sneaky", "ed25519")
    const withOptions = await post(
      gateway,
      "/register",
      { client_pub_key: `mcp-groups="admin" ${key.publicLine}` },
      String(created.body.token),
    )
    expect(withOptions.status).toBe(400)
    expect(readFileSync(gateway.authorizedKeysPath, "utf8")).not.toContain('mcp-groups="admin"')
  })

  it("tokens create --identity --groups (offline) issues a token the running gateway honours", async () => {
    const token = execFileSync(
      process.execPath,
      [
        mainScript,
        "tokens",
        "create",
        "--identity",
        "deploy-bot",
        "--groups",
        "ci,deploy",
        "--authorized-clients",
        gateway.authorizedKeysPath,
      ],
      { env: cleanEnvironment() },
    )
      .toString()
      .trim()
    const key = makeKey(gateway.dir, "deploy", "ed25519")
    expect((await post(gateway, "/register", { client_pub_key: key.publicLine }, token)).status).toBe(200)
    expect(readFileSync(gateway.authorizedKeysPath, "utf8")).toContain(
      `mcp-identity="deploy-bot",mcp-groups="ci,deploy" ssh-ed25519`,
    )
    const listed = execFileSync(
      process.execPath,
      [mainScript, "keys", "list", "--authorized-clients", gateway.authorizedKeysPath],
      {
        env: cleanEnvironment(),
      },
    ).toString()
    expect(listed).toMatch(/SHA256:\S+\s+ssh-ed25519\s+deploy-bot\s+groups=ci,deploy\s/)
    expect(() =>
      execFileSync(
        process.execPath,
        [
          mainScript,
          "tokens",
          "create",
          "--groups",
          "bad group",
          "--authorized-clients",
          gateway.authorizedKeysPath,
        ],
        {
          env: cleanEnvironment(),
          stdio: "pipe",
        },
      ),
    ).toThrow(/groups: 'bad group' is not a group name/)
  })
})
