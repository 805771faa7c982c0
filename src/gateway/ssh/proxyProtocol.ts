/**
 * The PROXY protocol header (HAProxy's spec, versions 1 and 2) that a load balancer in TCP mode puts
 * before the client's own bytes, saying who the client really is. Pure: the bytes read so far in,
 * the header's verdict out. The caller reads until the verdict is not Incomplete, and hands what
 * follows the header to SSH.
 *
 * Only proxies the operator trusts may send one (--trusted-proxies); from them it is required. A
 * `LOCAL` header (v2) or `UNKNOWN` (v1) is the proxy's own connection, a health check: the socket's
 * address stands.
 */
import { formatIpAddress, parseClientAddress } from "../identity/addressPatterns.js"

/** The 12 bytes every v2 header starts with. */
export const proxyV2Signature = Buffer.from([
  0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
])
const v1Prefix = Buffer.from("PROXY ")
/** The spec's limit for a v1 line, CRLF included. */
const v1MaxBytes = 107
/** A v2 header with TLVs longer than this is refused rather than buffered. */
const v2MaxBytes = 16 + 1024

export interface ProxiedAddress {
  readonly address: string
  readonly port: number
}

export type ProxyHeader =
  | { readonly _tag: "Incomplete" }
  | { readonly _tag: "Invalid"; readonly reason: string }
  | {
      readonly _tag: "Parsed"
      /** Bytes the header took; the client's own bytes start there. */
      readonly consumed: number
      /** The client as the proxy saw it; undefined for the proxy's own connections (LOCAL, UNKNOWN). */
      readonly source: ProxiedAddress | undefined
    }

const incomplete: ProxyHeader = { _tag: "Incomplete" }
const invalid = (reason: string): ProxyHeader => ({ _tag: "Invalid", reason })

/** Whether `bytes` could still become the start of `prefix` (or already start with it). */
const mayStartWith = (bytes: Buffer, prefix: Buffer): boolean => {
  const length = Math.min(bytes.length, prefix.length)
  return bytes.subarray(0, length).equals(prefix.subarray(0, length))
}

const ipv4 = (bytes: Buffer, at: number): string =>
  `${bytes[at]}.${bytes[at + 1]}.${bytes[at + 2]}.${bytes[at + 3]}`

const ipv6 = (bytes: Buffer, at: number): string => {
  const groups: Array<string> = []
  for (let index = 0; index < 8; index++) groups.push(bytes.readUInt16BE(at + index * 2).toString(16))
  return groups.join(":")
}

const decimalPort = (text: string): number | undefined => {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return undefined
  const port = Number(text)
  return port <= 65535 ? port : undefined
}

const isIpv4Text = (text: string): boolean =>
  /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/.test(
    text,
  )

const isIpv6Text = (text: string): boolean =>
  /^[0-9a-fA-F:.]+$/.test(text) && text.includes(":") && text.length <= 45

const parseV1 = (bytes: Buffer): ProxyHeader => {
  const end = bytes.indexOf("\r\n")
  if (end === -1)
    return bytes.length >= v1MaxBytes ? invalid("a v1 header longer than 107 bytes") : incomplete
  if (end + 2 > v1MaxBytes) return invalid("a v1 header longer than 107 bytes")
  const fields = bytes.subarray(0, end).toString("latin1").split(" ")
  if (fields[1] === "UNKNOWN") return { _tag: "Parsed", consumed: end + 2, source: undefined }
  if (fields.length !== 6) return invalid("a v1 header without its 6 fields")
  const [, family, source = "", , sourcePort = ""] = fields
  const valid = family === "TCP4" ? isIpv4Text(source) : family === "TCP6" ? isIpv6Text(source) : false
  if (!valid)
    return invalid(`a v1 header with a bad ${family === "TCP4" || family === "TCP6" ? "address" : "family"}`)
  const port = decimalPort(sourcePort)
  if (port === undefined) return invalid("a v1 header with a bad port")
  return { _tag: "Parsed", consumed: end + 2, source: { address: source, port } }
}

const parseV2 = (bytes: Buffer): ProxyHeader => {
  if (bytes.length < 16) return incomplete
  const versionCommand = bytes[12] as number
  if (versionCommand >> 4 !== 2) return invalid("a v2 header of another version")
  const command = versionCommand & 0x0f
  if (command > 1) return invalid("a v2 header with an unknown command")
  const length = bytes.readUInt16BE(14)
  if (16 + length > v2MaxBytes) return invalid("a v2 header longer than 1040 bytes")
  if (bytes.length < 16 + length) return incomplete
  const consumed = 16 + length
  // LOCAL: the proxy's own connection (a health check); its addresses, if any, mean nothing.
  if (command === 0) return { _tag: "Parsed", consumed, source: undefined }
  const family = (bytes[13] as number) >> 4
  const transport = (bytes[13] as number) & 0x0f
  if (family === 0) return { _tag: "Parsed", consumed, source: undefined }
  if (transport !== 1) return invalid("a v2 header for a transport other than TCP")
  if (family === 1) {
    if (length < 12) return invalid("a v2 header too short for IPv4 addresses")
    return { _tag: "Parsed", consumed, source: { address: ipv4(bytes, 16), port: bytes.readUInt16BE(24) } }
  }
  if (family === 2) {
    if (length < 36) return invalid("a v2 header too short for IPv6 addresses")
    return { _tag: "Parsed", consumed, source: { address: ipv6(bytes, 16), port: bytes.readUInt16BE(48) } }
  }
  return invalid("a v2 header for a family other than IPv4 or IPv6")
}

/** The header at the start of `bytes`, as far as it has arrived. */
export const parseProxyHeader = (bytes: Buffer): ProxyHeader => {
  if (bytes.length === 0) return incomplete
  if (mayStartWith(bytes, proxyV2Signature)) {
    return bytes.length < proxyV2Signature.length ? incomplete : parseV2(bytes)
  }
  if (mayStartWith(bytes, v1Prefix)) return bytes.length < v1Prefix.length ? incomplete : parseV1(bytes)
  return invalid("no PROXY protocol header")
}

/** Whether a connection opens as a PROXY header does: refused from anyone but a trusted proxy. */
export const looksLikeProxyHeader = (bytes: Buffer): boolean =>
  bytes.length > 0 &&
  ((bytes.length >= 6 && mayStartWith(bytes, v1Prefix)) ||
    (bytes.length >= 4 && mayStartWith(bytes, proxyV2Signature)))

/** Who a connection on the SSH listener comes from, once any PROXY header is read. */
export interface Peer {
  /** The client's address, canonical text: per-source limits, `from=` and `source-address` use it. */
  readonly address: string
  readonly port: number
  /**
   * `direct`: the socket's own peer, not a trusted proxy. `proxied`: a trusted proxy named the
   * client. `local`: a trusted proxy's own connection (LOCAL, UNKNOWN), its address stands.
   */
  readonly kind: "direct" | "proxied" | "local"
  /** The trusted proxy's `address:port`, when one carried the connection. */
  readonly proxy: string | undefined
}

/** `address:port`, as the log's `remote=` and the audit show a peer. */
export const peerText = (peer: Pick<Peer, "address" | "port">): string => `${peer.address}:${peer.port}`

/** The same address always counts as the same source: IPv4-mapped IPv6 as IPv4, IPv6 as RFC 5952. */
const canonical = (address: string): string => {
  const parsed = parseClientAddress(address)
  return parsed === undefined ? address : formatIpAddress(parsed)
}

/** The peer of a socket from `socketAddress`, given what its trusted proxy's header said (if any). */
export const peerOf = (
  socketAddress: string,
  socketPort: number,
  header: Extract<ProxyHeader, { _tag: "Parsed" }> | undefined,
): Peer => {
  if (header === undefined)
    return { address: socketAddress, port: socketPort, kind: "direct", proxy: undefined }
  const proxy = peerText({ address: canonical(socketAddress), port: socketPort })
  // A health check of the proxy (LOCAL, or v1 UNKNOWN): the spec says to use the real endpoints.
  if (header.source === undefined) return { address: socketAddress, port: socketPort, kind: "local", proxy }
  return { address: canonical(header.source.address), port: header.source.port, kind: "proxied", proxy }
}

/**
 * How the first bytes from a peer that is not a trusted proxy open: a PROXY header is refused (it
 * would be a claim to be someone else), `undecided` while too few bytes have come to tell.
 */
export const untrustedOpening = (bytes: Buffer): "proxy-header" | "other" | "undecided" => {
  if (looksLikeProxyHeader(bytes)) return "proxy-header"
  const couldBe =
    (bytes.length < 6 && mayStartWith(bytes, v1Prefix)) ||
    (bytes.length < 4 && mayStartWith(bytes, proxyV2Signature))
  return bytes.length === 0 || couldBe ? "undecided" : "other"
}

/**
 * How long a trusted proxy has to send its header: a proxy sends it as it connects, so a few seconds
 * is plenty, and never more than the login grace time.
 */
export const proxyHeaderTimeoutSeconds = (loginGraceTime: number): number => Math.min(5, loginGraceTime)
