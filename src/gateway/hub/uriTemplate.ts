/**
 * Matching a URI against an RFC 6570 template, as far as routing needs: does this URI belong to the
 * server that published the template? Expressions match one path segment (`{x}`), any text (`{+x}`,
 * `{#x}`), or an optional query part (`{?x,y}`, `{&x}`).
 */

const escapeRegex = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")

export const templateMatcher = (template: string): RegExp => {
  let pattern = ""
  let last = 0
  for (const match of template.matchAll(/\{([^}]*)\}/g)) {
    pattern += escapeRegex(template.slice(last, match.index))
    const operator = match[1]?.[0] ?? ""
    if (operator === "+" || operator === "#") pattern += ".*"
    else if (operator === "?" || operator === "&") pattern += "(?:[?&].*)?"
    else if (operator === "/") pattern += "(?:/[^?#]*)?"
    else if (operator === ".") pattern += "(?:\\.[^/?#]*)?"
    else if (operator === ";") pattern += "(?:;[^/?#]*)?"
    else pattern += "[^/?#]+"
    last = (match.index ?? 0) + match[0].length
  }
  pattern += escapeRegex(template.slice(last))
  return new RegExp(`^${pattern}$`)
}
