/**
 * The SSH listener behind a load balancer: before ssh2 sees a socket, learn who its client really
 * is. A socket from a trusted proxy (--trusted-proxies) must open with a PROXY header (v1 or v2),
 * read here within a short time and a bounded size; what follows it goes back to the socket for
 * ssh2. A socket from anyone else is the client itself, and opening with a PROXY header is refused.
 */
import type { Socket } from "node:net"
import { Duration } from "effect"
import { type CidrList, matchCidrList } from "../identity/addressPatterns.js"
import { type Peer, type ProxyHeader, parseProxyHeader, peerOf, untrustedOpening } from "./proxyProtocol.js"

type ParsedHeader = Extract<ProxyHeader, { _tag: "Parsed" }>

/** What became of reading who a socket comes from: exactly one of these is called, once. */
export interface PeerCallbacks {
  readonly resolved: (peer: Peer) => void
  /** A bad, missing or late PROXY header, or one nobody trusts; `reason` is for the log. */
  readonly refused: (reason: string) => void
}

/**
 * Read the PROXY header at the start of `socket`. On success the socket is paused with the bytes
 * after the header put back, so ssh2 reads the client's first bytes as if nothing came before.
 * Plain callbacks, not a fiber: this runs for every connection before authentication. Gives the
 * function that stops reading (the connection's owner calls it when it ends the connection first).
 */
const readProxyHeader = (
  socket: Socket,
  timeout: Duration.Duration,
  done: (header: ParsedHeader | { readonly refused: string }) => void,
) => {
  let received: Buffer = Buffer.alloc(0)
  const stop = () => {
    clearTimeout(timer)
    socket.off("data", onData)
    socket.off("end", onEnd)
    socket.off("close", onEnd)
  }
  const refuse = (reason: string) => {
    stop()
    done({ refused: reason })
  }
  // The parser refuses a header past its size limit (107 bytes for v1, 1040 for v2), so at most
  // that and one read are ever held here.
  function onData(chunk: Buffer) {
    received = received.length === 0 ? chunk : Buffer.concat([received, chunk])
    const header = parseProxyHeader(received)
    if (header._tag === "Incomplete") return
    if (header._tag === "Invalid") return refuse(`${header.reason} from a trusted proxy`)
    socket.pause()
    stop()
    const rest = received.subarray(header.consumed)
    if (rest.length > 0) socket.unshift(rest)
    done(header)
  }
  function onEnd() {
    refuse("closed by the trusted proxy before its PROXY header")
  }
  const timer = setTimeout(
    () => refuse(`no PROXY header from a trusted proxy within ${Duration.format(timeout)}`),
    Duration.toMillis(timeout),
  )
  socket.on("data", onData)
  socket.once("end", onEnd)
  socket.once("close", onEnd)
  return stop
}

/**
 * Who `socket` comes from: from a trusted proxy, the client its header names (the header is read
 * first); from anyone else, the socket's own peer (answered at once). Gives the function that stops
 * a read still under way.
 */
export const resolvePeer = (
  socket: Socket,
  trusted: CidrList | undefined,
  headerTimeout: Duration.Duration,
  callbacks: PeerCallbacks,
): (() => void) => {
  const address = socket.remoteAddress
  const port = socket.remotePort ?? 0
  if (address === undefined) {
    callbacks.refused("the connection closed before it could be read")
    return () => {}
  }
  if (trusted === undefined || !matchCidrList(trusted, address)) {
    callbacks.resolved(peerOf(address, port, undefined))
    return () => {}
  }
  return readProxyHeader(socket, headerTimeout, (header) =>
    "refused" in header
      ? callbacks.refused(header.refused)
      : callbacks.resolved(peerOf(address, port, header)),
  )
}

/**
 * For a direct peer: watch its first bytes, and `refuse` (once) if they are a PROXY header. Added
 * after ssh2 has paused the socket, like the identification watch, so it does not start the flow.
 */
export const refuseUntrustedProxyHeader = (socket: Socket, peer: Peer, refuse: (reason: string) => void) => {
  if (peer.kind !== "direct") return
  let opening: Buffer = Buffer.alloc(0)
  const listener = (chunk: Buffer) => {
    // 16 bytes tell a header from anything else; keep no more.
    opening = Buffer.concat([opening, chunk.subarray(0, 16)])
    const verdict = untrustedOpening(opening)
    if (verdict === "undecided") return
    socket.off("data", listener)
    if (verdict === "proxy-header")
      refuse(`a PROXY protocol header from ${peer.address}, which --trusted-proxies does not name`)
  }
  socket.on("data", listener)
}
