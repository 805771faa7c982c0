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
