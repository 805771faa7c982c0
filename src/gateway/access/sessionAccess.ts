/**
 * What one identity may use under a policy: decided when a session's view is built (at open, and
 * again when a reload changes the policy), never per call. Pure.
 *
 * - An identity's groups are those its key or certificate brings plus `identities.<name>.groups`.
 *   It gets the rules of those groups, plus `identities.<name>`; with no group at all, `default`.
 *   A group the policy does not define grants nothing (a typo must not widen access to `default`).
 * - A server is usable when any of those rules names it. A tool or prompt is usable when a rule
 *   that names its server allows it (no `allow`: every name), and no rule denies it: deny beats allow.
 * - Limits: `identities.<name>` decides when it sets one; else the most generous of the rules that
 *   grant servers, where a rule without the limit means none.
 */
import type { AccessPolicy, CompiledRule, RateLimit } from "./accessConfig.js"

export interface Who {
  readonly identity: string
  readonly groups: ReadonlyArray<string>
}

export interface SessionAccess {
  /** The same text for the same effective rules: tells a session whether a reload changed its view. */
  readonly key: string
  readonly server: (name: string) => boolean
  /** A tool or prompt of `server` under the name the client sees. */
  readonly name: (server: string, exposed: string) => boolean
  readonly rateLimit: RateLimit | undefined
  readonly maxSessions: number | undefined
  /** Groups of the identity that the policy does not define (they grant nothing). */
  readonly undefinedGroups: ReadonlyArray<string>
}

/** No `access` object: everything, without limits (configs written before it keep working). */
export const unrestricted: SessionAccess = {
  key: "unrestricted",
  server: () => true,
  name: () => true,
  rateLimit: undefined,
  maxSessions: undefined,
  undefinedGroups: [],
}

const mostGenerous = <A>(
  rules: ReadonlyArray<CompiledRule>,
  pick: (rule: CompiledRule) => A | undefined,
  size: (value: A) => number,
): A | undefined => {
  let best: A | undefined
  for (const rule of rules) {
    const value = pick(rule)
    if (value === undefined) return undefined
    if (best === undefined || size(value) > size(best)) best = value
  }
  return best
}

export const resolveAccess = (policy: AccessPolicy | undefined, who: Who): SessionAccess => {
  if (policy === undefined) return unrestricted
  const own = policy.identities.get(who.identity)
  const groups = [...new Set([...who.groups, ...(own?.groups ?? [])])]
  const rules: Array<CompiledRule> = []
  const undefinedGroups: Array<string> = []
  for (const group of groups) {
    const rule = policy.groups.get(group)
    if (rule === undefined) undefinedGroups.push(group)
    else rules.push(rule)
  }
  if (groups.length === 0 && policy.default !== undefined) rules.push(policy.default)
  if (own !== undefined) rules.push(own)

  const granting = rules.filter((rule) => rule.servers !== undefined && rule !== own)
  const limits = own !== undefined && own.servers !== undefined ? [...granting, own] : granting
  const rateLimit =
    own?.rateLimit ??
    mostGenerous(
      limits,
      (rule) => rule.rateLimit,
      (rate) => rate.refillPerSecond,
    )
  const maxSessions =
    own?.maxSessions ??
    mostGenerous(
      limits,
      (rule) => rule.maxSessions,
      (count) => count,
    )
  const denies = rules.flatMap((rule) => (rule.deny === undefined ? [] : [rule.deny]))
  return {
    key: JSON.stringify(rules.map((rule) => [rule.label, rule.source])),
    server: (name) => rules.some((rule) => rule.servers?.test(name) === true),
    name: (server, exposed) =>
      !denies.some((deny) => deny.test(exposed)) &&
      rules.some(
        (rule) =>
          rule.servers?.test(server) === true && (rule.allow === undefined || rule.allow.test(exposed)),
      ),
    rateLimit,
    maxSessions,
    undefinedGroups,
  }
}
