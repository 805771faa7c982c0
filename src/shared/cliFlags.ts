/**
 * What both programs add to @effect/cli: typed flags whose errors name the flag, and help and errors
 * without ANSI styling when they do not go to a terminal.
 */
import * as Options from "@effect/cli/Options"
import * as Console from "effect/Console"
import type * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Num from "effect/Number"
import * as Option from "effect/Option"

/** What a flag takes: the help says so, and a value of the wrong kind is refused naming the flag. */
export type FlagType =
  | { readonly _tag: "text" }
  | { readonly _tag: "boolean" }
  | { readonly _tag: "integer" }
  | { readonly _tag: "float" }
  | { readonly _tag: "choice"; readonly choices: ReadonlyArray<string> }

export const flagTypes = {
  text: { _tag: "text" },
  boolean: { _tag: "boolean" },
  integer: { _tag: "integer" },
  float: { _tag: "float" },
  choice: (choices: ReadonlyArray<string>) => ({ _tag: "choice", choices }),
} as const satisfies Record<string, FlagType | ((choices: ReadonlyArray<string>) => FlagType)>

/** The @effect/cli option of a non-boolean flag type; its help names what it takes. */
export const typedOption = (
  name: string,
  type: Exclude<FlagType, { _tag: "boolean" }>,
): Options.Options<string | number> => {
  switch (type._tag) {
    case "text":
      return Options.text(name)
    case "integer":
      return Options.integer(name)
    case "float":
      return Options.float(name)
    case "choice":
      return Options.choice(name, type.choices)
  }
}

// The same checks as @effect/cli's own parsers, which refuse a value without naming its flag
// (effect/Number's parser is the one their Schema.NumberFromString uses; Schema itself would slow the
// client's start.)
const isInteger = (text: string) => Option.exists(Num.parse(text), Number.isInteger)
const isNumber = (text: string) => Option.isSome(Num.parse(text))

/**
 * The value as @effect/cli will take it (a choice in its listed case), or why it is refused. A value
 * that is another flag is not quoted: it may be `--admin-token=...`, and stderr ends up in logs.
 */
const checkValue = (flag: string, value: string, type: FlagType): Either.Either<string, string> => {
  if (value.startsWith("--") && type._tag !== "text") {
    return Either.left(`--${flag}: a value is missing (the next argument is another flag)`)
  }
  switch (type._tag) {
    case "integer":
      return isInteger(value)
        ? Either.right(value)
        : Either.left(`--${flag}: ${JSON.stringify(value)} is not an integer`)
    case "float":
      return isNumber(value)
        ? Either.right(value)
        : Either.left(`--${flag}: ${JSON.stringify(value)} is not a number`)
    case "choice": {
      const choice = type.choices.find((candidate) => candidate.toLowerCase() === value.toLowerCase())
      return choice === undefined
        ? Either.left(`--${flag}: ${JSON.stringify(value)} is not one of ${type.choices.join(", ")}`)
        : Either.right(choice)
    }
    default:
      return Either.right(value)
  }
}

/**
 * Check the typed flags in `args` (`--name value` or `--name=value`) before @effect/cli parses them,
 * as its own messages leave out the flag (`types` lists every flag that takes a value, so that values
 * are not taken for flags): the first refused value as "--name: ...", or the arguments
 * with choices in their listed case (choices are case-insensitive; @effect/cli's are not, and it would
 * take a lower-case `--log-level info` as its own option, leaving the program's unset).
 */
export const checkTypedFlags = (
  args: ReadonlyArray<string>,
  types: Readonly<Record<string, FlagType>>,
): Either.Either<ReadonlyArray<string>, string> => {
  const checked = [...args]
  for (let index = 0; index < checked.length; index++) {
    const match = /^--([^=]+)(?:=(.*))?$/s.exec(checked[index] ?? "")
    const flag = match?.[1]
    const type = flag === undefined ? undefined : types[flag]
    if (flag === undefined || type === undefined || type._tag === "boolean") continue
    const inline = match?.[2]
    const value = inline ?? checked[index + 1]
    if (value === undefined) continue
    // A text flag's value is skipped, whatever it looks like ("--passphrase --port" sets a passphrase).
    const result = checkValue(flag, value, type)
    if (Either.isLeft(result)) return Either.left(result.left)
    if (inline === undefined) checked[++index] = result.right
    else checked[index] = `--${flag}=${result.right}`
  }
  return Either.right(checked)
}

const esc = String.fromCharCode(27)
const ansiStyle = new RegExp(`${esc}\\[[0-9;]*m`, "g")
export const stripAnsi = (text: string): string => text.replace(ansiStyle, "")

const plainArgs = (args: ReadonlyArray<unknown>) =>
  args.map((arg) => (typeof arg === "string" ? stripAnsi(arg) : arg))

/**
 * @effect/cli styles help and errors with ANSI escapes whatever the output is; a pipe or a file gets
 * plain text (as `ls` and `git` do), a terminal keeps the styling.
 */
export const plainWhenNotTerminal = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Console.consoleWith((console) => {
    const outPlain = process.stdout.isTTY !== true
    const errPlain = process.stderr.isTTY !== true
    if (!outPlain && !errPlain) return effect
    const plain: Console.Console = {
      ...console,
      log: (...args) => console.log(...(outPlain ? plainArgs(args) : args)),
      error: (...args) => console.error(...(errPlain ? plainArgs(args) : args)),
      unsafe: {
        ...console.unsafe,
        log: (...args) => console.unsafe.log(...(outPlain ? plainArgs(args) : args)),
        error: (...args) => console.unsafe.error(...(errPlain ? plainArgs(args) : args)),
      },
    }
    return Console.withConsole(effect, plain)
  })
