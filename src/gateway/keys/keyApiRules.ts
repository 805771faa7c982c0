/**
 * The key API's rules without IO: who may register, and the request limits. (Its OpenAPI document is
 * generated from its definition, in keyApiDefinition.ts.)
 */

import { Either } from "effect"
import { isLoopbackHost } from "../../shared/net.js"
import type { GatewaySettings } from "../config/settings.js"
import {
  type CidrList,
  formatIpAddress,
  matchCidrList,
  parseCidrList,
  parseClientAddress,
} from "../identity/addressPatterns.js"

/** Largest request body the key API reads; a public key line is far smaller. */
export const maxBodyBytes = 16 * 1024

/** Secrets given to the server (admin token, fixed enrollment token) must be at least this long. */
export const minimumSecretLength = 16

export const registrationModes = ["open", "token", "closed"] as const
export type RegistrationMode = (typeof registrationModes)[number]

/**
 * Open registration lets anyone who reaches the API log in and use every tool, so it is refused on
 * an address others can reach unless that was asked for by name.
 */
export const registrationPolicyProblem = (
  settings: Pick<
    GatewaySettings,
    | "runKeyServer"
    | "registration"
    | "keyServerHost"
    | "keyServerPort"
    | "allowOpenRegistrationOnPublicInterface"
  >,
): string | undefined =>
  settings.runKeyServer &&
  settings.registration === "open" &&
  !isLoopbackHost(settings.keyServerHost) &&
  !settings.allowOpenRegistrationOnPublicInterface
    ? `--registration open on ${settings.keyServerHost}:${settings.keyServerPort} would let anyone who reaches ` +
      "that address register a key and use every tool. Bind the key API to a loopback address " +
      "(--key-server-host 127.0.0.1), use --registration token, or, if you really mean it, add " +
      "--allow-open-registration-on-public-interface"
    : undefined

/**
 * Who a request comes from. From a trusted proxy (--trusted-proxies), the client is the rightmost
 * address of X-Forwarded-For that is not itself a trusted proxy: each proxy appends the address it
 * was reached from, so the entries to its left are whatever the client claimed. From anyone else the
 * header is ignored, since anyone can write it.
 */
export const forwardedClient = (
  socketAddress: string,
  forwardedFor: string | undefined,
  trusted: CidrList | undefined,
): string => {
  if (trusted === undefined || forwardedFor === undefined || !matchCidrList(trusted, socketAddress))
    return socketAddress
  const hops = forwardedFor
    .split(",")
    .map((hop) => hop.trim())
    .filter((hop) => hop !== "")
  for (let index = hops.length - 1; index >= 0; index--) {
    const hop = parseClientAddress(hops[index] ?? "")
    // Garbage where an address should be: the chain cannot be trusted past it.
    if (hop === undefined) return socketAddress
    const text = formatIpAddress(hop)
    if (!matchCidrList(trusted, text)) return text
  }
  return socketAddress
}

/** --trusted-proxies as checked by the settings (spaces after commas allowed). */
export const trustedProxiesOf = (text: string | undefined): CidrList | undefined => {
  if (text === undefined) return undefined
  const parsed = parseCidrList(text.replace(/\s+/g, ""))
  return Either.isRight(parsed) ? parsed.right : undefined
}

/** The token of an `Authorization: Bearer <token>` header. */
export const bearerToken = (header: string | undefined): string | undefined => {
  const match = /^\s*Bearer\s+(\S+)\s*$/i.exec(header ?? "")
  return match?.[1]
}
