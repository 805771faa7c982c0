/**
 * What the client bridge needs to know about the JSON-RPC lines it relays, learnt without decoding
 * them: a streaming scan of each line's top-level `id`, `method`, `result`/`error` and, for
 * `notifications/cancelled`, `params.requestId`. The bytes themselves are relayed untouched; this
 * only watches them go by, so that requests still unanswered when the gateway is lost can be
 * answered with an error.
 *
 * The scan works on bytes: JSON's structural characters are ASCII and never occur inside a UTF-8
 * multi-byte sequence, and a raw newline cannot occur inside a JSON string, so a newline always ends
 * a message. Long strings are skipped with native searches rather than byte by byte.
 */

/** The facts of one line. Ids are in canonical JSON (`1`, `"a"`), so equal ids compare equal. */
export interface LineFacts {
  readonly id: string | undefined
  readonly method: string | undefined
  /** The line has a top-level `result` or `error`: it answers a request. */
  readonly answers: boolean
  /** For notifications/cancelled: the id of the request it cancels. */
  readonly cancels: string | undefined
}

const NEWLINE = 0x0a
const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_BRACE = 0x7b
const CLOSE_BRACE = 0x7d
const OPEN_BRACKET = 0x5b
const CLOSE_BRACKET = 0x5d
const COLON = 0x3a
const COMMA = 0x2c

const isBlank = (byte: number): boolean => byte === 0x20 || byte === 0x09 || byte === 0x0d

/** Longest key worth reading (`requestId`), and longest value kept (an id or a method name). */
const maxKeyBytes = 16
const maxValueBytes = 1024

type Shape = "start" | "object" | "skip"
type Target = "id" | "method" | "requestId"

/** The JSON value of raw text, if it is an id (string or number); as canonical JSON. */
const canonicalId = (raw: string | undefined): string | undefined => {
  if (raw === undefined) return undefined
  try {
    const value: unknown = JSON.parse(raw)
    return typeof value === "string" || (typeof value === "number" && Number.isFinite(value))
      ? JSON.stringify(value)
      : undefined
  } catch {
    return undefined
  }
}

const stringValue = (raw: string | undefined): string | undefined => {
  if (raw === undefined) return undefined
  try {
    const value: unknown = JSON.parse(raw)
    return typeof value === "string" ? value : undefined
  } catch {
    return undefined
  }
}

export class LineScanner {
  /** Bytes of the current line have been seen (and relayed) but not its newline. */
  midLine = false

  private shape: Shape = "start"
  private depth = 0
  private inString = false
  private escaped = false
  /** Inside the object that is the value of the top-level `params`. */
  private inParams = false
  /** At the level being watched (top level, or params), the next string is a key. */
  private expectKey = false
  private topKey = ""
  private paramsKey = ""
  private key: Array<number> | undefined
  private keyTooLong = false
  /** A value is about to start for this field (after its colon). */
  private armed: Target | undefined
  private value: Array<number> | undefined
  private valueIsString = false
  private valueTarget: Target = "id"
  private valueTooLong = false
  private found: { id?: string; method?: string; requestId?: string } = {}
  private answers = false

  /** Feed a chunk; returns the facts of the lines it completed that carry an id or a method. */
  push(chunk: Uint8Array): Array<LineFacts> {
    const out: Array<LineFacts> = []
    const length = chunk.length
    // Next positions of a quote, a backslash and a newline, for skipping string contents.
    let nextQuote = -1
    let nextBackslash = -1
    let nextNewline = -1
    let i = 0
    while (i < length) {
      const byte = chunk[i] as number
      if (byte === NEWLINE) {
        const facts = this.finishLine()
        if (facts !== undefined) out.push(facts)
        i++
        continue
      }
      this.midLine = true
      if (this.shape === "skip") {
        const newline = chunk.indexOf(NEWLINE, i)
        i = newline === -1 ? length : newline
        continue
      }
      if (this.inString) {
        if (this.escaped) {
          this.escaped = false
          this.capture(byte)
          i++
        } else if (byte === BACKSLASH) {
          this.escaped = true
          this.capture(byte)
          i++
        } else if (byte === QUOTE) {
          this.inString = false
          this.endString()
          i++
        } else if (this.key !== undefined || this.value !== undefined) {
          this.capture(byte)
          i++
        } else {
          // Skip to whichever comes first: the closing quote, an escape, or a newline (bad input).
          if (nextQuote < i) nextQuote = indexOrEnd(chunk, QUOTE, i)
          if (nextBackslash < i) nextBackslash = indexOrEnd(chunk, BACKSLASH, i)
          if (nextNewline < i) nextNewline = indexOrEnd(chunk, NEWLINE, i)
          i = Math.min(nextQuote, nextBackslash, nextNewline)
        }
        continue
      }
      this.structural(byte)
      i++
    }
    return out
  }

  /** The facts of a last line that ended without a newline. */
  end(): Array<LineFacts> {
    if (!this.midLine) return []
    const facts = this.finishLine()
    return facts === undefined ? [] : [facts]
  }

  private watching(): boolean {
    return this.depth === 1 || (this.depth === 2 && this.inParams)
  }

  private structural(byte: number): void {
    if (this.shape === "start") {
      if (isBlank(byte)) return
      if (byte === OPEN_BRACE) {
        this.shape = "object"
        this.depth = 1
        this.expectKey = true
      } else {
        // A batch, or not JSON: nothing to learn from it.
        this.shape = "skip"
      }
      return
    }
    if (this.value !== undefined && !this.valueIsString) {
      // A number or literal ends at a blank or at the next structural character.
      if (isBlank(byte) || byte === COMMA || byte === CLOSE_BRACE || byte === CLOSE_BRACKET) {
        this.endValue()
      } else {
        this.capture(byte)
        return
      }
    }
    if (isBlank(byte)) return
    switch (byte) {
      case QUOTE:
        this.inString = true
        if (this.watching() && this.expectKey) {
          this.key = []
          this.keyTooLong = false
        } else if (this.armed !== undefined) {
          this.startValue(byte, true)
        }
        return
      case OPEN_BRACE:
      case OPEN_BRACKET:
        this.armed = undefined
        if (this.depth === 1 && byte === OPEN_BRACE && !this.expectKey && this.topKey === "params") {
          this.inParams = true
          this.expectKey = true
        }
        this.depth++
        return
      case CLOSE_BRACE:
      case CLOSE_BRACKET:
        this.depth--
        if (this.depth === 1) {
          this.inParams = false
          this.expectKey = false
        } else if (this.depth <= 0) {
          // The message is complete; whatever follows on the line is not ours to read.
          this.shape = "skip"
        }
        return
      case COLON:
        if (!this.watching()) return
        this.expectKey = false
        this.armed =
          this.depth === 1
            ? this.topKey === "id" || this.topKey === "method"
              ? this.topKey
              : undefined
            : this.paramsKey === "requestId"
              ? "requestId"
              : undefined
        return
      case COMMA:
        if (!this.watching()) return
        this.expectKey = true
        this.armed = undefined
        return
      default:
        if (this.armed !== undefined) this.startValue(byte, false)
    }
  }

  private startValue(first: number, isString: boolean): void {
    this.valueTarget = this.armed ?? "id"
    this.armed = undefined
    this.value = [first]
    this.valueIsString = isString
    this.valueTooLong = false
  }

  private capture(byte: number): void {
    if (this.key !== undefined) {
      if (this.key.length < maxKeyBytes) this.key.push(byte)
      else this.keyTooLong = true
    } else if (this.value !== undefined) {
      if (this.value.length < maxValueBytes) this.value.push(byte)
      else this.valueTooLong = true
    }
  }

  private endString(): void {
    if (this.key !== undefined) {
      const name = this.keyTooLong ? "" : String.fromCharCode(...this.key)
      this.key = undefined
      if (this.depth === 1) {
        this.topKey = name
        if (name === "result" || name === "error") this.answers = true
      } else {
        this.paramsKey = name
      }
    } else if (this.value !== undefined) {
      this.value.push(QUOTE)
      this.endValue()
    }
  }

  private endValue(): void {
    if (this.value !== undefined && !this.valueTooLong) {
      this.found[this.valueTarget] = Buffer.from(this.value).toString("utf8")
    }
    this.value = undefined
  }

  private finishLine(): LineFacts | undefined {
    if (this.value !== undefined && !this.valueIsString) this.endValue()
    const found = this.found
    const facts: LineFacts | undefined =
      this.shape === "start" || (found.id === undefined && found.method === undefined)
        ? undefined
        : {
            id: canonicalId(found.id),
            method: stringValue(found.method),
            answers: this.answers,
            cancels: canonicalId(found.requestId),
          }
    this.midLine = false
    this.shape = "start"
    this.depth = 0
    this.inString = false
    this.escaped = false
    this.inParams = false
    this.expectKey = false
    this.topKey = ""
    this.paramsKey = ""
    this.key = undefined
    this.armed = undefined
    this.value = undefined
    this.found = {}
    this.answers = false
    return facts
  }
}

const indexOrEnd = (chunk: Uint8Array, byte: number, from: number): number => {
  const found = chunk.indexOf(byte, from)
  return found === -1 ? chunk.length : found
}
