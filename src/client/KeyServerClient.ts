/**
 * The gateway's key API, seen from the client: `GET /server_pub_key` for the host key and
 * `POST /register` to enroll the client key with an enrollment token. The scheme of the URL is the
 * one given: https is never retried as http, and a redirect from https to http is refused.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
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

const errorText = (error: unknown): string => {
  if (!(error instanceof Error)) return String(error)
  // fetch() says "fetch failed" and keeps the reason (ECONNREFUSED, a TLS error...) as its cause.
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : ""
  return `${error.message}${cause}`
}

interface Answer {
  readonly status: number
  readonly body: Readonly<Record<string, unknown>>
}

export const makeKeyServerClient = (base: string | undefined): KeyServerClientShape => {
  const failure = (reason: string) => new KeyServerError({ url: base ?? "(none)", reason })

  const call = (
    path: string,
    init: {
      readonly method: "GET" | "POST"
      readonly headers?: Record<string, string>
      readonly body?: string
    },
  ): Effect.Effect<Answer, KeyServerError> =>
    Effect.tryPromise({
      try: async (signal): Promise<Answer | string> => {
        if (base === undefined) return "no key server is configured"
        let url = new URL(path, base).toString()
        for (let hop = 0; ; hop++) {
          const response = await fetch(url, {
            ...init,
            redirect: "manual",
            signal,
          })
          const location = response.headers.get("location")
          if (response.status >= 300 && response.status < 400 && location !== null) {
            await response.body?.cancel()
            const next = new URL(location, url).toString()
            const problem = redirectProblem(url, next)
            if (problem !== undefined) return problem
            // Only 307 and 308 keep a POST a POST; anything else would silently drop the body.
            if (
              hop >= maxRedirects ||
              (init.method === "POST" && response.status !== 307 && response.status !== 308)
            ) {
              return `unexpected redirect (HTTP ${response.status}) to ${next}`
            }
            url = next
            continue
          }
          const text = await response.text()
          let body: unknown
          try {
            body = JSON.parse(text)
          } catch {
            return `HTTP ${response.status} with a body that is not JSON`
          }
          if (typeof body !== "object" || body === null || Array.isArray(body)) {
            return `HTTP ${response.status} with a body that is not a JSON object`
          }
          return { status: response.status, body: body as Record<string, unknown> }
        }
      },
      catch: (error) => failure(errorText(error)),
    }).pipe(
      // Interrupting the request aborts it (fetch gets the signal).
      Effect.timeoutFail({
        duration: `${requestTimeoutMs} millis`,
        onTimeout: () => failure(`no answer within ${requestTimeoutMs / 1000} s`),
      }),
      Effect.flatMap((answer) =>
        typeof answer === "string" ? Effect.fail(failure(answer)) : Effect.succeed(answer),
      ),
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
