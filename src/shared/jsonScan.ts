/**
 * A validating JSON scanner over bytes, for forwarding a child's answer without parsing it: one pass
 * checks the line is JSON exactly as JSON.parse would accept it (given valid UTF-8), and notes where
 * the top-level members' values are. No string, object or copy of the line is made, so a result of
 * megabytes costs one loop over its bytes. Iterative (an explicit stack), so deep nesting cannot
 * overflow the call stack.
 */
import { isUtf8 } from "node:buffer"

/** A top-level member: where its key is (with its quotes) and where its value is, as byte offsets. */
export interface ScannedMember {
  readonly keyStart: number
  readonly keyEnd: number
  readonly start: number
  readonly end: number
}

/** A key as [start, end) offsets, quotes included. */
export interface KeySpan {
  readonly keyStart: number
  readonly keyEnd: number
}

export interface ScannedObject {
  /** The top-level members in order (a duplicate key appears twice, as written). */
  readonly members: ReadonlyArray<ScannedMember>
  /** Keys of the object that is the value of the top-level "result" member. */
  readonly resultKeys: ReadonlyArray<KeySpan>
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const COMMA = 0x2c
const COLON = 0x3a
const MINUS = 0x2d
const PLUS = 0x2b
const DOT = 0x2e
const ZERO = 0x30
const NINE = 0x39

const isSpace = (c: number) => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d
const isDigit = (c: number) => c >= ZERO && c <= NINE
const isHex = (c: number) => (c >= ZERO && c <= NINE) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66)

const skipSpace = (b: Uint8Array, i: number): number => {
  while (i < b.length && isSpace(b[i] as number)) i++
  return i
}

/** End of the string that opens at `i` (just past its closing quote), or -1 when it is not valid. */
const skipString = (b: Uint8Array, i: number): number => {
  const n = b.length
  i++
  while (i < n) {
    const c = b[i] as number
    if (c === QUOTE) return i + 1
    if (c === BACKSLASH) {
      const e = b[i + 1]
      if (e === 0x75) {
        // \uXXXX
        if (i + 5 >= n) return -1
        if (!isHex(b[i + 2] as number) || !isHex(b[i + 3] as number)) return -1
        if (!isHex(b[i + 4] as number) || !isHex(b[i + 5] as number)) return -1
        i += 6
        continue
      }
      // " \ / b f n r t
      if (
        e === QUOTE ||
        e === BACKSLASH ||
        e === 0x2f ||
        e === 0x62 ||
        e === 0x66 ||
        e === 0x6e ||
        e === 0x72 ||
        e === 0x74
      ) {
        i += 2
        continue
      }
      return -1
    }
    if (c < 0x20) return -1
    i++
  }
  return -1
}

/** End of the number that starts at `i`, or -1 when it does not follow JSON's grammar. */
const skipNumber = (b: Uint8Array, i: number): number => {
  if (b[i] === MINUS) i++
  if (b[i] === ZERO) i++
  else if (isDigit(b[i] ?? -1)) while (isDigit(b[i] ?? -1)) i++
  else return -1
  if (b[i] === DOT) {
    i++
    if (!isDigit(b[i] ?? -1)) return -1
    while (isDigit(b[i] ?? -1)) i++
  }
  if (b[i] === 0x65 || b[i] === 0x45) {
    i++
    if (b[i] === PLUS || b[i] === MINUS) i++
    if (!isDigit(b[i] ?? -1)) return -1
    while (isDigit(b[i] ?? -1)) i++
  }
  return i
}

const matches = (b: Uint8Array, i: number, word: string): boolean => {
  for (let k = 0; k < word.length; k++) if (b[i + k] !== word.charCodeAt(k)) return false
  return true
}

/** Whether the key at [start, end) (quotes included) is `word` spelled without escapes. */
const isKey = (b: Uint8Array, key: KeySpan, word: string): boolean =>
  key.keyEnd - key.keyStart === word.length + 2 && matches(b, key.keyStart + 1, word)

// Containers on the stack.
const IN_OBJECT = 1
const IN_ARRAY = 2

/**
 * Scan one JSON text. Returns its top-level object's members, or undefined when the text is not
 * valid JSON or not an object. Accepts exactly what JSON.parse accepts after a strict UTF-8 decode,
 * except a leading byte-order mark (which the decode would strip): refused here.
 */
export const scanObject = (b: Uint8Array): ScannedObject | undefined => {
  if (!isUtf8(b)) return undefined
  const n = b.length
  let i = skipSpace(b, 0)
  if (b[i] !== OPEN_BRACE) return undefined
  const members: Array<ScannedMember> = []
  const resultKeys: Array<KeySpan> = []
  const stack: Array<number> = []
  /** Depth of the container we are in: 1 is the top-level object. */
  let depth = 0
  /** The depth-2 object that is the top-level "result" value, when we are in it. */
  let inResult = false
  let memberKeyStart = -1
  let memberKeyEnd = -1
  let memberStart = -1
  // Each turn parses one value at `i` (after white space), then what follows it in its container.
  let expectKey = false
  i++
  stack.push(IN_OBJECT)
  depth = 1
  i = skipSpace(b, i)
  if (b[i] === CLOSE_BRACE) {
    i = skipSpace(b, i + 1)
    return i === n ? { members, resultKeys } : undefined
  }
  expectKey = true
  while (true) {
    if (expectKey) {
      // A key, a colon, then the value.
      if (b[i] !== QUOTE) return undefined
      const keyEnd = skipString(b, i)
      if (keyEnd < 0) return undefined
      if (depth === 1) {
        memberKeyStart = i
        memberKeyEnd = keyEnd
      } else if (depth === 2 && inResult) resultKeys.push({ keyStart: i, keyEnd })
      i = skipSpace(b, keyEnd)
      if (b[i] !== COLON) return undefined
      i = skipSpace(b, i + 1)
      expectKey = false
    }
    if (depth === 1) memberStart = i
    // One value.
    const c = b[i]
    let end: number
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      const object = c === OPEN_BRACE
      if (depth === 1) {
        inResult = object && isKey(b, { keyStart: memberKeyStart, keyEnd: memberKeyEnd }, "result")
      }
      stack.push(object ? IN_OBJECT : IN_ARRAY)
      depth++
      i = skipSpace(b, i + 1)
      if (b[i] === (object ? CLOSE_BRACE : CLOSE_BRACKET)) {
        // Empty container: it is a complete value.
        stack.pop()
        depth--
        end = i + 1
      } else {
        expectKey = object
        continue
      }
    } else if (c === QUOTE) {
      end = skipString(b, i)
    } else if (c === MINUS || isDigit(c ?? -1)) {
      end = skipNumber(b, i)
    } else if (c === 0x74) {
      end = matches(b, i, "true") ? i + 4 : -1
    } else if (c === 0x66) {
      end = matches(b, i, "false") ? i + 5 : -1
    } else if (c === 0x6e) {
      end = matches(b, i, "null") ? i + 4 : -1
    } else {
      return undefined
    }
    if (end < 0) return undefined
    // After a complete value: close containers as far as they end here, else a comma.
    while (true) {
      if (depth === 1) {
        members.push({ keyStart: memberKeyStart, keyEnd: memberKeyEnd, start: memberStart, end })
      }
      i = skipSpace(b, end)
      const container = stack[stack.length - 1]
      const next = b[i]
      if (next === COMMA) {
        i = skipSpace(b, i + 1)
        expectKey = container === IN_OBJECT
        break
      }
      if (next !== (container === IN_OBJECT ? CLOSE_BRACE : CLOSE_BRACKET)) return undefined
      stack.pop()
      depth--
      end = i + 1
      if (depth === 1) inResult = false
      if (depth === 0) {
        i = skipSpace(b, end)
        return i === n ? { members, resultKeys } : undefined
      }
    }
  }
}

/** Where a child's answer can be forwarded as its bytes, with only the id replaced. */
export interface ForwardableAnswer {
  /** The id the child answered (the gateway's own, a number). */
  readonly id: number
  /** The id's bytes in the line: [idStart, idEnd). */
  readonly idStart: number
  readonly idEnd: number
}

const JSONRPC_2_0 = '"2.0"'

/**
 * A successful answer that needs no parse: valid JSON, "jsonrpc":"2.0", a numeric "id", a "result"
 * and no "error" or "method", each key once and unescaped, and a result that announces no task (a
 * task's id must be routed, so such a result is parsed). Anything else is undefined: parse it.
 */
export const forwardableAnswer = (line: Uint8Array): ForwardableAnswer | undefined => {
  const scanned = scanObject(line)
  return scanned === undefined ? undefined : forwardableIn(scanned, { at: (i) => line[i] })
}

/** Bytes read by absolute offset: a line in one buffer, or in pieces (Pieces). */
interface ByteReader {
  at(i: number): number | undefined
}

const matchesAt = (r: ByteReader, i: number, word: string): boolean => {
  for (let k = 0; k < word.length; k++) if (r.at(i + k) !== word.charCodeAt(k)) return false
  return true
}

/** Whether the key at [start, end) (quotes included) is `word` spelled without escapes. */
const isKeyAt = (r: ByteReader, key: KeySpan, word: string): boolean =>
  key.keyEnd - key.keyStart === word.length + 2 && matchesAt(r, key.keyStart + 1, word)

/** Whether the key has an escape: it might spell any name, so it is not judged by its bytes. */
const hasEscapeAt = (r: ByteReader, key: KeySpan): boolean => {
  for (let k = key.keyStart + 1; k < key.keyEnd - 1; k++) if (r.at(k) === BACKSLASH) return true
  return false
}

/** The members' checks of forwardableAnswer, once the line is scanned (a few reads per member). */
const forwardableIn = (scanned: ScannedObject, r: ByteReader): ForwardableAnswer | undefined => {
  let id: ScannedMember | undefined
  let jsonrpc: ScannedMember | undefined
  let result = false
  for (const member of scanned.members) {
    if (isKeyAt(r, member, "id")) {
      if (id !== undefined) return undefined
      id = member
    } else if (isKeyAt(r, member, "jsonrpc")) {
      if (jsonrpc !== undefined) return undefined
      jsonrpc = member
    } else if (isKeyAt(r, member, "result")) {
      if (result) return undefined
      result = true
    } else if (isKeyAt(r, member, "error") || isKeyAt(r, member, "method") || hasEscapeAt(r, member)) {
      // An error or a method makes it no success answer; an escaped key might spell any name.
      return undefined
    }
  }
  if (id === undefined || jsonrpc === undefined || !result) return undefined
  if (jsonrpc.end - jsonrpc.start !== JSONRPC_2_0.length || !matchesAt(r, jsonrpc.start, JSONRPC_2_0)) {
    return undefined
  }
  const first = r.at(id.start)
  if (first !== MINUS && !isDigit(first ?? -1)) return undefined
  for (const key of scanned.resultKeys) if (isKeyAt(r, key, "task") || hasEscapeAt(r, key)) return undefined
  let text = ""
  for (let k = id.start; k < id.end; k++) text += String.fromCharCode(r.at(k) as number)
  return { id: Number(text), idStart: id.start, idEnd: id.end }
}

/**
 * A line held as the pieces it arrived in (the child's pipe chunks), read by absolute offset: a long
 * answer is scanned and forwarded without joining it into one buffer, which would be a second copy
 * of the whole line. Reads go nearly in order, so the piece of the last read is tried first.
 */
export class Pieces {
  readonly pieces: ReadonlyArray<Uint8Array>
  readonly length: number
  private readonly starts: Array<number> = []
  private current = 0

  constructor(pieces: ReadonlyArray<Uint8Array>) {
    // An empty piece would hold no offset; dropping it keeps the lookup simple.
    this.pieces = pieces.filter((piece) => piece.length > 0)
    let length = 0
    for (const piece of this.pieces) {
      this.starts.push(length)
      length += piece.length
    }
    this.length = length
  }

  /** The byte at `i`, or undefined outside the line. */
  at(i: number): number | undefined {
    const index = this.pieceOf(i)
    return index < 0 ? undefined : (this.pieces[index] as Uint8Array)[i - (this.starts[index] as number)]
  }

  /** First offset from `i` on that holds a quote, a backslash or a control byte; the length if none. */
  skipPlain(i: number): number {
    let index = this.pieceOf(i)
    if (index < 0) return this.length
    while (index < this.pieces.length) {
      const piece = this.pieces[index] as Uint8Array
      const start = this.starts[index] as number
      // The bulk of a large result: a tight loop within one piece.
      for (let k = i - start; k < piece.length; k++) {
        const c = piece[k] as number
        if (c === QUOTE || c === BACKSLASH || c < 0x20) {
          this.current = index
          return start + k
        }
      }
      index++
      i = start + piece.length
    }
    return this.length
  }

  /** Index of the piece holding offset `i`, or -1 outside the line. */
  private pieceOf(i: number): number {
    if (i < 0 || i >= this.length) return -1
    let index = this.current
    while ((this.starts[index] as number) > i) index--
    while ((this.starts[index] as number) + (this.pieces[index] as Uint8Array).length <= i) index++
    this.current = index
    return index
  }
}

/** Length of the UTF-8 sequence a lead byte opens (0 for a byte no sequence starts with). */
const sequenceLength = (lead: number): number =>
  lead < 0x80 ? 1 : lead < 0xc2 ? 0 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : lead < 0xf5 ? 4 : 0

/**
 * Whether the pieces together are valid UTF-8, as `isUtf8` of their join would say: each piece is
 * checked whole, and a character split across two pieces is checked from a copy of its few bytes.
 */
export const isUtf8Pieces = (pieces: ReadonlyArray<Uint8Array>): boolean => {
  let carry: Uint8Array = new Uint8Array(0)
  for (let index = 0; index < pieces.length; index++) {
    let piece = pieces[index] as Uint8Array
    if (carry.length > 0) {
      const need = sequenceLength(carry[0] as number) - carry.length
      if (need > piece.length && index < pieces.length - 1) {
        // Still short: the character goes on in the next piece.
        carry = Buffer.concat([carry, piece])
        continue
      }
      if (!isUtf8(Buffer.concat([carry, piece.subarray(0, need)]))) return false
      piece = piece.subarray(need)
      carry = new Uint8Array(0)
    }
    let cut = piece.length
    if (index < pieces.length - 1) {
      // A sequence opened in the last three bytes but not finished there is carried over.
      for (let k = piece.length - 1; k >= Math.max(0, piece.length - 3); k--) {
        const c = piece[k] as number
        if ((c & 0xc0) === 0x80) continue
        if (c >= 0xc0 && k + sequenceLength(c) > piece.length) cut = k
        break
      }
    }
    if (!isUtf8(piece.subarray(0, cut))) return false
    carry = piece.subarray(cut)
  }
  return carry.length === 0
}

// The scanner again, over pieces: the same grammar and results as scanObject (offsets are into the
// whole line), read through Pieces. Kept apart so the scan of an ordinary one-piece line pays nothing
// for this; test/json-scan.test.ts checks the two agree on every split of many lines.

const skipSpaceP = (p: Pieces, i: number): number => {
  while (i < p.length && isSpace(p.at(i) as number)) i++
  return i
}

const skipStringP = (p: Pieces, i: number): number => {
  const n = p.length
  i++
  while (i < n) {
    i = p.skipPlain(i)
    if (i >= n) return -1
    const c = p.at(i) as number
    if (c === QUOTE) return i + 1
    if (c === BACKSLASH) {
      const e = p.at(i + 1)
      if (e === 0x75) {
        if (i + 5 >= n) return -1
        for (let k = 2; k <= 5; k++) if (!isHex(p.at(i + k) as number)) return -1
        i += 6
        continue
      }
      if (
        e === QUOTE ||
        e === BACKSLASH ||
        e === 0x2f ||
        e === 0x62 ||
        e === 0x66 ||
        e === 0x6e ||
        e === 0x72 ||
        e === 0x74
      ) {
        i += 2
        continue
      }
      return -1
    }
    // A control byte.
    return -1
  }
  return -1
}

const skipNumberP = (p: Pieces, i: number): number => {
  if (p.at(i) === MINUS) i++
  if (p.at(i) === ZERO) i++
  else if (isDigit(p.at(i) ?? -1)) while (isDigit(p.at(i) ?? -1)) i++
  else return -1
  if (p.at(i) === DOT) {
    i++
    if (!isDigit(p.at(i) ?? -1)) return -1
    while (isDigit(p.at(i) ?? -1)) i++
  }
  if (p.at(i) === 0x65 || p.at(i) === 0x45) {
    i++
    if (p.at(i) === PLUS || p.at(i) === MINUS) i++
    if (!isDigit(p.at(i) ?? -1)) return -1
    while (isDigit(p.at(i) ?? -1)) i++
  }
  return i
}

/** scanObject of the pieces' join, without the join. */
export const scanPieces = (p: Pieces): ScannedObject | undefined => {
  if (!isUtf8Pieces(p.pieces)) return undefined
  const n = p.length
  let i = skipSpaceP(p, 0)
  if (p.at(i) !== OPEN_BRACE) return undefined
  const members: Array<ScannedMember> = []
  const resultKeys: Array<KeySpan> = []
  const stack: Array<number> = []
  let depth = 0
  let inResult = false
  let memberKeyStart = -1
  let memberKeyEnd = -1
  let memberStart = -1
  let expectKey = false
  i++
  stack.push(IN_OBJECT)
  depth = 1
  i = skipSpaceP(p, i)
  if (p.at(i) === CLOSE_BRACE) {
    i = skipSpaceP(p, i + 1)
    return i === n ? { members, resultKeys } : undefined
  }
  expectKey = true
  while (true) {
    if (expectKey) {
      if (p.at(i) !== QUOTE) return undefined
      const keyEnd = skipStringP(p, i)
      if (keyEnd < 0) return undefined
      if (depth === 1) {
        memberKeyStart = i
        memberKeyEnd = keyEnd
      } else if (depth === 2 && inResult) resultKeys.push({ keyStart: i, keyEnd })
      i = skipSpaceP(p, keyEnd)
      if (p.at(i) !== COLON) return undefined
      i = skipSpaceP(p, i + 1)
      expectKey = false
    }
    if (depth === 1) memberStart = i
    const c = p.at(i)
    let end: number
    if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      const object = c === OPEN_BRACE
      if (depth === 1) {
        inResult = object && isKeyAt(p, { keyStart: memberKeyStart, keyEnd: memberKeyEnd }, "result")
      }
      stack.push(object ? IN_OBJECT : IN_ARRAY)
      depth++
      i = skipSpaceP(p, i + 1)
      if (p.at(i) === (object ? CLOSE_BRACE : CLOSE_BRACKET)) {
        stack.pop()
        depth--
        end = i + 1
      } else {
        expectKey = object
        continue
      }
    } else if (c === QUOTE) {
      end = skipStringP(p, i)
    } else if (c === MINUS || isDigit(c ?? -1)) {
      end = skipNumberP(p, i)
    } else if (c === 0x74) {
      end = matchesAt(p, i, "true") ? i + 4 : -1
    } else if (c === 0x66) {
      end = matchesAt(p, i, "false") ? i + 5 : -1
    } else if (c === 0x6e) {
      end = matchesAt(p, i, "null") ? i + 4 : -1
    } else {
      return undefined
    }
    if (end < 0) return undefined
    while (true) {
      if (depth === 1) {
        members.push({ keyStart: memberKeyStart, keyEnd: memberKeyEnd, start: memberStart, end })
      }
      i = skipSpaceP(p, end)
      const container = stack[stack.length - 1]
      const next = p.at(i)
      if (next === COMMA) {
        i = skipSpaceP(p, i + 1)
        expectKey = container === IN_OBJECT
        break
      }
      if (next !== (container === IN_OBJECT ? CLOSE_BRACE : CLOSE_BRACKET)) return undefined
      stack.pop()
      depth--
      end = i + 1
      if (depth === 1) inResult = false
      if (depth === 0) {
        i = skipSpaceP(p, end)
        return i === n ? { members, resultKeys } : undefined
      }
    }
  }
}

/** forwardableAnswer of the pieces' join, without the join. */
export const forwardablePieces = (p: Pieces): ForwardableAnswer | undefined => {
  const scanned = scanPieces(p)
  return scanned === undefined ? undefined : forwardableIn(scanned, p)
}
