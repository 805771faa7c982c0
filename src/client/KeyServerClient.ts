/**
 * The gateway's key API, seen from the client: `GET /server_pub_key` for the host key and
 * `POST /register` to enroll the client key with an enrollment token. The scheme of the URL is the
 * one given: https is never retried as http, and a redirect from https to http is refused.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { errorText } from "../shared/errorText.js"
import { isKeyProblem, parsePublicKey } from "../shared/publicKey.js"
import { ClientConfig } from "./ClientConfig.js"
import { KeyServerError } from "./errors.js"
import { redirectProblem } from "./settings.js"

export interface ServedHostKey {
  readonly blob: Buffer
  readonly fingerprint: string
}

export interface KeyServerClientShape {
  /** The key API's base URL, or undefined when the client does not use one. */
  readonly url: string | undefined
  readonly fetchHostKey: Effect.Effect<ServedHostKey, KeyServerError>
  /** Register the public key line; `added` is false when the gateway already had it. */
  readonly register: (
    publicKeyLine: string,
    token: string | undefined,
  ) => Effect.Effect<{ readonly added: boolean }, KeyServerError>
}

export class KeyServerClient extends Context.Tag("mcp-ssh/KeyServerClient")<
  KeyServerClient,
  KeyServerClientShape
>() {}

const requestTimeoutMs = 15_000
const maxRedirects = 3

interface Answer {
  readonly status: number
  readonly body: Readonly<Record<string, unknown>>
}

type Exchange =
  | { readonly _tag: "Redirect"; readonly status: number; readonly location: string }
  | { readonly _tag: "Body"; readonly status: number; readonly text: string }

export const makeKeyServerClient = (base: string | undefined): KeyServerClientShape => {
  const failure = (reason: string) => new KeyServerError({ url: base ?? "(none)", reason })

  /** One HTTP exchange; a redirect is returned, not followed, so each hop can be checked. */
  const exchange = (url: string, init: RequestInit) =>
    Effect.tryPromise({
      // Interrupting the exchange aborts it (fetch gets the signal).
      try: async (signal): Promise<Exchange> => {
        const response = await fetch(url, { ...init, redirect: "manual", signal })
        const location = response.headers.get("location")
        if (response.status >= 300 && response.status < 400 && location !== null) {
          await response.body?.cancel()
          return { _tag: "Redirect", status: response.status, location }
        }
        return { _tag: "Body", status: response.status, text: await response.text() }
      },
      catch: (error) => failure(errorText(error)),
    })

  /** A URL relative to another; a bad one fails as fetch would have. */
  const resolveUrl = (path: string, against: string) =>
    Effect.try({ try: () => new URL(path, against).toString(), catch: (error) => failure(errorText(error)) })

  const call = (
    path: string,
    init: {
      readonly method: "GET" | "POST"
      readonly headers?: Record<string, string>
      readonly body?: string
    },
  ): Effect.Effect<Answer, KeyServerError> =>
    Effect.gen(function* () {
      if (base === undefined) return yield* failure("no key server is configured")
      let url = yield* resolveUrl(path, base)
      for (let hop = 0; ; hop++) {
        const answer = yield* exchange(url, init)
        if (answer._tag === "Redirect") {
          const next = yield* resolveUrl(answer.location, url)
          const problem = redirectProblem(url, next)
          if (problem !== undefined) return yield* failure(problem)
          // Only 307 and 308 keep a POST a POST; anything else would silently drop the body.
          if (
            hop >= maxRedirects ||
            (init.method === "POST" && answer.status !== 307 && answer.status !== 308)
          ) {
            return yield* failure(`unexpected redirect (HTTP ${answer.status}) to ${next}`)
          }
          url = next
          continue
        }
        const body = yield* Effect.try({
          try: (): unknown => JSON.parse(answer.text),
          catch: () => failure(`HTTP ${answer.status} with a body that is not JSON`),
        })
        if (typeof body !== "object" || body === null || Array.isArray(body)) {
          return yield* failure(`HTTP ${answer.status} with a body that is not a JSON object`)
        }
        return { status: answer.status, body: body as Record<string, unknown> }
      }
    }).pipe(
      Effect.timeoutFail({
        duration: `${requestTimeoutMs} millis`,
        onTimeout: () => failure(`no answer within ${requestTimeoutMs / 1000} s`),
      }),
    )

  const reasonOf = (answer: Answer): string =>
    typeof answer.body.error === "string" ? answer.body.error : `HTTP ${answer.status}`

  const fetchHostKey = call("server_pub_key", { method: "GET" }).pipe(
    Effect.flatMap((answer) => {
      if (answer.status !== 200) return Effect.fail(failure(`GET /server_pub_key: ${reasonOf(answer)}`))
      const line = answer.body.server_pub_key
      if (typeof line !== "string") return Effect.fail(failure("the answer has no server_pub_key"))
      const key = parsePublicKey(line)
      if (isKeyProblem(key)) return Effect.fail(failure(`server_pub_key is not usable: ${key.reason}`))
      const claimed = answer.body.fingerprint
      if (claimed !== undefined && claimed !== key.fingerprint) {
        return Effect.fail(failure(`the served fingerprint ${String(claimed)} is not that of the served key`))
      }
      return Effect.succeed({ blob: key.blob, fingerprint: key.fingerprint })
    }),
  )

  const register = (publicKeyLine: string, token: string | undefined) =>
    call("register", {
      method: "POST",
      headers: {
        "content-type": "application/json",
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
      },
      body: JSON.stringify({ client_pub_key: publicKeyLine }),
    }).pipe(
      Effect.flatMap((answer) => {
        if (answer.status === 200) return Effect.succeed({ added: answer.body.added !== false })
        if (answer.status === 401 && token === undefined) {
          return Effect.fail(
            failure("registration needs an enrollment token: give --enroll-token (or MCP_SSH_ENROLL_TOKEN)"),
          )
        }
        return Effect.fail(failure(`registration refused (HTTP ${answer.status}): ${reasonOf(answer)}`))
      }),
    )

  return { url: base, fetchHostKey, register }
}

export const KeyServerClientLive = Layer.effect(
  KeyServerClient,
  Effect.map(ClientConfig, (settings) => makeKeyServerClient(settings.keyServerUrl)),
)
