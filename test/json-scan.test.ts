/**
 * The byte scanner that forwards children's answers without a parse: it must accept exactly what
 * JSON.parse accepts, and find the top-level members where JSON.parse would.
 */
import { describe, expect, it } from "vitest"
import { encodePieces, ForwardedResponse } from "../src/shared/jsonRpc.js"
import { forwardableAnswer, scanObject } from "../src/shared/jsonScan.js"

const bytes = (text: string) => Buffer.from(text, "utf8")

/** What JSON.parse says of the same bytes: the object, or undefined when it is not one. */
const parsedObject = (line: Uint8Array): Record<string, unknown> | undefined => {
  let text: string
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(line)
  } catch {
    return undefined
  }
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined
  } catch {
    return undefined
  }
}

/** The scanner agrees with JSON.parse on validity, and each member's span parses to its value. */
const agrees = (line: Uint8Array) => {
  const scanned = scanObject(line)
  const parsed = parsedObject(line)
  expect(scanned !== undefined, Buffer.from(line).toString("utf8")).toBe(parsed !== undefined)
  if (scanned === undefined || parsed === undefined) return
  const last = new Map<string, unknown>()
  const text = (start: number, end: number) => Buffer.from(line.subarray(start, end)).toString("utf8")
  for (const member of scanned.members) {
    const value: unknown = JSON.parse(text(member.start, member.end))
    last.set(JSON.parse(text(member.keyStart, member.keyEnd)) as string, value)
  }
  for (const [key, value] of last) expect(parsed[key]).toEqual(value)
  expect(scanned.members.length).toBeGreaterThanOrEqual(Object.keys(parsed).length)
}

/** A small deterministic PRNG, so a failure can be replayed. */
const prng = (seed: number) => () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed / 0x80000000
}

const pieces = [
  "a",
  "id",
  "é",
  "\u2028",
  "😀",
  '"',
  "\\",
  "/",
  "\n",
  "\t",
  "\u0000",
  "\ud800",
  " ",
  '"id":1',
  "}",
  "{",
  "result",
]

const randomValue = (random: () => number, depth: number): unknown => {
  const pick = Math.floor(random() * (depth > 4 ? 6 : 8))
  switch (pick) {
    case 0:
      return null
    case 1:
      return random() < 0.5
    case 2:
      return Math.floor((random() - 0.5) * 1e6)
    case 3:
      return (random() - 0.5) * 10 ** Math.floor(random() * 40 - 20)
    case 4:
    case 5: {
      let text = ""
      const length = Math.floor(random() * 6)
      for (let k = 0; k < length; k++) text += pieces[Math.floor(random() * pieces.length)]
      return text
    }
    case 6:
      return Array.from({ length: Math.floor(random() * 4) }, () => randomValue(random, depth + 1))
    default: {
      const object: Record<string, unknown> = {}
      const length = Math.floor(random() * 4)
      for (let k = 0; k < length; k++) {
        object[String(randomValue(random, 99))] = randomValue(random, depth + 1)
      }
      return object
    }
  }
}

/** JSON text with random white space between tokens and random \u escapes in strings. */
const stringifyLoosely = (random: () => number, value: unknown): string => {
  const space = () => [" ", "", "\t", "\r\n", ""][Math.floor(random() * 5)] ?? ""
  const str = (text: string) =>
    JSON.stringify(text).replace(/[a-z]/g, (c) =>
      random() < 0.1 ? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}` : c,
    )
  if (typeof value === "string") return str(value)
  if (Array.isArray(value))
    return `[${space()}${value.map((item) => stringifyLoosely(random, item)).join(`${space()},${space()}`)}${space()}]`
  if (typeof value === "object" && value !== null) {
    const members = Object.entries(value).map(
      ([key, item]) => `${str(key)}${space()}:${space()}${stringifyLoosely(random, item)}`,
    )
    return `{${space()}${members.join(`${space()},${space()}`)}${space()}}`
  }
  return JSON.stringify(value)
}

describe("scanObject", () => {
  it("agrees with JSON.parse on hand-picked edge cases", () => {
    const cases = [
      "{}",
      " { } ",
      "{}x",
      "[]",
      '"x"',
      "1",
      "",
      "{",
      "}",
      '{"a":1,}',
      '{"a":1 "b":2}',
      '{"a"1}',
      '{"a":[1,]}',
      '{"a":[,1]}',
      '{"a":01}',
      '{"a":-}',
      '{"a":-0}',
      '{"a":1.}',
      '{"a":.5}',
      '{"a":1e}',
      '{"a":1E+5}',
      '{"a":1e-5}',
      '{"a":+1}',
      '{"a":tru}',
      '{"a":true}',
      '{"a":nul}',
      '{"a":null,"b":false}',
      '{"a":"\\q"}',
      '{"a":"\\u12"}',
      '{"a":"\\u12G4"}',
      '{"a":"\\uD800"}',
      '{"a":"\t"}',
      '{"a":"\\"id\\":2"}',
      '{"a":{"id":3},"id":4}',
      '{"id":1,"id":2}',
      '{"\\u0069d":5}',
      '{"a":[[[[[[{"b":[]}]]]]]]}',
      '{"a":"😀é"}',
      '\ufeff{"a":1}',
      '{"a":1}\r',
      '{"a":1}\u00a0',
      '{"a":[1 2]}',
      '{"a":{"b"}}',
      '{"a":{"b":}}',
      '{"a":"unterminated}',
      '{"a":"x"}}',
      '{"a":"x"]',
      '{"a":[}',
    ]
    for (const text of cases) agrees(bytes(text))
  })

  it("refuses invalid UTF-8 as the strict decode does", () => {
    agrees(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x22, 0x7d]))
    agrees(Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x7d]))
  })

  it("agrees with JSON.parse on random JSON and on random corruptions of it", () => {
    const random = prng(42)
    for (let round = 0; round < 3000; round++) {
      const value = { id: randomValue(random, 0), result: randomValue(random, 0), x: randomValue(random, 2) }
      const text = stringifyLoosely(random, value)
      agrees(bytes(text))
      // One corruption: a byte dropped, repeated or replaced by a JSON-significant one.
      const line = bytes(text)
      const at = Math.floor(random() * line.length)
      const kind = Math.floor(random() * 3)
      const significant = bytes('"\\{}[],: 0-e.tn')
      const corrupted =
        kind === 0
          ? Buffer.concat([line.subarray(0, at), line.subarray(at + 1)])
          : kind === 1
            ? Buffer.concat([line.subarray(0, at + 1), line.subarray(at)])
            : Buffer.concat([
                line.subarray(0, at),
                significant.subarray(Math.floor(random() * significant.length)).subarray(0, 1),
                line.subarray(at + 1),
              ])
      agrees(corrupted)
    }
  })

  it("does not overflow the stack on deep nesting", () => {
    const deep = `{"a":${"[".repeat(200_000)}${"]".repeat(200_000)}}`
    expect(scanObject(bytes(deep))).toBeDefined()
    expect(scanObject(bytes(`{"a":${"[".repeat(200_000)}}`))).toBeUndefined()
  })
})

describe("forwardableAnswer", () => {
  const answer = (text: string) => forwardableAnswer(bytes(text))

  it("finds the top-level id wherever it is, and only there", () => {
    const line = '{"jsonrpc":"2.0","result":{"id":9,"text":"\\"id\\":8"},"id":12}'
    const found = answer(line)
    expect(found?.id).toBe(12)
    expect(line.slice(found?.idStart, found?.idEnd)).toBe("12")
    expect(answer('{ "id" : 7 , "jsonrpc" : "2.0" , "result" : [ ] }')?.id).toBe(7)
    expect(answer('{"id":1.0,"jsonrpc":"2.0","result":null}')?.id).toBe(1)
  })

  it("leaves to the parse whatever is not a plain success answer with a numeric id", () => {
    for (const text of [
      '{"jsonrpc":"2.0","id":"a","result":{}}',
      '{"jsonrpc":"2.0","id":null,"result":{}}',
      '{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}',
      '{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"x"}}',
      '{"jsonrpc":"2.0","id":1,"method":"x","result":{}}',
      '{"jsonrpc":"2.0","id":1}',
      '{"id":1,"result":{}}',
      '{"jsonrpc":"2.1","id":1,"result":{}}',
      '{"jsonrpc":"2\\u002e0","id":1,"result":{}}',
      '{"jsonrpc":"2.0","id":1,"id":2,"result":{}}',
      '{"jsonrpc":"2.0","\\u0069d":1,"result":{}}',
      '{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t"}}}',
      '{"jsonrpc":"2.0","id":1,"result":{"t\\u0061sk":{}}}',
      '{"jsonrpc":"2.0","id":1,"result":{"content":[]}',
      '[{"jsonrpc":"2.0","id":1,"result":{}}]',
    ]) {
      expect(answer(text), text).toBeUndefined()
    }
    // A "task" deeper in the result is only content.
    expect(answer('{"jsonrpc":"2.0","id":1,"result":{"content":[{"task":1}]}}')?.id).toBe(1)
  })

  it("writes the bytes around the caller's id, unchanged", () => {
    const line = bytes('{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"é\\n"}]}}')
    const found = forwardableAnswer(line)
    if (found === undefined) throw new Error("not forwardable")
    for (const callerId of ['abc"\\', 0, -5, "😀"]) {
      const pieces = encodePieces(new ForwardedResponse(line, found.idStart, found.idEnd, callerId))
      const written = Buffer.concat(pieces.map((piece) => (typeof piece === "string" ? bytes(piece) : piece)))
      expect(written.toString("utf8").endsWith("\n")).toBe(true)
      expect(JSON.parse(written.toString("utf8"))).toEqual({
        jsonrpc: "2.0",
        id: callerId,
        result: { content: [{ type: "text", text: "é\n" }] },
      })
    }
  })
})
