/**
 * Client-address patterns: `from=` pattern-lists (CIDR, wildcards, negation, hostnames) and a
 * certificate's `source-address` CIDR list, as tables of pattern, address and answer.
 */
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import {
  type AddressMatch,
  formatIpAddress,
  matchAddressPatterns,
  matchCidrList,
  parseAddressPatterns,
  parseCidrList,
  parseClientAddress,
} from "../src/gateway/identity/addressPatterns.js"

const patterns = (text: string) => {
  const parsed = parseAddressPatterns(text)
  return Either.isRight(parsed) ? parsed.right : expect.fail(parsed.left.message)
}

describe("from= pattern lists", () => {
  const table: ReadonlyArray<readonly [string, string, AddressMatch]> = [
    ["10.0.0.0/8", "10.1.2.3", "allowed"],
    ["10.0.0.0/8", "11.0.0.1", "not listed"],
    ["10.0.0.0/8", "::ffff:10.9.9.9", "allowed"],
    ["10.0.0.0/8", "::ffff:a09:909", "allowed"],
    ["10.0.0.0/8", "2001:db8::1", "not listed"],
    ["192.0.2.7", "192.0.2.7", "allowed"],
    ["192.0.2.7", "192.0.2.70", "not listed"],
    ["192.0.2.0/25", "192.0.2.127", "allowed"],
    ["192.0.2.0/25", "192.0.2.128", "not listed"],
    ["0.0.0.0/0", "203.0.113.9", "allowed"],
    ["0.0.0.0/0", "2001:db8::1", "not listed"],
    ["::/0", "2001:db8::1", "allowed"],
    ["2001:db8::/32", "2001:db8:ffff::1", "allowed"],
    ["2001:db8::/32", "2001:db9::1", "not listed"],
    ["2001:DB8::/32", "2001:db8::5", "allowed"],
    ["fe80::/10", "fe80::1%eth0", "allowed"],
    ["::1", "::1", "allowed"],
    ["127.0.0.1", "::ffff:127.0.0.1", "allowed"],
    ["10.0.0.*", "10.0.0.42", "allowed"],
    ["10.0.0.*", "10.0.1.42", "not listed"],
    ["10.0.0.?", "10.0.0.4", "allowed"],
    ["10.0.0.?", "10.0.0.42", "not listed"],
    ["*", "198.51.100.1", "allowed"],
    ["*", "2001:db8::1", "allowed"],
    ["2001:db8::*", "2001:db8::abcd", "allowed"],
    ["2001:DB8::*", "2001:db8::abcd", "allowed"],
    // Wildcards see the canonical text: leading zeros and long forms are normalized first.
    ["2001:db8::1", "2001:0db8:0000:0000:0000:0000:0000:0001", "allowed"],
    ["2001:db8::?", "2001:0db8::0001", "allowed"],
    ["10.0.0.0/8,!10.0.0.5", "10.0.0.5", "denied"],
    ["!10.0.0.5,10.0.0.0/8", "10.0.0.5", "denied"],
    ["10.0.0.0/8,!10.0.0.5", "10.0.0.6", "allowed"],
    ["!10.0.0.5", "10.0.0.6", "not listed"],
    ["!192.168.0.0/16,*", "192.168.3.3", "denied"],
    ["!192.168.0.0/16,*", "::ffff:192.168.3.3", "denied"],
    ["!192.168.0.0/16,*", "172.16.0.1", "allowed"],
    ["*.example.com", "10.0.0.1", "not listed"],
    ["gateway.example.com,10.0.0.1", "10.0.0.1", "allowed"],
    ["10.0.0.0/8", "unknown", "not listed"],
    ["10.0.0.0/8", "", "not listed"],
    ["*", "not-an-address", "not listed"],
  ]
  it.each(table)("%s with %s: %s", (list, address, expected) => {
    expect(matchAddressPatterns(patterns(list), address)).toBe(expected)
  })

  it("hostname patterns never match and say so; a negated hostname cannot be honoured", () => {
    expect(patterns("*.example.com,10.0.0.1").warnings).toEqual([
      "'*.example.com' is a hostname; hostnames are not resolved, so it matches no client",
    ])
    expect(patterns("10.0.0.1").warnings).toEqual([])
    expect(Either.isLeft(parseAddressPatterns("!*.evil.example,*"))).toBe(true)
  })

  it.each([
    ["", "empty entry"],
    ["10.0.0.0/8,", "empty entry"],
    [",10.0.0.0/8", "empty entry"],
    ["!", "empty entry"],
    ["10.0.0.1/8", "bits are set after"],
    ["10.0.0.0/33", "mask length"],
    ["2001:db8::/129", "mask length"],
    ["10.0.0.0/", "mask length"],
    ["10.0.0.0/08", "mask length"],
    ["host/24", "not an IP address"],
    ["10.0.0.300", "not a valid IP address"],
    ["010.0.0.1", "not a valid IP address"],
    ["10.1", "not a valid IP address"],
    ["2001:db8:::1", "not a valid IP address"],
    ["1:2:3:4:5:6:7:8:9", "not a valid IP address"],
    ["fe80::1%eth0", "not a valid IP address"],
  ])("refuses %j (%s)", (list, detail) => {
    const parsed = parseAddressPatterns(list)
    expect(Either.isLeft(parsed) && parsed.left.message).toContain(detail)
  })
})

describe("source-address CIDR lists", () => {
  const list = (text: string) => {
    const parsed = parseCidrList(text)
    return Either.isRight(parsed) ? parsed.right : expect.fail(parsed.left.message)
  }

  it.each([
    ["10.0.0.0/8", "10.255.0.1", true],
    ["10.0.0.0/8", "::ffff:10.255.0.1", true],
    ["10.0.0.0/8", "9.255.255.255", false],
    ["10.0.0.0/8,2001:db8::/32", "2001:db8::7", true],
    ["192.0.2.1", "192.0.2.1", true],
    ["192.0.2.1", "192.0.2.2", false],
    ["::/0", "10.0.0.1", false],
    ["0.0.0.0/0,::/0", "2001:db8::1", true],
    ["10.0.0.0/8", "garbage", false],
  ] as const)("%s with %s: %s", (text, address, expected) => {
    expect(matchCidrList(list(text), address)).toBe(expected)
  })

  it.each([
    "*",
    "10.0.0.*",
    "!10.0.0.0/8",
    "10.0.0.0/8,",
    "",
    "host.example.com",
    "10.0.0.1/8",
    "1".repeat(50),
  ])("refuses %j", (text) => {
    expect(Either.isLeft(parseCidrList(text))).toBe(true)
  })
})

describe("client addresses", () => {
  it.each([
    ["10.1.2.3", "10.1.2.3"],
    ["::ffff:10.1.2.3", "10.1.2.3"],
    ["::FFFF:10.1.2.3", "10.1.2.3"],
    ["2001:0DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:0:0:0:2:1", "2001:db8::2:1"],
    ["2001:db8::1:0:0:1", "2001:db8::1:0:0:1"],
    ["::", "::"],
    ["::1", "::1"],
    ["1::", "1::"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["fe80::1%eth0", "fe80::1"],
    ["::1.2.3.4", "::102:304"],
  ])("%s is %s", (text, canonical) => {
    const address = parseClientAddress(text)
    expect(address && formatIpAddress(address)).toBe(canonical)
  })

  it.each([
    "",
    "unknown",
    "1.2.3",
    "1.2.3.4.5",
    "256.1.1.1",
    "::g",
    "1:2:3:4:5:6:7",
    "1::2::3",
    ":1:2:3:4:5:6:7",
  ])("%j is not an address", (text) => {
    expect(parseClientAddress(text)).toBeUndefined()
  })
})
