/**
 * Client-address checks in OpenSSH's syntax: the `from="pattern-list"` of an authorized_keys line
 * (addr_match_list + match_host_and_ip in OpenSSH) and a certificate's `source-address` CIDR list
 * (addr_match_cidr_list). Pure: addresses are text in, booleans out; nothing is resolved.
 *
 * Choices, where OpenSSH leaves room:
 * - The client address is normalized first: an IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, what a
 *   dual-stack socket reports) is the IPv4 address, as sshd's ipv64_normalise_mapped does; an IPv6
 *   zone (`%eth0`) is dropped.
 * - Hostname patterns never match: sshd matches them only with UseDNS, and a gateway must not let
 *   DNS decide who gets in. A positive hostname pattern gives a warning (it only narrows); a NEGATED
 *   hostname pattern is an error, because ignoring it would let in whom it was meant to keep out.
 * - IPv4 is strict dotted-quad (no octal or shortened forms that getaddrinfo would take).
 * - A CIDR with host bits set (`10.0.0.1/8`), a bad mask, an empty entry, or something that looks like
 *   an address but is not one is an error, so the caller skips the line (OpenSSH refuses the login).
 */
import { Data, Either } from "effect"

export interface IpAddress {
  readonly family: 4 | 6
  /** 4 or 16 bytes, network order. */
  readonly bytes: Uint8Array
}

const ipv4Part = /^(0|[1-9][0-9]{0,2})$/

const parseIpv4 = (text: string): Uint8Array | undefined => {
  const parts = text.split(".")
  if (parts.length !== 4) return undefined
  const bytes = new Uint8Array(4)
  for (const [index, part] of parts.entries()) {
    if (!ipv4Part.test(part)) return undefined
    const value = Number(part)
    if (value > 255) return undefined
    bytes[index] = value
  }
  return bytes
}

const hexGroup = /^[0-9a-fA-F]{1,4}$/

/** The 16-bit groups of one side of `::` (the last may be a dotted IPv4 tail); undefined if invalid. */
const ipv6Groups = (side: string, mayEndInIpv4: boolean): Array<number> | undefined => {
  if (side === "") return []
  const groups: Array<number> = []
  const parts = side.split(":")
  for (const [index, part] of parts.entries()) {
    if (mayEndInIpv4 && index === parts.length - 1 && part.includes(".")) {
      const ipv4 = parseIpv4(part)
      if (ipv4 === undefined) return undefined
      groups.push(((ipv4[0] ?? 0) << 8) | (ipv4[1] ?? 0), ((ipv4[2] ?? 0) << 8) | (ipv4[3] ?? 0))
    } else if (hexGroup.test(part)) {
      groups.push(Number.parseInt(part, 16))
    } else {
      return undefined
    }
  }
  return groups
}

const parseIpv6 = (text: string): Uint8Array | undefined => {
  const halves = text.split("::")
  if (halves.length > 2) return undefined
  const [head = "", tail] = halves
  const headGroups = ipv6Groups(head, tail === undefined)
  const tailGroups = tail === undefined ? [] : ipv6Groups(tail, true)
  if (headGroups === undefined || tailGroups === undefined) return undefined
  const missing = 8 - headGroups.length - tailGroups.length
  if (tail === undefined ? missing !== 0 : missing < 1) return undefined
  const groups = [
    ...headGroups,
    ...new Array<number>(tail === undefined ? 0 : missing).fill(0),
    ...tailGroups,
  ]
  const bytes = new Uint8Array(16)
  groups.forEach((group, index) => {
    bytes[2 * index] = group >> 8
    bytes[2 * index + 1] = group & 0xff
  })
  return bytes
}

const isIpv4Mapped = (bytes: Uint8Array): boolean =>
  bytes.length === 16 &&
  bytes.subarray(0, 10).every((byte) => byte === 0) &&
  bytes[10] === 0xff &&
  bytes[11] === 0xff

/** A literal address (no mask, no zone), or undefined. */
const parseLiteral = (text: string): IpAddress | undefined => {
  const ipv4 = parseIpv4(text)
  if (ipv4 !== undefined) return { family: 4, bytes: ipv4 }
  const ipv6 = text.includes(":") ? parseIpv6(text) : undefined
  return ipv6 === undefined ? undefined : { family: 6, bytes: ipv6 }
}

/** The client's address, normalized: IPv4-mapped IPv6 becomes IPv4, a zone is dropped. */
export const parseClientAddress = (text: string): IpAddress | undefined => {
  const literal = parseLiteral(text.replace(/%.*$/, ""))
  if (literal === undefined) return undefined
  return literal.family === 6 && isIpv4Mapped(literal.bytes)
    ? { family: 4, bytes: literal.bytes.slice(12) }
    : literal
}

/** The canonical text of an address (RFC 5952 for IPv6), which wildcard patterns are matched against. */
export const formatIpAddress = (address: IpAddress): string => {
  if (address.family === 4) return [...address.bytes].join(".")
  const groups = Array.from(
    { length: 8 },
    (_, index) => ((address.bytes[2 * index] ?? 0) << 8) | (address.bytes[2 * index + 1] ?? 0),
  )
  // The longest run of two or more zero groups (the first, on a tie) becomes `::`.
  let bestStart = -1
  let bestLength = 1
  for (let start = 0; start < 8; ) {
    if (groups[start] !== 0) {
      start++
      continue
    }
    let end = start
    while (end < 8 && groups[end] === 0) end++
    if (end - start > bestLength) {
      bestStart = start
      bestLength = end - start
    }
    start = end
  }
  const hex = (part: ReadonlyArray<number>) => part.map((group) => group.toString(16)).join(":")
  if (bestStart < 0) return hex(groups)
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`
}

interface Network {
  readonly address: IpAddress
  readonly prefixLength: number
}

const inNetwork = (address: IpAddress, network: Network): boolean => {
  if (address.family !== network.address.family) return false
  const full = Math.floor(network.prefixLength / 8)
  for (let index = 0; index < full; index++) {
    if (address.bytes[index] !== network.address.bytes[index]) return false
  }
  const rest = network.prefixLength % 8
  if (rest === 0) return true
  const mask = (0xff << (8 - rest)) & 0xff
  return ((address.bytes[full] ?? 0) & mask) === ((network.address.bytes[full] ?? 0) & mask)
}

const hostBitsAreZero = (network: Network): boolean =>
  network.address.bytes.every((byte, index) => {
    const bitsBefore = index * 8
    if (bitsBefore + 8 <= network.prefixLength) return true
    const kept = Math.max(0, network.prefixLength - bitsBefore)
    return (byte & (0xff >> kept)) === 0
  })

export class AddressPatternError extends Data.TaggedError("AddressPatternError")<{
  readonly entry: string
  readonly detail: string
}> {
  override get message(): string {
    return `address pattern '${this.entry}': ${this.detail}`
  }
}

/** `addr` or `addr/len` as a network; Left when it has a `/` or is an address and still is not valid. */
const parseNetwork = (text: string): Either.Either<Network | undefined, string> => {
  const slash = text.indexOf("/")
  const addressText = slash < 0 ? text : text.slice(0, slash)
  const address = parseLiteral(addressText)
  if (slash < 0)
    return Either.right(
      address === undefined ? undefined : { address, prefixLength: address.family === 4 ? 32 : 128 },
    )
  if (address === undefined) return Either.left(`'${addressText}' is not an IP address`)
  const lengthText = text.slice(slash + 1)
  const maximum = address.family === 4 ? 32 : 128
  if (!/^(0|[1-9][0-9]{0,2})$/.test(lengthText) || Number(lengthText) > maximum) {
    return Either.left(`mask length '${lengthText}' is not between 0 and ${maximum}`)
  }
  const network = { address, prefixLength: Number(lengthText) }
  if (!hostBitsAreZero(network)) return Either.left(`bits are set after the /${lengthText} mask`)
  return Either.right(network)
}

export type AddressPattern =
  | { readonly kind: "network"; readonly negated: boolean; readonly text: string; readonly network: Network }
  | { readonly kind: "wildcard"; readonly negated: boolean; readonly text: string; readonly pattern: RegExp }
  | { readonly kind: "hostname"; readonly negated: false; readonly text: string }

export interface AddressPatternList {
  readonly text: string
  readonly patterns: ReadonlyArray<AddressPattern>
  /** Things to tell the admin that do not stop the line: hostname patterns that never match. */
  readonly warnings: ReadonlyArray<string>
}

/** OpenSSH's match_pattern: `*` any run, `?` one character, case-insensitive here (IPv6 hex). */
const wildcardRegExp = (pattern: string): RegExp =>
  new RegExp(
    `^${[...pattern].map((char) => (char === "*" ? ".*" : char === "?" ? "." : char.replace(/[.\\]/g, "\\$&"))).join("")}$`,
    "i",
  )

const addressCharacters = /^[0-9a-fA-F.:*?]+$/

/** Parse a `from=` pattern-list. */
export const parseAddressPatterns = (
  text: string,
): Either.Either<AddressPatternList, AddressPatternError> => {
  const patterns: Array<AddressPattern> = []
  const warnings: Array<string> = []
  for (const raw of text.split(",")) {
    const negated = raw.startsWith("!")
    const entry = negated ? raw.slice(1) : raw
    const fail = (detail: string) => Either.left(new AddressPatternError({ entry: raw, detail }))
    if (entry === "") return fail("empty entry in the list")
    const network = parseNetwork(entry)
    if (Either.isLeft(network)) return fail(network.left)
    if (network.right !== undefined) {
      patterns.push({ kind: "network", negated, text: raw, network: network.right })
    } else if (/[*?]/.test(entry) && addressCharacters.test(entry)) {
      patterns.push({ kind: "wildcard", negated, text: raw, pattern: wildcardRegExp(entry) })
    } else if (/^[0-9.]+$/.test(entry) || entry.includes(":")) {
      return fail("not a valid IP address")
    } else if (negated) {
      return fail(
        "a negated hostname cannot be enforced (hostnames are not resolved), so the line cannot be honoured",
      )
    } else {
      warnings.push(`'${entry}' is a hostname; hostnames are not resolved, so it matches no client`)
      patterns.push({ kind: "hostname", negated: false, text: raw })
    }
  }
  return Either.right({ text, patterns, warnings })
}

/** `allowed`: a pattern matched and none negated did; `denied`: a negated pattern matched (refuse outright). */
export type AddressMatch = "allowed" | "not listed" | "denied"

export const matchAddressPatterns = (list: AddressPatternList, clientAddress: string): AddressMatch => {
  const address = parseClientAddress(clientAddress)
  if (address === undefined) return "not listed"
  const canonical = formatIpAddress(address)
  let matched = false
  for (const pattern of list.patterns) {
    const hit =
      pattern.kind === "network"
        ? inNetwork(address, pattern.network)
        : pattern.kind === "wildcard"
          ? pattern.pattern.test(canonical)
          : false
    if (hit && pattern.negated) return "denied"
    if (hit) matched = true
  }
  return matched ? "allowed" : "not listed"
}

export interface CidrList {
  readonly text: string
  readonly networks: ReadonlyArray<Network>
}

/** OpenSSH's limit on one entry of a source-address list (INET6_ADDRSTRLEN + 3 for the mask). */
const maximumCidrEntryLength = 46 + 3

/** A certificate's `source-address`: a comma list of addresses or CIDR networks, nothing else. */
export const parseCidrList = (text: string): Either.Either<CidrList, AddressPatternError> => {
  const networks: Array<Network> = []
  for (const entry of text.split(",")) {
    const fail = (detail: string) => Either.left(new AddressPatternError({ entry, detail }))
    if (entry === "") return fail("empty entry in the list")
    if (entry.length > maximumCidrEntryLength) return fail("entry is too long")
    if (!/^[0-9a-fA-F.:/]+$/.test(entry)) return fail("only addresses and CIDR networks are allowed here")
    const network = parseNetwork(entry)
    if (Either.isLeft(network)) return fail(network.left)
    if (network.right === undefined) return fail("not a valid IP address")
    networks.push(network.right)
  }
  return Either.right({ text, networks })
}

export const matchCidrList = (list: CidrList, clientAddress: string): boolean => {
  const address = parseClientAddress(clientAddress)
  return address !== undefined && list.networks.some((network) => inNetwork(address, network))
}
