/**
 * A long answer is scanned as the pieces it arrived in, never joined: the verdict and the offsets
 * must be exactly those of the scan of the whole line, wherever the line was cut.
 */
import { isUtf8 } from "node:buffer"
import { describe, expect, it } from "vitest"
import { encodePieces, ForwardedResponse } from "../src/shared/jsonRpc.js"
import {
  forwardableAnswer,
  forwardablePieces,
  isUtf8Pieces,
  Pieces,
  scanObject,
  scanPieces,
} from "../src/shared/jsonScan.js"
import { LineFrame, LineFramer } from "../src/shared/lineFramer.js"

const bytes = (text: string) => Buffer.from(text, "utf8")

/** The line cut at the given offsets (sorted, may repeat, so an empty piece is tried too). */
const cut = (line: Uint8Array, at: ReadonlyArray<number>): Array<Uint8Array> => {
  const out: Array<Uint8Array> = []
  let from = 0
  for (const offset of at) {
    out.push(line.subarray(from, offset))
    from = offset
  }
  out.push(line.subarray(from))
  return out
}

/** Every split of the line gives what the whole line gives. */
const sameVerdictAtEverySplit = (line: Uint8Array) => {
  const whole = scanObject(line)
  const answer = forwardableAnswer(line)
  const splits: Array<Array<number>> = []
  for (let a = 0; a <= line.length; a++) splits.push([a])
  for (let a = 0; a <= line.length; a += 3) for (let b = a; b <= line.length; b += 2) splits.push([a, b])
  splits.push(Array.from({ length: line.length + 1 }, (_, k) => k))
  for (const at of splits) {
    const pieces = cut(line, at)
    const label = `${Buffer.from(line).toString("latin1")} cut at ${at.join(",")}`
    expect(scanPieces(new Pieces(pieces)), label).toEqual(whole)
    expect(forwardablePieces(new Pieces(pieces)), label).toEqual(answer)
    expect(isUtf8Pieces(pieces), label).toBe(isUtf8(line))
  }
}

const lines = [
  '{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hello"}]}}',
  '{"result":{"a":[1,2.5e-3,-0,true,false,null]},"jsonrpc":"2.0","id":42}',
  '{"jsonrpc":"2.0","id":7,"result":{"text":"é😀\\u00e9\\n\\"\\\\ \u2028"}}',
  ' {\t"jsonrpc" : "2.0" ,\r\n"id":-3 , "result" : { } } ',
  '{"jsonrpc":"2.0","id":1,"result":{"task":{"taskId":"t"}}}',
  '{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"no"}}',
  '{"jsonrpc":"2.0","id":"x","result":{}}',
  '{"jsonrpc":"2.0","id":1,"id":2,"result":{}}',
  '{"jsonrpc":"2.0","\\u0069d":1,"result":{}}',
  "{}",
  // Not JSON, or not an object.
  '{"jsonrpc":"2.0","id":1,"result":{}',
  '{"jsonrpc":"2.0","id":1,"result":{}}x',
  '{"jsonrpc":"2.0","id":01,"result":{}}',
  '{"jsonrpc":"2.0","id":1.,"result":{}}',
  '{"jsonrpc":"2.0","id":1,"result":{"t":"\\x"}}',
  '{"jsonrpc":"2.0","id":1,"result":{"t":"\\u12g4"}}',
  '{"jsonrpc":"2.0","id":1,"result":{"t":"a\tb"}}',
  '{"jsonrpc":"2.0","id":1,"result":[tru]}',
  '{"jsonrpc":"2.0","id":1,"result":{"a":1,}}',
  "[1,2]",
  '"text"',
]

describe("scanPieces", () => {
  it("gives the verdict and offsets of the whole line, at every split", () => {
    for (const line of lines) sameVerdictAtEverySplit(bytes(line))
  })

  it("refuses invalid UTF-8 wherever a character is cut", () => {
    const valid = bytes('{"jsonrpc":"2.0","id":1,"result":{"t":"aé€😀b"}}')
    sameVerdictAtEverySplit(valid)
    const at = valid.indexOf(0xe2)
    for (const broken of [
      Buffer.concat([valid.subarray(0, at), Buffer.from([0xe2, 0x82]), valid.subarray(at + 3)]),
      Buffer.concat([valid.subarray(0, at), Buffer.from([0x82]), valid.subarray(at + 1)]),
      Buffer.concat([valid.subarray(0, at), Buffer.from([0xc0, 0xaf]), valid.subarray(at + 3)]),
      Buffer.concat([valid.subarray(0, at), Buffer.from([0xed, 0xa0, 0x80]), valid.subarray(at + 3)]),
      Buffer.concat([valid.subarray(0, at), Buffer.from([0xf8, 0x88, 0x80]), valid.subarray(at + 3)]),
      Buffer.concat([valid.subarray(0, valid.length - 1), Buffer.from([0xf0, 0x9f])]),
      Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), valid]),
    ]) {
      expect(scanObject(broken)).toBeUndefined()
      sameVerdictAtEverySplit(broken)
    }
  })

  it("agrees on long lines cut into many pieces", () => {
    const text = 'é😀 \\"x'.repeat(3000)
    const line = bytes(`{"jsonrpc":"2.0","result":{"content":[{"type":"text","text":"${text}"}]},"id":9}`)
    const whole = forwardableAnswer(line)
    expect(whole?.id).toBe(9)
    for (const size of [1, 2, 3, 7, 4096, 65536]) {
      const at: Array<number> = []
      for (let offset = size; offset < line.length; offset += size) at.push(offset)
      expect(forwardablePieces(new Pieces(cut(line, at))), `pieces of ${size}`).toEqual(whole)
    }
  })
})

describe("a forwarded answer held as pieces", () => {
  it("is written as the bytes around the caller's id, without joining the pieces", () => {
    const line = bytes('{"result":{"text":"ab"},"jsonrpc":"2.0","id":12345}')
    const whole = forwardableAnswer(line)
    if (whole === undefined) throw new Error("not forwardable")
    for (let a = 1; a < line.length; a++) {
      const pieces = cut(line, [a, Math.min(line.length, a + 5)])
      const found = forwardablePieces(new Pieces(pieces))
      expect(found).toEqual(whole)
      const written = encodePieces(new ForwardedResponse(pieces, whole.idStart, whole.idEnd, "c"))
      const text = written
        .map((piece) => (typeof piece === "string" ? piece : Buffer.from(piece).toString()))
        .join("")
      expect(text).toBe('{"result":{"text":"ab"},"jsonrpc":"2.0","id":"c"}\n')
      // Slices of the child's chunks, not copies.
      for (const piece of written) {
        if (typeof piece !== "string" && piece.length > 1) {
          expect(pieces.some((held) => held.buffer === piece.buffer)).toBe(true)
        }
      }
    }
  })
})

describe("LineFramer pieces", () => {
  it("hands a line that came in several chunks on as those chunks' pieces", () => {
    const framer = new LineFramer(1 << 20)
    const a = bytes('{"a":"')
    const b = bytes("x".repeat(100))
    const c = bytes('"}\r\n{"b":1}\n')
    expect(framer.push(a)).toEqual([])
    expect(framer.push(b)).toEqual([])
    const frames = framer.push(c)
    const first = frames[0]
    if (!(first instanceof LineFrame)) throw new Error("no line")
    expect(first.pieces.length).toBe(3)
    expect(first.pieces[0]?.buffer).toBe(a.buffer)
    expect(first.size).toBe(a.length + b.length + 2)
    expect(Buffer.from(first.bytes).toString()).toBe(`{"a":"${"x".repeat(100)}"}`)
    const second = frames[1]
    if (!(second instanceof LineFrame)) throw new Error("no line")
    expect(second.pieces.length).toBe(1)
    expect(second.bytes.buffer).toBe(c.buffer)
  })

  it("drops a carriage return that is a piece of its own", () => {
    const framer = new LineFramer(1024)
    expect(framer.push(bytes('{"a":1}\r'))).toEqual([])
    const [frame] = framer.push(bytes("\n"))
    if (!(frame instanceof LineFrame)) throw new Error("no line")
    expect(frame.pieces.length).toBe(1)
    expect(frame.size).toBe(7)
    expect(Buffer.from(frame.bytes).toString()).toBe('{"a":1}')
  })

  it("still skips a line of white space that came in pieces", () => {
    const framer = new LineFramer(1024)
    expect(framer.push(bytes("  \t"))).toEqual([])
    expect(framer.push(bytes(" \r\n"))).toEqual([])
  })
})
