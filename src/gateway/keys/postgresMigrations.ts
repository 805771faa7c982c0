/**
 * The key database's schema, as numbered migrations applied in order at start (KeyDatabase runs
 * them under an advisory lock, so replicas starting together apply each exactly once). A released
 * migration is never edited: a change is a new one at the end.
 */

export interface Migration {
  readonly version: number
  readonly name: string
  readonly sql: string
}

/** The advisory lock key of migrations (any fixed 64-bit number, the same in every replica). */
export const migrationLockKey = 0x6d63_7073_7368_01n
/** The advisory lock writers take, as the file store's lock file (see PostgresKeyStore.withWriteLock). */
export const writeLockKey = 0x6d63_7073_7368_02n
/** The channel every write notifies, so every replica reloads at once. */
export const changeChannel = "mcp_ssh_keys"

export const migrationsTable = "mcp_ssh_schema_migrations"

export const migrations: ReadonlyArray<Migration> = [
  {
    version: 1,
    name: "keys, revocations, enrollment tokens, history",
    sql: `
CREATE TABLE mcp_ssh_authorized_keys (
  id bigserial PRIMARY KEY,
  -- 'cert-authority' when the options say so; derived from options, kept for queries.
  kind text NOT NULL CHECK (kind IN ('key', 'cert-authority')),
  -- The options exactly as an authorized_keys line writes them before the key; NULL when none.
  options text,
  key_type text NOT NULL,
  -- The key blob, base64, as on a key line.
  key_blob text NOT NULL,
  fingerprint text NOT NULL,
  comment text NOT NULL DEFAULT '',
  added_at timestamptz NOT NULL DEFAULT now(),
  -- How it came in: 'register 10.0.0.7 token=ab12cd34', 'admin 127.0.0.1', 'cli', 'import FILE:LINE'.
  source text
);
CREATE INDEX mcp_ssh_authorized_keys_fingerprint ON mcp_ssh_authorized_keys (fingerprint);
CREATE INDEX mcp_ssh_authorized_keys_blob ON mcp_ssh_authorized_keys (key_blob);

-- What a KRL or a revoked key list holds (see identity/krl.ts).
CREATE TABLE mcp_ssh_revoked_keys (
  id bigserial PRIMARY KEY,
  -- 'blob': base64 key blob; 'sha1' / 'sha256': hex hash of the blob.
  kind text NOT NULL CHECK (kind IN ('blob', 'sha1', 'sha256')),
  value text NOT NULL,
  added_at timestamptz NOT NULL DEFAULT now(),
  source text,
  UNIQUE (kind, value)
);
CREATE TABLE mcp_ssh_revoked_certificates (
  id bigserial PRIMARY KEY,
  -- The CA's key blob, base64; '' for certificates of any CA.
  ca_blob text NOT NULL,
  serial_low numeric(20, 0),
  serial_high numeric(20, 0),
  key_id text,
  added_at timestamptz NOT NULL DEFAULT now(),
  source text,
  CHECK ((serial_low IS NOT NULL AND serial_high IS NOT NULL AND serial_low <= serial_high) OR key_id IS NOT NULL)
);

-- Enrollment tokens: only their SHA-256, as in the token file.
CREATE TABLE mcp_ssh_enrollment_tokens (
  id text PRIMARY KEY,
  sha256 text NOT NULL UNIQUE CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  uses integer NOT NULL,
  uses_left integer NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  used_by text[] NOT NULL DEFAULT '{}',
  identity text,
  groups text[]
);

-- Every change of the keys: who (source, replica), what, when.
CREATE TABLE mcp_ssh_key_history (
  id bigserial PRIMARY KEY,
  at timestamptz NOT NULL DEFAULT now(),
  action text NOT NULL,
  fingerprint text,
  kind text,
  options text,
  source text,
  replica text
);
`,
  },
]
