/** ssh2 is CommonJS: Node's ESM loader exposes only its default export, so take its members here. */
import ssh2 from "ssh2"

export const { utils, Server: Ssh2Server, Client: Ssh2Client } = ssh2
export type {
  Algorithms,
  AuthContext,
  ClientChannel,
  ConnectConfig,
  Connection,
  ParsedKey,
  ServerChannel,
  ServerHostKeyAlgorithm,
  Session,
} from "ssh2"

/** Tries before giving up on a usable key; each has a 1 in 256 chance to be malformed. */
const keyGenerationTries = 8

/**
 * A new ed25519 key pair in OpenSSH format, optionally encrypted. ssh2 strips leading zero bytes
 * from the public key, so about one key in 256 it makes cannot be read back (mscdex/ssh2#1513):
 * keep only a pair that ssh2 itself parses.
 */
export const generateEd25519KeyPair = (
  comment: string,
  passphrase: string | undefined,
): { readonly private: string; readonly public: string } => {
  for (let attempt = 1; ; attempt++) {
    const pair =
      passphrase === undefined || passphrase === ""
        ? utils.generateKeyPairSync("ed25519", { comment })
        : utils.generateKeyPairSync("ed25519", { comment, passphrase, cipher: "aes256-ctr", rounds: 16 })
    const usable =
      !(utils.parseKey(pair.public) instanceof Error) &&
      !(utils.parseKey(pair.private, passphrase) instanceof Error)
    if (usable) return pair
    if (attempt >= keyGenerationTries) throw new Error(`no usable ed25519 key in ${attempt} tries`)
  }
}
