/**
 * One opaque cursor over the lists of several servers: which server the next page comes from, and
 * that server's own cursor. Following it visits every server in order, each through its own pages.
 */

export interface MergedCursor {
  readonly server: string
  readonly cursor: string | undefined
}

export const encodeCursor = (position: MergedCursor): string =>
  Buffer.from(
    JSON.stringify(position.cursor === undefined ? [position.server] : [position.server, position.cursor]),
  ).toString("base64url")

/** undefined when the text is not a cursor this gateway made. */
export const decodeCursor = (text: string): MergedCursor | undefined => {
  try {
    const value: unknown = JSON.parse(Buffer.from(text, "base64url").toString("utf8"))
    if (!Array.isArray(value) || typeof value[0] !== "string") return undefined
    if (value.length === 1) return { server: value[0], cursor: undefined }
    if (value.length === 2 && typeof value[1] === "string") return { server: value[0], cursor: value[1] }
    return undefined
  } catch {
    return undefined
  }
}
