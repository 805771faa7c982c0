/**
 * The merged lists (tools, prompts, resources, resource templates) and their pagination: one opaque
 * cursor across the children, a page of one child at a time, children with an empty page passed
 * over so that a page is empty only at the end. A child that cannot list now is left out of that
 * page, not allowed to break the list.
 */
import { Effect } from "effect"
import { isObject, type JsonRpcRequest } from "../../shared/jsonRpc.js"
import { listAll } from "../children/Catalog.js"
import type { SupervisedChild } from "../children/ChildSupervisor.js"
import type { SessionChildren } from "./children.js"
import { decodeCursor, encodeCursor, type MergedCursor } from "./cursor.js"
import type { Forward } from "./forward.js"
import { type MergedListMethod, mergedLists } from "./mcp.js"
import type { RoutingTable } from "./routing.js"
import { invalidParams, ok, type Routed, stringParam } from "./types.js"

export interface MergedLists {
  readonly page: (request: JsonRpcRequest, method: MergedListMethod) => Effect.Effect<Routed>
  /** List everything of a kind from every child, so a name or URI not seen yet can be routed. */
  readonly refresh: (method: MergedListMethod) => Effect.Effect<void>
}

export const makeMergedLists = (
  children: SessionChildren,
  routing: RoutingTable,
  forward: Forward,
  log: (effect: Effect.Effect<void>) => Effect.Effect<void>,
): MergedLists => {
  const lists = (child: SupervisedChild | undefined, method: MergedListMethod) =>
    child !== undefined && children.hasCapability(child, mergedLists[method].capability)

  /** Index a page in the routing table and warn of entries hidden by a name another server has. */
  const indexPage = (method: MergedListMethod, child: SupervisedChild, items: ReadonlyArray<unknown>) => {
    const indexed = routing.indexPage(method, child.server, items)
    return Effect.forEach(indexed.hidden, (warning) => log(Effect.logWarning(warning)), {
      discard: true,
    }).pipe(Effect.as(indexed.items))
  }

  /** The first child after `index` that has this list, as a cursor position. */
  const after = (
    current: ReadonlyArray<SupervisedChild>,
    index: number,
    method: MergedListMethod,
  ): MergedCursor | undefined => {
    const following = current.slice(index + 1).find((child) => lists(child, method))
    return following === undefined ? undefined : { server: following.server.name, cursor: undefined }
  }

  const page = (request: JsonRpcRequest, method: MergedListMethod) =>
    Effect.gen(function* () {
      const spec = mergedLists[method]
      const cursorText = stringParam(request.params, "cursor")
      const start = cursorText === undefined ? undefined : decodeCursor(cursorText)
      const unknownCursor = invalidParams(request.id, `Invalid params: unknown cursor for ${method}`)
      if (cursorText !== undefined && start === undefined) return unknownCursor
      // One page sees one set of servers, though a reload may change it before the next page.
      const current = children.all
      const order = current.map((child) => child.server.name)
      let position: MergedCursor = start ?? { server: order[0] ?? "", cursor: undefined }
      let index = order.indexOf(position.server)
      if (index === -1) return unknownCursor
      while (index < order.length) {
        const child = current[index]
        if (child === undefined || !lists(child, method)) {
          index++
          position = { server: order[index] ?? "", cursor: undefined }
          continue
        }
        const { cursor: _dropped, ...otherParams } = request.params ?? {}
        const params =
          position.cursor === undefined ? otherParams : { ...otherParams, cursor: position.cursor }
        const response = yield* forward(child.server.name, { ...request, params })
        const result = response.result
        if (!isObject(result)) {
          yield* log(
            Effect.logWarning(
              `server '${child.server.name}' failed ${method}: ${response.error?.message ?? "no result"}`,
            ),
          )
          const following = after(current, index, method)
          if (following === undefined) return { response: ok(request.id, { [spec.items]: [] }) }
          index = order.indexOf(following.server)
          position = following
          continue
        }
        const items = Array.isArray(result[spec.items]) ? (result[spec.items] as ReadonlyArray<unknown>) : []
        const transformed = yield* indexPage(method, child, items)
        const childNext =
          typeof result.nextCursor === "string" && result.nextCursor !== "" ? result.nextCursor : undefined
        const following =
          childNext === undefined
            ? after(current, index, method)
            : { server: child.server.name, cursor: childNext }
        if (transformed.length > 0 || following === undefined) {
          const { nextCursor: _childCursor, ...rest } = result
          return {
            response: ok(request.id, {
              ...rest,
              [spec.items]: transformed,
              ...(following === undefined ? {} : { nextCursor: encodeCursor(following) }),
            }),
          } satisfies Routed
        }
        index = order.indexOf(following.server)
        position = following
      }
      return { response: ok(request.id, { [spec.items]: [] }) } satisfies Routed
    })

  const refresh = (method: MergedListMethod) =>
    Effect.forEach(
      children.all.filter((child) => lists(child, method)),
      (child) => {
        const ready = children.ready(child.server.name)
        if (ready === undefined) return Effect.void
        return listAll(ready.connection, method, mergedLists[method].items).pipe(
          Effect.flatMap((items) => indexPage(method, child, items)),
          Effect.ignore,
        )
      },
      { discard: true, concurrency: "unbounded" },
    )

  return { page, refresh }
}
