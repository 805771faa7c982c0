/** Every merged list is paged across the children with one opaque cursor. */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import {
  type FakeServerScript,
  startGateway,
  type TestClient,
  type WireMessage,
} from "../support/inprocess/index.js"

/** As many tools as a reference server lists, on one page. */
const referenceTools = [
  "echo",
  "get-sum",
  "get-env",
  "get-tiny-image",
  "get-annotated-message",
  "get-resource-links",
  "get-resource-reference",
  "get-structured-content",
  "toggle-logging",
  "toggle-subscriber-updates",
  "trigger-long-running-operation",
  "trigger-sampling-request",
].map((name) => ({ name }))
const reference: FakeServerScript = { tools: referenceTools }
const paged: FakeServerScript = {
  tools: ["echo", "env", "sleep", "updated"].map((name) => ({ name })),
  pageSize: 1,
}

interface Page {
  readonly items: ReadonlyArray<string>
  readonly nextCursor: string | undefined
}

/** Follow the cursors of a list to its end, one request per page. */
const allPages = (
  client: TestClient,
  method: string,
  itemsKey: string,
  key: "name" | "uri" | "uriTemplate",
) =>
  Effect.gen(function* () {
    const pages: Array<Page> = []
    let cursor: string | undefined
    for (let page = 1; page < 100; page++) {
      const response = yield* client.request(
        `${method} ${page}`,
        method,
        cursor === undefined ? {} : { cursor },
      )
      const result = response.result as Record<string, unknown>
      const items = (result[itemsKey] as Array<WireMessage>).map((item) => String(item[key]))
      cursor = typeof result.nextCursor === "string" ? result.nextCursor : undefined
      pages.push({ items, nextCursor: cursor })
      if (cursor === undefined) break
    }
    return pages
  })

describe("pagination", () => {
  it.scopedLive("pages tools across children with one cursor, every tool exactly once", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { alpha: reference, beta: reference, paged } })
      const client = yield* gateway.connect()
      yield* client.initialize()
      const pages = (yield* allPages(client, "tools/list", "tools", "name")).map((page) => page.items)
      const names = pages.flat()
      expect(new Set(names).size).toBe(names.length)
      // alpha's page, beta's page, then the paged child one tool at a time.
      expect(pages.length).toBeGreaterThanOrEqual(6)
      expect(names).toEqual(
        expect.arrayContaining(["alpha__echo", "beta__echo", "paged__echo", "paged__sleep"]),
      )
      const alpha = names.filter((name) => name.startsWith("alpha__")).map((name) => name.slice(7))
      const beta = names.filter((name) => name.startsWith("beta__")).map((name) => name.slice(6))
      expect(alpha.sort()).toEqual(beta.sort())
      expect(names).toHaveLength(2 * referenceTools.length + 4)
    }),
  )

  it.scopedLive("pages prompts, resources and templates alike, each child through its own pages", () =>
    Effect.gen(function* () {
      const lists: FakeServerScript = {
        prompts: ["one", "two", "three"].map((name) => ({ name })),
        resources: ["a", "b", "c"].map((name) => ({ uri: `list://${name}` })),
        resourceTemplates: ["x", "y", "z"].map((name) => ({ uriTemplate: `${name}://{id}` })),
        pageSize: 2,
      }
      const gateway = yield* startGateway({ servers: { first: lists, second: lists } })
      const client = yield* gateway.connect()
      yield* client.initialize()
      const prompts = yield* allPages(client, "prompts/list", "prompts", "name")
      expect(prompts.map((page) => page.items)).toEqual([
        ["first__one", "first__two"],
        ["first__three"],
        ["second__one", "second__two"],
        ["second__three"],
      ])
      // Resources keep their URIs, so both children's pages carry the same ones.
      const resources = yield* allPages(client, "resources/list", "resources", "uri")
      expect(resources.map((page) => page.items)).toEqual([
        ["list://a", "list://b"],
        ["list://c"],
        ["list://a", "list://b"],
        ["list://c"],
      ])
      const templates = yield* allPages(
        client,
        "resources/templates/list",
        "resourceTemplates",
        "uriTemplate",
      )
      expect(templates.flatMap((page) => page.items)).toEqual([
        "x://{id}",
        "y://{id}",
        "z://{id}",
        "x://{id}",
        "y://{id}",
        "z://{id}",
      ])
    }),
  )

  it.scopedLive(
    "passes over children with an empty list or without the list, so only the last page is empty",
    () =>
      Effect.gen(function* () {
        const gateway = yield* startGateway({
          servers: {
            empty: { tools: [] },
            first: { tools: [{ name: "x" }] },
            promptsOnly: { prompts: [{ name: "p" }] },
            alsoEmpty: { tools: [] },
            last: { tools: [{ name: "y" }, { name: "z" }], pageSize: 1 },
            trailingEmpty: { tools: [] },
          },
        })
        const client = yield* gateway.connect()
        yield* client.initialize()
        const pages = yield* allPages(client, "tools/list", "tools", "name")
        expect(pages.flatMap((page) => page.items)).toEqual(["first__x", "last__y", "last__z"])
        // A child with nothing to list makes no page of its own: only the very last page may be empty.
        expect(pages.slice(0, -1).filter((page) => page.items.length === 0)).toEqual([])
      }),
  )

  it.scopedLive("refuses a cursor it did not make, and one naming a server not in the session", () =>
    Effect.gen(function* () {
      const gateway = yield* startGateway({ servers: { alpha: reference, paged } })
      const client = yield* gateway.connect({ selection: ["paged"] })
      yield* client.initialize()
      expect(yield* client.request(1, "tools/list", { cursor: "not-a-cursor" })).toMatchObject({
        error: { code: -32602, message: expect.stringMatching(/cursor/) },
      })
      // A cursor of the right form, for alpha, which this session does not serve.
      const foreign = Buffer.from(JSON.stringify(["alpha"])).toString("base64url")
      expect(yield* client.request(2, "tools/list", { cursor: foreign })).toMatchObject({
        error: { code: -32602, message: expect.stringMatching(/cursor/) },
      })
      const first = yield* client.request(3, "tools/list")
      const nextCursor = (first.result as { nextCursor: string }).nextCursor
      // A cursor of one list is not one of another.
      expect(yield* client.request(4, "prompts/list", { cursor: nextCursor })).toMatchObject({
        result: { prompts: [] },
      })
    }),
  )
})
