/**
 * Reading SSH wire encodings (RFC 4251 section 5) from untrusted bytes: certificates, KRLs,
 * signatures. Every read checks its length first; a short or malformed input ends the parse with a
 * `WireProblem`, never with a crash. Inside a parse the problem travels as an exception (so parsers
 * read like the specs they follow); `readWire` is the only place that catches it, and nothing else
 * escapes this module's callers as a throw.
 */
import { Either } from "effect"

export type WireProblemKind = "truncated" | "malformed"

/** Thrown by WireReader and `malformed`, caught only by `readWire`. */
export class WireProblem {
  constructor(
    readonly kind: WireProblemKind,
    readonly detail: string,
    /** A finer reason a parser wants to report (e.g. "unknown key type"); free-form per parser. */
    readonly code: string | undefined = undefined,
  ) {}
}

/** Stop the parse: the bytes are there but do not mean anything acceptable. */
export const malformed = (detail: string, code?: string): never => {
  throw new WireProblem("malformed", detail, code)
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true })

export class WireReader {
  private offset = 0

  constructor(private readonly bytes: Buffer) {}

  get position(): number {
    return this.offset
  }

  get remaining(): number {
    return this.bytes.length - this.offset
  }

  atEnd(): boolean {
    return this.offset === this.bytes.length
  }

  private take(length: number, what: string): Buffer {
    if (length > this.remaining) throw new WireProblem("truncated", `${what} is cut short`)
    const out = this.bytes.subarray(this.offset, this.offset + length)
    this.offset += length
    return out
  }

  u8(what: string): number {
    return this.take(1, what).readUInt8(0)
  }

  bool(what: string): boolean {
    return this.u8(what) !== 0
  }

  u32(what: string): number {
    return this.take(4, what).readUInt32BE(0)
  }

  u64(what: string): bigint {
    return this.take(8, what).readBigUInt64BE(0)
  }

  /** An SSH `string`: uint32 length, then that many bytes (a view, not a copy). */
  string(what: string): Buffer {
    return this.take(this.u32(what), what)
  }

  /**
   * A string meant as text (key ids, principals, option names). OpenSSH refuses embedded NULs
   * (sshbuf_get_cstring); we also refuse invalid UTF-8, since these become identities and log fields.
   */
  text(what: string): string {
    const bytes = this.string(what)
    if (bytes.includes(0)) malformed(`${what} contains a NUL byte`)
    try {
      return strictUtf8.decode(bytes)
    } catch {
      return malformed(`${what} is not valid UTF-8`)
    }
  }

  /** Everything not read yet. */
  rest(): Buffer {
    return this.take(this.remaining, "rest")
  }

  /** Fail unless every byte was read: trailing bytes mean the input is not what it claims to be. */
  end(what: string): void {
    if (!this.atEnd()) malformed(`${this.remaining} unexpected byte(s) after ${what}`)
  }
}

/** Run a parse over bytes; a WireProblem becomes Left, any other throw is a bug and propagates. */
export const readWire = <A>(
  bytes: Buffer,
  parse: (reader: WireReader) => A,
): Either.Either<A, WireProblem> => {
  try {
    return Either.right(parse(new WireReader(bytes)))
  } catch (error) {
    if (error instanceof WireProblem) return Either.left(error)
    throw error
  }
}

/** Run a check that may call `malformed`, outside a reader. */
export const attempt = <A>(check: () => A): Either.Either<A, WireProblem> => {
  try {
    return Either.right(check())
  } catch (error) {
    if (error instanceof WireProblem) return Either.left(error)
    throw error
  }
}

/** Encode an SSH `string` (length-prefixed bytes). */
export const sshString = (data: Uint8Array | string): Buffer => {
  const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data)
  const length = Buffer.alloc(4)
  length.writeUInt32BE(bytes.length)
  return Buffer.concat([length, bytes])
}
