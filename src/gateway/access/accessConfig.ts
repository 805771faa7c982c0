/**
 * The `access` object of servers_config.json: which identities may use which servers, tools and
 * prompts, and how much. Its Schema, the checks that need the rest of the config (a server or group
 * it names must exist), and its compiled form (globs as regular expressions, limits as numbers). Pure.
 */
import { Schema } from "effect"

/** `N/s`, `N/min` or `N/h`: N calls at once, refilled evenly over the period. */
const rateLimitPattern = /^([1-9][0-9]{0,8})\/(s|min|h)$/
const periodSeconds = { s: 1, min: 60, h: 3600 } as const

const RateLimitText = Schema.String.pipe(
  Schema.filter(
    (text) =>
      rateLimitPattern.test(text) || `'${text}' is not a rate: write N/s, N/min or N/h (such as 120/min)`,
  ),
)
const SessionCount = Schema.Int.pipe(
  Schema.greaterThanOrEqualTo(1, { message: () => "maxSessions must be a whole number of at least 1" }),
)
const Globs = Schema.Array(Schema.String)

/** What a group (or `default`, or one identity) may use. */
const ruleFields = {
  /** Config keys of servers, `*` and `?` globs. */
  servers: Schema.optionalWith(Globs, { exact: true }),
  /** Tool and prompt names as the client sees them (after prefixing); absent: all of the servers'. */
  allow: Schema.optionalWith(Globs, { exact: true }),
  /** Names never available, whatever another rule allows. */
  deny: Schema.optionalWith(Globs, { exact: true }),
  rateLimit: Schema.optionalWith(RateLimitText, { exact: true }),
  maxSessions: Schema.optionalWith(SessionCount, { exact: true }),
}
export const AccessRule = Schema.Struct(ruleFields)
export type AccessRule = typeof AccessRule.Type

export const IdentityRule = Schema.Struct({
  ...ruleFields,
  /** Groups this identity is in, besides those its key or certificate brings. */
  groups: Schema.optionalWith(Schema.Array(Schema.String), { exact: true }),
})
export type IdentityRule = typeof IdentityRule.Type

export const AccessSection = Schema.Struct({
  /** For identities in no group. */
  default: Schema.optionalWith(AccessRule, { exact: true }),
  groups: Schema.optionalWith(Schema.Record({ key: Schema.String, value: AccessRule }), { exact: true }),
  identities: Schema.optionalWith(Schema.Record({ key: Schema.String, value: IdentityRule }), {
    exact: true,
  }),
})
export type AccessSection = typeof AccessSection.Type

export interface RateLimit {
  /** As written, for messages. */
  readonly text: string
  /** Calls that may come at once. */
  readonly capacity: number
  readonly refillPerSecond: number
}

export const parseRateLimit = (text: string): RateLimit | undefined => {
  const match = rateLimitPattern.exec(text)
  if (match === null) return undefined
  const count = Number(match[1])
  const period = periodSeconds[match[2] as keyof typeof periodSeconds]
  return { text, capacity: count, refillPerSecond: count / period }
}

const hasGlob = (pattern: string) => /[*?]/.test(pattern)
const escapeRegex = (text: string) => text.replace(/[.+^${}()|[\]\\]/g, "\\$&")

/** One expression for a list of `*`/`?` globs, each matching a whole name; undefined for none. */
export const globsToRegExp = (globs: ReadonlyArray<string> | undefined): RegExp | undefined => {
  if (globs === undefined || globs.length === 0) return undefined
  const alternatives = globs.map((glob) =>
    [...glob].map((char) => (char === "*" ? ".*" : char === "?" ? "." : escapeRegex(char))).join(""),
  )
  return new RegExp(`^(?:${alternatives.join("|")})$`)
}

/** Tool and prompt names as the client sees them keep to this alphabet (naming.ts). */
const nameGlob = /^[A-Za-z0-9_*?-]+$/

export interface AccessCheck {
  /** Each stops the start (or refuses a reload), naming the path. */
  readonly problems: ReadonlyArray<string>
  /** Each is logged; the config is still used. */
  readonly warnings: ReadonlyArray<string>
}

/**
 * What the Schema cannot see: servers and groups the policy names must exist. `serverKeys` are the
 * keys of `mcpServers`, disabled ones included (disabling a server must not break the policy).
 */
export const checkAccess = (access: AccessSection, serverKeys: ReadonlyArray<string>): AccessCheck => {
  const problems: Array<string> = []
  const warnings: Array<string> = []
  const groups = new Set(Object.keys(access.groups ?? {}))
  const checkRule = (path: string, rule: AccessRule) => {
    for (const [index, pattern] of (rule.servers ?? []).entries()) {
      const at = `${path}.servers[${index}]`
      if (!hasGlob(pattern)) {
        if (!serverKeys.includes(pattern)) problems.push(`${at}: no server '${pattern}'`)
      } else if (!serverKeys.some((key) => globsToRegExp([pattern])?.test(key))) {
        warnings.push(`${at}: '${pattern}' matches no server`)
      }
    }
    for (const field of ["allow", "deny"] as const) {
      for (const [index, pattern] of (rule[field] ?? []).entries()) {
        if (!nameGlob.test(pattern)) {
          problems.push(
            `${path}.${field}[${index}]: '${pattern}' can never match a tool or prompt name (letters, digits, '_' and '-', with '*' and '?')`,
          )
        }
      }
    }
    if (rule.allow !== undefined && (rule.servers ?? []).length === 0) {
      warnings.push(`${path}.allow: without 'servers' it allows nothing`)
    }
  }
  if (access.default !== undefined) checkRule("access.default", access.default)
  for (const [name, rule] of Object.entries(access.groups ?? {})) checkRule(`access.groups.${name}`, rule)
  for (const [name, rule] of Object.entries(access.identities ?? {})) {
    const path = `access.identities.${name}`
    checkRule(path, rule)
    for (const [index, group] of (rule.groups ?? []).entries()) {
      if (!groups.has(group)) problems.push(`${path}.groups[${index}]: no group '${group}'`)
    }
  }
  return { problems, warnings }
}

/** A rule ready to apply: globs compiled once, when the config is loaded. */
export interface CompiledRule {
  /** Where it comes from, for the session's log and to tell one view from another. */
  readonly label: string
  readonly source: AccessRule
  readonly servers: RegExp | undefined
  readonly allow: RegExp | undefined
  readonly deny: RegExp | undefined
  readonly rateLimit: RateLimit | undefined
  readonly maxSessions: number | undefined
}

export interface AccessPolicy {
  readonly default: CompiledRule | undefined
  readonly groups: ReadonlyMap<string, CompiledRule>
  readonly identities: ReadonlyMap<string, CompiledRule & { readonly groups: ReadonlyArray<string> }>
}

const compileRule = (label: string, rule: AccessRule): CompiledRule => ({
  label,
  source: rule,
  servers: globsToRegExp(rule.servers),
  allow: rule.allow === undefined ? undefined : (globsToRegExp(rule.allow) ?? /$^/),
  deny: globsToRegExp(rule.deny),
  rateLimit: rule.rateLimit === undefined ? undefined : parseRateLimit(rule.rateLimit),
  maxSessions: rule.maxSessions,
})

/** What a policy says, as text: two policies that say the same give the same text (reloads compare). */
export const describeAccess = (policy: AccessPolicy | undefined): string =>
  policy === undefined
    ? "none"
    : JSON.stringify({
        default: policy.default?.source,
        groups: [...policy.groups].map(([name, rule]) => [name, rule.source]),
        identities: [...policy.identities].map(([name, rule]) => [name, rule.source]),
      })

/** Compile a checked `access` object. */
export const compileAccess = (access: AccessSection): AccessPolicy => ({
  default: access.default === undefined ? undefined : compileRule("default", access.default),
  groups: new Map(
    Object.entries(access.groups ?? {}).map(([name, rule]) => [name, compileRule(`group ${name}`, rule)]),
  ),
  identities: new Map(
    Object.entries(access.identities ?? {}).map(([name, rule]) => [
      name,
      { ...compileRule(`identity ${name}`, rule), groups: rule.groups ?? [] },
    ]),
  ),
})
