/**
 * The decision on one publickey authentication attempt, once the key store has answered: ssh2 hands
 * the key, the algorithm and (on the real attempt) the signature over, and leaves verifying it to us.
 */
import type { AuthorizedKey } from "../../shared/publicKey.js"
import { formatPublicKey } from "../../shared/publicKey.js"
import { utils } from "../../shared/ssh2.js"

export interface PublicKeyAttempt {
  /** The key type ssh2 names (rsa-sha2-* appear as ssh-rsa, with the hash apart). */
  readonly algo: string
  readonly hashAlgo: string | undefined
  /** Absent when the client only asks whether this key would do. */
  readonly signature: Buffer | undefined
  readonly blob: Buffer | undefined
}

export type PublicKeyDecision =
  /** `signature`: the signature was checked and is wrong (else the algorithm does not fit). */
  | { readonly _tag: "Refused"; readonly reason: string; readonly signature?: true }
  | { readonly _tag: "Acceptable" }
  | { readonly _tag: "Verified" }

const refused = (reason: string): PublicKeyDecision => ({ _tag: "Refused", reason })

export const decidePublicKey = (attempt: PublicKeyAttempt, key: AuthorizedKey): PublicKeyDecision => {
  if (attempt.algo !== key.type)
    return refused(`signature algorithm ${attempt.algo} does not fit a ${key.type} key`)
  // RSA signs with SHA-2 only, as in OpenSSH's sshd since 8.8.
  if (key.type === "ssh-rsa" && attempt.hashAlgo === undefined) {
    return refused(
      "signature algorithm ssh-rsa (SHA-1) is not accepted; sign with rsa-sha2-256 or rsa-sha2-512",
    )
  }
  if (attempt.signature === undefined) return { _tag: "Acceptable" }
  const parsed = utils.parseKey(formatPublicKey(key))
  const valid =
    !(parsed instanceof Error) &&
    !Array.isArray(parsed) &&
    parsed.verify(attempt.blob ?? Buffer.alloc(0), attempt.signature, attempt.hashAlgo) === true
  return valid
    ? { _tag: "Verified" }
    : { _tag: "Refused", reason: `bad signature for ${key.fingerprint}`, signature: true }
}
