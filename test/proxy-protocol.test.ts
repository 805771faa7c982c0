/** The PROXY protocol header, v1 and v2, as HAProxy's spec writes it: parsed, refused, never a throw. */
import { randomBytes } from "node:crypto"
import { describe, expect, it } from "vitest"
import {
  looksLikeProxyHeader,
  parseProxyHeader,
  peerOf,
  proxyHeaderTimeoutSeconds,
  proxyV2Signature,
  untrustedOpening,
} from "../src/gateway/ssh/proxyProtocol.js"

const sshHello = Buffer.from("SSH-2.0-OpenSSH_9.2\r\n")

/** A v2 header: command 1 (PROXY) or 0 (LOCAL), family/transport byte, address block and TLVs. */
const v2 = (command: number, familyTransport: number, addresses: Buffer, tlvs = Buffer.alloc(0)) => {
  const head = Buffer.alloc(4)
  head[0] = 0x20 | command
  head[1] = familyTransport
  head.writeUInt16BE(addresses.length + tlvs.length, 2)
  return Buffer.concat([proxyV2Signature, head, addresses, tlvs])
}

const ipv4Block = (
  source: Array<number>,
  destination: Array<number>,
  sourcePort: number,
  destinationPort: number,
) => {
  const block = Buffer.alloc(12)
  Buffer.from(source).copy(block, 0)
  Buffer.from(destination).copy(block, 4)
  block.writeUInt16BE(sourcePort, 8)
  block.writeUInt16BE(destinationPort, 10)
  return block
}

const ipv6Block = () => {
  const block = Buffer.alloc(36)
  Buffer.from("20010db8000000000000000000000001", "hex").copy(block, 0)
  Buffer.from("20010db8000000000000000000000002", "hex").copy(block, 16)
  block.writeUInt16BE(51000, 32)
  block.writeUInt16BE(8022, 34)
  return block
}

/** A TLV as HAProxy adds them (PP2_TYPE_UNIQUE_ID here): ignored. */
const tlv = Buffer.from([0x05, 0x00, 0x03, 0x61, 0x62, 0x63])

describe("PROXY protocol v2", () => {
  it("gives the client's IPv4 address and port, and where the client's own bytes start", () => {
    const header = v2(1, 0x11, ipv4Block([203, 0, 113, 7], [10, 0, 0, 1], 50123, 8022), tlv)
    const parsed = parseProxyHeader(Buffer.concat([header, sshHello]))
    expect(parsed).toEqual({
      _tag: "Parsed",
      consumed: header.length,
      source: { address: "203.0.113.7", port: 50123 },
    })
  })

  it("gives the client's IPv6 address", () => {
    expect(parseProxyHeader(v2(1, 0x21, ipv6Block()))).toMatchObject({
      _tag: "Parsed",
      source: { address: "2001:db8:0:0:0:0:0:1", port: 51000 },
    })
  })

  it("takes LOCAL (the proxy's own health check) and UNSPEC as no client address", () => {
    expect(parseProxyHeader(v2(0, 0x00, Buffer.alloc(0)))).toEqual({
      _tag: "Parsed",
      consumed: 16,
      source: undefined,
    })
    expect(parseProxyHeader(v2(0, 0x11, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)))).toMatchObject({
      source: undefined,
    })
    expect(parseProxyHeader(v2(1, 0x00, Buffer.alloc(0)))).toMatchObject({
      _tag: "Parsed",
      source: undefined,
    })
  })

  it("waits for the rest of a header cut anywhere", () => {
    const header = v2(1, 0x11, ipv4Block([203, 0, 113, 7], [10, 0, 0, 1], 50123, 8022), tlv)
    for (let length = 0; length < header.length; length++) {
      expect(parseProxyHeader(header.subarray(0, length)), `${length} bytes`).toEqual({ _tag: "Incomplete" })
    }
  })

  it("refuses what is not a header it can use, with the reason", () => {
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.concat([proxyV2Signature, Buffer.from([0x10, 0x11, 0, 0])]), /another version/],
      [Buffer.concat([proxyV2Signature, Buffer.from([0x2f, 0x11, 0, 0])]), /unknown command/],
      [v2(1, 0x12, ipv4Block([1, 2, 3, 4], [5, 6, 7, 8], 1, 2)), /transport other than TCP/],
      [v2(1, 0x31, Buffer.alloc(216)), /family other than IPv4 or IPv6/],
      [v2(1, 0x11, Buffer.alloc(8)), /too short for IPv4/],
      [v2(1, 0x21, Buffer.alloc(20)), /too short for IPv6/],
      [Buffer.concat([proxyV2Signature, Buffer.from([0x21, 0x11, 0x10, 0x00])]), /longer than 1040 bytes/],
    ]
    for (const [bytes, reason] of cases) {
      const parsed = parseProxyHeader(bytes)
      expect(parsed._tag, reason.source).toBe("Invalid")
      if (parsed._tag === "Invalid") expect(parsed.reason).toMatch(reason)
    }
  })
})

describe("PROXY protocol v1", () => {
  it("gives the client's address and port for TCP4 and TCP6", () => {
    const line = "PROXY TCP4 198.51.100.22 10.0.0.1 35646 8022\r\n"
    expect(parseProxyHeader(Buffer.concat([Buffer.from(line), sshHello]))).toEqual({
      _tag: "Parsed",
      consumed: line.length,
      source: { address: "198.51.100.22", port: 35646 },
    })
    expect(parseProxyHeader(Buffer.from("PROXY TCP6 2001:db8::1 2001:db8::2 51000 8022\r\n"))).toMatchObject({
      source: { address: "2001:db8::1", port: 51000 },
    })
    expect(parseProxyHeader(Buffer.from("PROXY UNKNOWN\r\n"))).toEqual({
      _tag: "Parsed",
      consumed: 15,
      source: undefined,
    })
  })

  it("waits for the CRLF, and refuses a line over 107 bytes or with bad fields", () => {
    expect(parseProxyHeader(Buffer.from("PROXY TCP4 198.51.100.22 10.0."))).toEqual({ _tag: "Incomplete" })
    expect(parseProxyHeader(Buffer.from("PRO"))).toEqual({ _tag: "Incomplete" })
    expect(parseProxyHeader(Buffer.from(`PROXY TCP4 ${"1".repeat(120)}`))).toMatchObject({ _tag: "Invalid" })
    for (const line of [
      "PROXY TCP4 198.51.100.22 10.0.0.1 35646\r\n",
      "PROXY TCP4 300.1.1.1 10.0.0.1 35646 8022\r\n",
      "PROXY TCP4 2001:db8::1 10.0.0.1 35646 8022\r\n",
      "PROXY TCP4 198.51.100.22 10.0.0.1 65536 8022\r\n",
      "PROXY TCP4 198.51.100.22 10.0.0.1 0123 8022\r\n",
      "PROXY UDP4 198.51.100.22 10.0.0.1 35646 8022\r\n",
    ]) {
      expect(parseProxyHeader(Buffer.from(line))._tag, line).toBe("Invalid")
    }
  })
})

describe("what is no PROXY header", () => {
  it("refuses an SSH client's own first bytes, and sees a header coming from its first bytes", () => {
    expect(parseProxyHeader(sshHello)).toEqual({ _tag: "Invalid", reason: "no PROXY protocol header" })
    expect(looksLikeProxyHeader(sshHello)).toBe(false)
    expect(looksLikeProxyHeader(Buffer.from("PROXY TCP4"))).toBe(true)
    expect(looksLikeProxyHeader(proxyV2Signature.subarray(0, 4))).toBe(true)
  })

  it("never throws on random bytes, nor on random bytes after either signature", () => {
    for (let round = 0; round < 3000; round++) {
      const tail = randomBytes(round % 64)
      for (const bytes of [
        tail,
        Buffer.concat([proxyV2Signature, tail]),
        Buffer.concat([Buffer.from("PROXY "), tail]),
      ]) {
        const parsed = parseProxyHeader(bytes)
        expect(["Incomplete", "Invalid", "Parsed"]).toContain(parsed._tag)
        if (parsed._tag === "Parsed") expect(parsed.consumed).toBeLessThanOrEqual(bytes.length)
      }
    }
  })
})

describe("the peer a connection comes from", () => {
  const parsed = (address: string, port: number) =>
    ({ _tag: "Parsed", consumed: 28, source: { address, port } }) as const

  it("is the socket's peer without a header, and the header's client behind a trusted proxy", () => {
    expect(peerOf("127.0.0.9", 4000, undefined)).toEqual({
      address: "127.0.0.9",
      port: 4000,
      kind: "direct",
      proxy: undefined,
    })
    expect(peerOf("10.0.0.5", 4000, parsed("198.51.100.22", 35646))).toEqual({
      address: "198.51.100.22",
      port: 35646,
      kind: "proxied",
      proxy: "10.0.0.5:4000",
    })
  })

  it("counts one address as one source: IPv4-mapped IPv6 as IPv4, IPv6 in its short form", () => {
    expect(peerOf("10.0.0.5", 1, parsed("0:0:0:0:0:ffff:c633:6416", 2)).address).toBe("198.51.100.22")
    expect(peerOf("::ffff:10.0.0.5", 1, parsed("2001:db8:0:0:0:0:0:1", 2))).toMatchObject({
      address: "2001:db8::1",
      proxy: "10.0.0.5:1",
    })
  })

  it("keeps the proxy's own address for its LOCAL (health check) connections", () => {
    expect(peerOf("10.0.0.5", 4000, { _tag: "Parsed", consumed: 16, source: undefined })).toEqual({
      address: "10.0.0.5",
      port: 4000,
      kind: "local",
      proxy: "10.0.0.5:4000",
    })
  })
})

describe("the first bytes of a peer that is not a trusted proxy", () => {
  it("are refused as a PROXY header as soon as they can be told apart", () => {
    expect(untrustedOpening(Buffer.alloc(0))).toBe("undecided")
    expect(untrustedOpening(Buffer.from("PROX"))).toBe("undecided")
    expect(untrustedOpening(Buffer.from("PROXY "))).toBe("proxy-header")
    expect(untrustedOpening(proxyV2Signature.subarray(0, 2))).toBe("undecided")
    expect(untrustedOpening(proxyV2Signature.subarray(0, 4))).toBe("proxy-header")
    expect(untrustedOpening(Buffer.from("S"))).toBe("other")
    expect(untrustedOpening(sshHello)).toBe("other")
    expect(untrustedOpening(Buffer.from("PROXIMA"))).toBe("other")
  })

  it("give a trusted proxy a few seconds for its header, never more than the login grace time", () => {
    expect(proxyHeaderTimeoutSeconds(30)).toBe(5)
    expect(proxyHeaderTimeoutSeconds(2)).toBe(2)
  })
})
