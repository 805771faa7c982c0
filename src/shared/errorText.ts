/** One line for a caught value, for messages people read. */
export const errorText = (error: unknown): string => {
  if (!(error instanceof Error)) return String(error)
  // fetch() says "fetch failed" and keeps the reason (ECONNREFUSED, a TLS error...) as its cause.
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : ""
  return `${error.message}${cause}`
}
