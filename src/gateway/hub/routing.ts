/**
 * The routing table of one session: which child owns each merged tool and prompt name, each listed
 * resource URI, each resource template and each task. Synchronous, and changed only through its
 * methods: names, URIs and templates from the pages the children list, tasks from the results that
 * announce them. Every path (fast and slow) reads this one copy.
 */
import { isObject, type JsonObject } from "../../shared/jsonRpc.js"
import type { MergedListMethod } from "./mcp.js"
import { mergedLists } from "./mcp.js"
import { exposedName } from "./naming.js"
import type { Target } from "./types.js"
import { templateMatcher } from "./uriTemplate.js"

export type NamedKind = "tool" | "prompt"

/** The part of a server's config that naming needs. */
export interface NamedServer {
  readonly name: string
  readonly prefix?: string | undefined
}

interface OwnedTemplate {
  readonly template: string
  readonly matcher: RegExp
}

/** A page of a child's list as the client sees it, and the entries left out because a name was taken. */
export interface IndexedPage {
  readonly items: ReadonlyArray<unknown>
  readonly hidden: ReadonlyArray<string>
}

export class RoutingTable {
  private readonly names = { tool: new Map<string, Target>(), prompt: new Map<string, Target>() }
  private readonly resourceOwners = new Map<string, string>()
  private readonly templateOwners = new Map<string, Array<OwnedTemplate>>()
  private readonly taskOwners = new Map<string, string>()

  /**
   * Which tools and prompts the session may see (its access policy): the others are never indexed, so
   * calling one finds no route, exactly as an unknown name, and the fast path pays nothing for it.
   */
  private permits: (server: string, exposed: string) => boolean = () => true

  /** `order`: the session's servers in config order, which decides who serves a URI two templates match. */
  constructor(private order: ReadonlyArray<string>) {}

  /** The session's policy changed: forget names it may no longer use; names it gains come with the next list. */
  restrict(permits: (server: string, exposed: string) => boolean): void {
    this.permits = permits
    for (const names of Object.values(this.names)) {
      for (const [exposed, target] of names) if (!permits(target.server, exposed)) names.delete(exposed)
    }
  }

  /**
   * A reload changed the session's servers: forget what the retired ones owned (their names, URIs
   * and tasks route nowhere now; a new version lists afresh) and follow the new order.
   */
  retire(servers: ReadonlyArray<string>, order: ReadonlyArray<string>): void {
    this.order = order
    if (servers.length === 0) return
    const gone = new Set(servers)
    for (const names of Object.values(this.names)) {
      for (const [exposed, target] of names) if (gone.has(target.server)) names.delete(exposed)
    }
    for (const owners of [this.resourceOwners, this.taskOwners]) {
      for (const [key, server] of owners) if (gone.has(server)) owners.delete(key)
    }
    for (const server of gone) this.templateOwners.delete(server)
  }

  named(kind: NamedKind, exposed: string): Target | undefined {
    return this.names[kind].get(exposed)
  }

  /** The server that listed the URI, else the first (in config order) whose template matches it. */
  ownerOfUri(uri: string): string | undefined {
    const listed = this.resourceOwners.get(uri)
    if (listed !== undefined) return listed
    for (const server of this.order) {
      const templates = this.templateOwners.get(server) ?? []
      if (templates.some((entry) => entry.template === uri || entry.matcher.test(uri))) return server
    }
    return undefined
  }

  taskOwner(taskId: string): string | undefined {
    return this.taskOwners.get(taskId)
  }

  noteTask(taskId: string | undefined, server: string): void {
    if (taskId !== undefined) this.taskOwners.set(taskId, server)
  }

  /** Index one page of a child's list and give it back as the client sees it. */
  indexPage(method: MergedListMethod, server: NamedServer, items: ReadonlyArray<unknown>): IndexedPage {
    const kind = mergedLists[method].named
    if (kind !== undefined) return this.indexNamed(kind, server, items)
    this.indexResources(method, server.name, items)
    return { items, hidden: [] }
  }

  /** Rename tools or prompts; an entry whose merged name another server's entry has is left out. */
  private indexNamed(kind: NamedKind, server: NamedServer, items: ReadonlyArray<unknown>): IndexedPage {
    const out: Array<JsonObject> = []
    const hidden: Array<string> = []
    for (const item of items) {
      if (!isObject(item) || typeof item.name !== "string") continue
      const exposed = exposedName(server.name, server.prefix, item.name)
      if (!this.permits(server.name, exposed)) continue
      const owner = this.names[kind].get(exposed)
      if (owner !== undefined && (owner.server !== server.name || owner.name !== item.name)) {
        hidden.push(
          `${kind} '${item.name}' of server '${server.name}' is hidden: '${exposed}' is taken by server '${owner.server}'`,
        )
        continue
      }
      this.names[kind].set(exposed, { server: server.name, name: item.name })
      out.push({ ...item, name: exposed })
    }
    return { items: out, hidden }
  }

  private indexResources(method: MergedListMethod, server: string, items: ReadonlyArray<unknown>): void {
    for (const item of items) {
      if (!isObject(item)) continue
      if (method === "resources/list" && typeof item.uri === "string" && !this.resourceOwners.has(item.uri)) {
        this.resourceOwners.set(item.uri, server)
      }
      if (method === "resources/templates/list" && typeof item.uriTemplate === "string") {
        const owned = this.templateOwners.get(server) ?? []
        if (!owned.some((entry) => entry.template === item.uriTemplate)) {
          owned.push({ template: item.uriTemplate, matcher: templateMatcher(item.uriTemplate) })
          this.templateOwners.set(server, owned)
        }
      }
    }
  }
}
