/**
 * The options prefix of an authorized_keys line, in OpenSSH's syntax (sshd(8) "AUTHORIZED_KEYS FILE
 * FORMAT", auth-options.c sshauthopt_parse), plus the gateway's own `mcp-identity` and `mcp-groups`.
 * A line whose options cannot all be honoured is skipped with a warning naming the option: access is
 * never broadened by ignoring a restriction.
 *
 * Option by option (names are case-insensitive, as in OpenSSH):
 * - honoured: `cert-authority`, `principals="a,b"` (cert-authority lines only), `from="pattern-list"`,
 *   `expiry-time="YYYYMMDD[HHMM[SS]][Z|UTC]"`, `restrict`, `mcp-identity="name"`, `mcp-groups="a,b"`;
 * - accepted with no effect, because nothing they govern is offered (no pty, forwarding, X11, agent,
 *   user rc, tunnels; children never get the client's environment; FIDO keys are not accepted):
 *   `[no-]pty`, `[no-]port-forwarding`, `[no-]agent-forwarding`, `[no-]X11-forwarding`, `[no-]user-rc`,
 *   `[no-]touch-required`, `no-verify-required`, `permitopen=`, `permitlisten=`, `tunnel=`,
 *   `environment=`;
 * - the line is skipped: `command=` (a restriction to one command that cannot be honoured here),
 *   `verify-required` (FIDO user verification, which the accepted key types cannot give: sshd refuses
 *   such a key too), any unknown option, a repeated single-valued option, or bad syntax.
 *
 * `expiry-time` is the gateway's local time unless it ends in `Z` or `UTC`, exactly as sshd reads it
 * (misc.c parse_absolute_time: mktime, or timegm with the suffix). The key stays valid through that
 * second, as in sshd (refused once now > expiry).
 */
import { Data, Either } from "effect"
import { isKeyProblem, type PublicKey, parsePublicKey } from "../../shared/publicKey.js"
import { type AddressPatternList, matchAddressPatterns, parseAddressPatterns } from "./addressPatterns.js"
import type { AcceptedCertificate } from "./certificate.js"

export interface KeyLineOptions {
  readonly certAuthority: boolean
  /** `mcp-identity`. */
  readonly identity: string | undefined
  /** `mcp-groups`, deduplicated, in order. */
  readonly groups: ReadonlyArray<string>
  readonly from: AddressPatternList | undefined
  /** `expiry-time`, seconds since the epoch (the earliest, when given twice, as sshd). */
  readonly expiresAt: number | undefined
  /** `principals` of a cert-authority line. */
  readonly principals: ReadonlyArray<string> | undefined
  readonly restrict: boolean
  /** Worth telling the admin, but not a reason to skip the line (hostname patterns in `from=`). */
  readonly warnings: ReadonlyArray<string>
}

export const noOptions: KeyLineOptions = {
  certAuthority: false,
  identity: undefined,
  groups: [],
  from: undefined,
  expiresAt: undefined,
  principals: undefined,
  restrict: false,
  warnings: [],
}

/** This line cannot be honoured as written: skip it and say why. */
export class SkipKeyLine extends Data.TaggedError("SkipKeyLine")<{
  /** The option at fault, when one is. */
  readonly option: string | undefined
  readonly reason: string
}> {
  override get message(): string {
    return this.option === undefined ? this.reason : `option '${this.option}': ${this.reason}`
  }
}

const harmlessFlags = new Set([
  "pty",
  "no-pty",
  "port-forwarding",
  "no-port-forwarding",
  "agent-forwarding",
  "no-agent-forwarding",
  "x11-forwarding",
  "no-x11-forwarding",
  "user-rc",
  "no-user-rc",
  "touch-required",
  "no-touch-required",
  "no-verify-required",
])
const harmlessValued = new Set(["permitopen", "permitlisten", "tunnel", "environment"])

/** Names: identities and groups appear in config keys and log lines. */
const identityPattern = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}$/
const groupPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/

/** Why this is not an identity name (`mcp-identity`), or undefined when it is one. */
export const identityNameProblem = (name: string): string | undefined =>
  identityPattern.test(name)
    ? undefined
    : `'${name}' is not a name (letters, digits and . _ @ + -, at most 64)`

/** Why this is not a group name (`mcp-groups`), or undefined when it is one. */
export const groupNameProblem = (name: string): string | undefined =>
  groupPattern.test(name) ? undefined : `'${name}' is not a group name (letters, digits and . _ -)`

/**
 * The options that give a key written by the gateway (an enrollment token's key) its identity and
 * groups; undefined when there are none. Callers check the names first (identityNameProblem...).
 */
export const formatIdentityOptions = (identity: string | undefined, groups: ReadonlyArray<string>) => {
  const options = [
    ...(identity === undefined ? [] : [`mcp-identity="${identity}"`]),
    ...(groups.length === 0 ? [] : [`mcp-groups="${groups.join(",")}"`]),
  ]
  return options.length === 0 ? undefined : options.join(",")
}

interface RawOption {
  readonly name: string
  readonly value: string | undefined
}

/**
 * Split the options text into name / dequoted value pairs. Values must be double-quoted; inside them
 * only `\"` is an escape (opt_dequote), so other backslashes are kept as they are.
 */
const scanOptions = (text: string): Either.Either<ReadonlyArray<RawOption>, SkipKeyLine> => {
  const options: Array<RawOption> = []
  const fail = (reason: string, option?: string) => Either.left(new SkipKeyLine({ option, reason }))
  let position = 0
  while (position < text.length) {
    const nameMatch = /^[^=,"\s]*/.exec(text.slice(position))
    const name = nameMatch?.[0] ?? ""
    if (name === "") return fail(`an option name is missing at character ${position + 1}`)
    position += name.length
    let value: string | undefined
    if (text[position] === "=") {
      position++
      if (text[position] !== '"') return fail("its value must be in double quotes", name)
      position++
      let collected = ""
      for (;;) {
        const char = text[position]
        if (char === undefined) return fail("its value has no closing quote", name)
        if (char === '"') break
        if (char === "\\" && text[position + 1] === '"') position++
        collected += text[position]
        position++
      }
      position++
      value = collected
    }
    options.push({ name, value })
    if (position === text.length) break
    if (text[position] !== ",") return fail(`unexpected '${text[position]}' after it`, name)
    position++
    if (position === text.length) return fail("the options end with a comma")
  }
  return Either.right(options)
}

const splitList = (value: string): Array<string> => value.split(",").map((entry) => entry.trim())

const daysInMonth = (year: number, month: number): number => new Date(Date.UTC(year, month, 0)).getUTCDate()

/** sshd's parse_absolute_time: YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, local unless `Z`/`UTC` follows. */
export const parseExpiryTime = (text: string): number | undefined => {
  const match = /^(\d{4})(\d{2})(\d{2})(?:(\d{2})(\d{2})(\d{2})?)?(z|utc)?$/i.exec(text)
  if (match === null) return undefined
  const [, y = "", mo = "", d = "", h = "0", mi = "0", s = "0", utc] = match
  const [year, month, day, hour, minute, second] = [y, mo, d, h, mi, s].map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return undefined
  if (hour > 23 || minute > 59 || second > 59) return undefined
  const milliseconds =
    utc === undefined
      ? new Date(year, month - 1, day, hour, minute, second).getTime()
      : Date.UTC(year, month - 1, day, hour, minute, second)
  const seconds = Math.floor(milliseconds / 1000)
  // sshd refuses 0 ("invalid expires time"); a time before 1970 is the same mistake.
  return Number.isFinite(seconds) && seconds > 0 ? seconds : undefined
}

/** Parse an options prefix (undefined: the line has none). */
export const parseKeyOptions = (text: string | undefined): Either.Either<KeyLineOptions, SkipKeyLine> => {
  if (text === undefined || text === "") return Either.right(noOptions)
  const scanned = scanOptions(text)
  if (Either.isLeft(scanned)) return Either.left(scanned.left)
  let certAuthority = false
  let restrict = false
  let identity: string | undefined
  let groups: ReadonlyArray<string> | undefined
  let from: AddressPatternList | undefined
  let expiresAt: number | undefined
  let principals: ReadonlyArray<string> | undefined
  const warnings: Array<string> = []
  const skip = (option: string, reason: string) => Either.left(new SkipKeyLine({ option, reason }))
  for (const { name: givenName, value } of scanned.right) {
    const name = givenName.toLowerCase()
    const needsValue =
      ["from", "principals", "expiry-time", "mcp-identity", "mcp-groups", "command"].includes(name) ||
      harmlessValued.has(name)
    if (needsValue && value === undefined) return skip(givenName, 'needs a value (name="value")')
    if (
      !needsValue &&
      value !== undefined &&
      (name === "restrict" || name === "cert-authority" || harmlessFlags.has(name))
    ) {
      return skip(givenName, "takes no value")
    }
    const once = <A>(current: A | undefined) => current !== undefined
    switch (name) {
      case "restrict":
        restrict = true
        break
      case "cert-authority":
        certAuthority = true
        break
      case "from": {
        if (once(from)) return skip(givenName, "is given twice")
        const parsed = parseAddressPatterns(value ?? "")
        if (Either.isLeft(parsed)) return skip(givenName, parsed.left.message)
        from = parsed.right
        warnings.push(...parsed.right.warnings.map((warning) => `from=: ${warning}`))
        break
      }
      case "expiry-time": {
        const seconds = parseExpiryTime(value ?? "")
        if (seconds === undefined) return skip(givenName, `'${value}' is not YYYYMMDD[HHMM[SS]][Z|UTC]`)
        expiresAt = expiresAt === undefined ? seconds : Math.min(expiresAt, seconds)
        break
      }
      case "principals": {
        if (once(principals)) return skip(givenName, "is given twice")
        // sshd stops at the first empty entry; an empty principal can only be a typo, so refuse it.
        const list = (value ?? "").split(",")
        if (list.some((entry) => entry === "")) return skip(givenName, "has an empty entry")
        principals = list
        break
      }
      case "mcp-identity": {
        if (once(identity)) return skip(givenName, "is given twice")
        const problem = identityNameProblem(value ?? "")
        if (problem !== undefined) return skip(givenName, problem)
        identity = value
        break
      }
      case "mcp-groups": {
        if (once(groups)) return skip(givenName, "is given twice")
        const list = splitList(value ?? "")
        const bad = list.find((group) => groupNameProblem(group) !== undefined)
        if (bad !== undefined) return skip(givenName, groupNameProblem(bad) ?? "")
        groups = [...new Set(list)]
        break
      }
      case "command":
        return skip(givenName, "forces a command, which has no meaning for this gateway; the key is not used")
      case "verify-required":
        return skip(givenName, "requires FIDO user verification, which the accepted key types cannot give")
      default:
        if (harmlessFlags.has(name) && value === undefined) break
        if (harmlessValued.has(name)) break
        return skip(givenName, "is not a known option; the key is not used")
    }
  }
  if (principals !== undefined && !certAuthority) {
    return skip("principals", "applies only to cert-authority lines")
  }
  if (identity !== undefined && certAuthority) {
    return skip("mcp-identity", "cannot name the identity of a CA's certificates (their key id does)")
  }
  return Either.right({
    certAuthority,
    identity,
    groups: groups ?? [],
    from,
    expiresAt,
    principals,
    restrict,
    warnings,
  })
}

// ---------------------------------------------------------------------------------------------
// Whole lines

export interface Identity {
  readonly name: string
  readonly groups: ReadonlyArray<string>
}

export type AuthorizedLine =
  | {
      readonly kind: "key"
      readonly line: number
      readonly key: PublicKey
      /** The options as written, undefined when the line has none. */
      readonly optionsText: string | undefined
      readonly options: KeyLineOptions
      readonly identity: Identity
    }
  | {
      readonly kind: "cert-authority"
      readonly line: number
      /** The CA's public key; certificates it signed are trusted through this line. */
      readonly key: PublicKey
      readonly optionsText: string | undefined
      readonly options: KeyLineOptions
    }

export interface SkippedLine {
  readonly kind: "skipped"
  readonly line: number
  readonly reason: string
}

/** Does this token start a key (so the line has no options)? OpenSSH tries to read a key first. */
const looksLikeKeyType = (token: string): boolean => /^(sk-)?(ssh|ecdsa|rsa)-/.test(token)

/** sshkey_advance_past_options: the options end at the first blank outside quotes (`\"` stays inside). */
const splitOptions = (
  text: string,
): { readonly options: string | undefined; readonly rest: string } | undefined => {
  const first = /^\S+/.exec(text)?.[0] ?? ""
  if (looksLikeKeyType(first)) return { options: undefined, rest: text }
  let quoted = false
  for (let index = 0; index < text.length; index++) {
    const char = text[index]
    if (char === "\\" && text[index + 1] === '"') index++
    else if (char === '"') quoted = !quoted
    else if (!quoted && (char === " " || char === "\t")) {
      return { options: text.slice(0, index), rest: text.slice(index).trimStart() }
    }
  }
  return undefined
}

/** A comment made fit to be a name: runs of other characters become `_`, at most 64 characters. */
export const sanitizeIdentity = (text: string): string =>
  text
    .replace(/[^A-Za-z0-9._@+-]+/g, "_")
    .replace(/^[^A-Za-z0-9]+/, "")
    .slice(0, 64)

/** The identity of a plain key line: `mcp-identity`, else the sanitized comment, else the fingerprint. */
export const keyLineIdentity = (key: PublicKey, options: KeyLineOptions): Identity => {
  const fromComment = sanitizeIdentity(key.comment)
  return {
    name: options.identity ?? (fromComment === "" ? key.fingerprint : fromComment),
    groups: options.groups,
  }
}

/**
 * The identity of a certificate login: its key id (sanitized like a comment; the certified key's
 * fingerprint when nothing is left), with the allowed principals and the CA line's `mcp-groups` as groups.
 */
export const certificateIdentity = (accepted: AcceptedCertificate, caLine: KeyLineOptions): Identity => {
  const name = sanitizeIdentity(accepted.keyId)
  return {
    name: name === "" ? accepted.keyFingerprint : name,
    groups: [...new Set([...accepted.principals, ...caLine.groups])],
  }
}

/** One line of an authorized_keys file: undefined for blanks and comments. */
export const parseAuthorizedKeyLine = (
  raw: string,
  line: number,
): AuthorizedLine | SkippedLine | undefined => {
  const text = raw.trim()
  if (text === "" || text.startsWith("#")) return undefined
  const skipped = (reason: string): SkippedLine => ({ kind: "skipped", line, reason })
  const split = splitOptions(text)
  if (split === undefined) return skipped("the options have an unclosed quote, or no key follows them")
  const options = parseKeyOptions(split.options)
  if (Either.isLeft(options)) return skipped(options.left.message)
  const key = parsePublicKey(split.rest)
  if (isKeyProblem(key)) return skipped(key.reason)
  const optionsText = split.options
  return options.right.certAuthority
    ? { kind: "cert-authority", line, key, optionsText, options: options.right }
    : {
        kind: "key",
        line,
        key,
        optionsText,
        options: options.right,
        identity: keyLineIdentity(key, options.right),
      }
}

export interface AuthorizedLines {
  readonly lines: ReadonlyArray<AuthorizedLine>
  readonly skipped: ReadonlyArray<SkippedLine>
}

/** Every line of a file; line numbers as `parseAuthorizedKeys` counts them (split on \r?\n, from 1). */
export const parseAuthorizedKeyLines = (content: string): AuthorizedLines => {
  const lines: Array<AuthorizedLine> = []
  const skipped: Array<SkippedLine> = []
  content.split(/\r?\n/).forEach((raw, index) => {
    const parsed = parseAuthorizedKeyLine(raw, index + 1)
    if (parsed === undefined) return
    if (parsed.kind === "skipped") skipped.push(parsed)
    else lines.push(parsed)
  })
  return { lines, skipped }
}

export class LineRefused extends Data.TaggedError("LineRefused")<{
  readonly reason: "expired" | "address not allowed" | "address denied"
  readonly detail: string
}> {
  override get message(): string {
    return `${this.reason}: ${this.detail}`
  }
}

/** The checks a line's own options make at login (sshd's auth_authorise_keyopts): expiry and `from=`. */
export const authorizeKeyLine = (
  options: KeyLineOptions,
  login: { readonly now: Date | number; readonly clientAddress: string },
): Either.Either<void, LineRefused> => {
  const now = Math.floor(typeof login.now === "number" ? login.now : login.now.getTime() / 1000)
  if (options.expiresAt !== undefined && now > options.expiresAt) {
    return Either.left(
      new LineRefused({
        reason: "expired",
        detail: `expiry-time passed at ${new Date(options.expiresAt * 1000).toISOString()}`,
      }),
    )
  }
  if (options.from !== undefined) {
    const match = matchAddressPatterns(options.from, login.clientAddress)
    if (match === "denied") {
      return Either.left(
        new LineRefused({
          reason: "address denied",
          detail: `${login.clientAddress} is excluded by from="${options.from.text}"`,
        }),
      )
    }
    if (match === "not listed") {
      return Either.left(
        new LineRefused({
          reason: "address not allowed",
          detail: `${login.clientAddress} is not in from="${options.from.text}"`,
        }),
      )
    }
  }
  return Either.right(undefined)
}
