/**
 * `mcp-ssh-server keys list|add|revoke|import` and `mcp-ssh-server tokens create`: key administration
 * over the admin's own shell, on the same store the running server uses (the files under the same
 * lock, or the key database), with no server needed. A running gateway sees the changes: added keys
 * at the next login, removed keys end their live sessions (every replica, with a database).
 */
import { text as readAll } from "node:stream/consumers"
import { Args, Command, Options } from "@effect/cli"
import { Console, Effect, Either, Option } from "effect"
import { readBytesWithMode, readText } from "../../shared/fileSystem.js"
import { isAllowedKeyType, isKeyProblem } from "../../shared/publicKey.js"
import { validateSubmittedKey } from "../../shared/submittedKey.js"
import { type FlagValues, type GatewayConfigShape, loadStoreConfig } from "../config/GatewayConfig.js"
import { ConfigError } from "../errors.js"
import { parseRevokedKeysFile } from "../identity/krl.js"
import { keyListing, readStoredKeys } from "./authorizedKeysFile.js"
import { EnrollmentTokens } from "./EnrollmentTokens.js"
import { KeyDatabase } from "./KeyDatabase.js"
import { KeyStore } from "./KeyStore.js"
import { parseKeyStoreLocation } from "./keyStoreLocation.js"
import { keyAdminDatabaseFromConfig, keyAdminFromConfig, keyAdminLogger } from "./layers.js"
import { importIntoDatabase } from "./PostgresKeyStore.js"
import { rowsOfRevocations } from "./postgresRows.js"
import { checkTokenIdentity, checkUses, defaultTtl, parseTtl } from "./tokens.js"

const storeOptions = {
  authorizedClients: Options.text("authorized-clients").pipe(
    Options.withDescription(
      "the authorized_keys file (default: ~/.config/mcp-ssh/authorized_keys); env MCP_SSH_AUTHORIZED_CLIENTS",
    ),
    Options.optional,
  ),
  tokenStore: Options.text("token-store").pipe(
    Options.withDescription(
      "the enrollment token file (default: the authorized keys file + .tokens); env MCP_SSH_TOKEN_STORE",
    ),
    Options.optional,
  ),
  keyStore: Options.text("key-store").pipe(
    Options.withDescription("file (default) or a postgres:// URL; env MCP_SSH_KEY_STORE"),
    Options.optional,
  ),
  keyStorePasswordFile: Options.text("key-store-password-file").pipe(
    Options.withDescription(
      "file holding the key database's password (else PGPASSWORD); env MCP_SSH_KEY_STORE_PASSWORD_FILE",
    ),
    Options.optional,
  ),
  serversConfig: Options.text("servers-config").pipe(
    Options.withDescription(
      "read settings from this config's `gateway` object (default: servers_config.json, if present)",
    ),
    Options.optional,
  ),
}

interface StoreOptionValues {
  readonly authorizedClients: Option.Option<string>
  readonly tokenStore: Option.Option<string>
  readonly keyStore: Option.Option<string>
  readonly keyStorePasswordFile: Option.Option<string>
  readonly serversConfig: Option.Option<string>
}

/** Like the gateway's own refusals: one line on stderr, exit status 1. */
const fail = (message: string) =>
  Console.error(`mcp-ssh-server: ${message}`).pipe(
    Effect.zipRight(
      Effect.sync(() => {
        process.exitCode = 1
      }),
    ),
  )

/** Run a command against the store the options (and MCP_SSH_*, and the config file) point at. */
const withStore = <E>(
  options: StoreOptionValues,
  body: Effect.Effect<void, E | ConfigError, KeyStore | EnrollmentTokens>,
) => withStoreConfig(options, (config) => Effect.provide(body, keyAdminFromConfig(config)))

/** The same, for a command that needs the key database itself (it refuses the file store). */
const withDatabase = <E>(
  options: StoreOptionValues,
  body: Effect.Effect<void, E | ConfigError, KeyStore | EnrollmentTokens | KeyDatabase>,
) =>
  withStoreConfig(options, (config) => {
    const location = parseKeyStoreLocation(config.settings.keyStore)
    return location._tag === "Right" && location.right._tag === "Postgres"
      ? Effect.provide(body, keyAdminDatabaseFromConfig(config))
      : new ConfigError({
          message:
            "this command works on the key database: give --key-store postgres://... (or MCP_SSH_KEY_STORE)",
        })
  })

const withStoreConfig = <E>(
  options: StoreOptionValues,
  body: (config: GatewayConfigShape) => Effect.Effect<void, E | ConfigError>,
) =>
  Effect.gen(function* () {
    const flags: FlagValues = {}
    if (Option.isSome(options.authorizedClients)) flags.authorizedClients = options.authorizedClients.value
    if (Option.isSome(options.tokenStore)) flags.tokenStore = options.tokenStore.value
    if (Option.isSome(options.keyStore)) flags.keyStore = options.keyStore.value
    if (Option.isSome(options.keyStorePasswordFile))
      flags.keyStorePasswordFile = options.keyStorePasswordFile.value
    if (Option.isSome(options.serversConfig)) flags.serversConfig = options.serversConfig.value
    const config = yield* loadStoreConfig(flags)
    yield* body(config)
  }).pipe(
    Effect.catchAll((error) =>
      fail(
        typeof error === "object" && error !== null && "message" in error
          ? String(error.message)
          : String(error),
      ),
    ),
    Effect.provide(keyAdminLogger),
  )

const listCommand = Command.make(
  "list",
  { ...storeOptions, json: Options.boolean("json").pipe(Options.withDescription("print JSON")) },
  (options) =>
    withStore(
      options,
      Effect.gen(function* () {
        const store = yield* KeyStore
        const keys = yield* store.list
        if (options.json) return yield* Console.log(JSON.stringify({ keys: keys.map(keyListing) }, null, 2))
        if (keys.length === 0) return yield* Console.log(`no keys in ${store.path}`)
        const rows = keys.map((key) => [
          key.fingerprint,
          key.type,
          key.kind === "cert-authority" ? "(cert-authority)" : (key.identity?.name ?? "-"),
          `groups=${(key.identity?.groups ?? key.keyOptions.groups).join(",") || "-"}`,
          key.comment === "" ? "-" : key.comment,
          key.addedAt ?? "-",
          key.source ?? "(added by hand)",
        ])
        const widths = [0, 1, 2, 3, 4, 5].map((column) =>
          Math.max(...rows.map((row) => row[column]?.length ?? 0)),
        )
        for (const row of rows) {
          yield* Console.log(
            row
              .map((cell, column) => cell.padEnd(widths[column] ?? 0))
              .join("  ")
              .trimEnd(),
          )
        }
      }),
    ),
).pipe(Command.withDescription("list the authorized keys"))

/** A key line as given, or the content of a .pub file, or stdin for `-`. */
const keyText = (given: string) => {
  if (given === "-") return Effect.promise(() => readAll(process.stdin))
  const first = given.trim().split(/\s+/)[0] ?? ""
  if (isAllowedKeyType(first) || /^(ssh|ecdsa|rsa|sk)-/.test(first)) return Effect.succeed(given)
  return readText(given).pipe(
    Effect.mapError((error) => new ConfigError({ message: `${given}: ${error.message}` })),
  )
}

const addCommand = Command.make(
  "add",
  {
    ...storeOptions,
    key: Args.text({ name: "key" }).pipe(
      Args.withDescription("a public key line, a .pub file, or - to read it from stdin"),
    ),
  },
  (options) =>
    withStore(
      options,
      Effect.gen(function* () {
        const key = validateSubmittedKey(yield* keyText(options.key))
        if (isKeyProblem(key)) return yield* new ConfigError({ message: `not added: ${key.reason}` })
        const added = yield* (yield* KeyStore).add(key, "cli")
        yield* Console.log(
          added ? `added ${key.fingerprint} (${key.type})` : `${key.fingerprint} is authorized already`,
        )
      }),
    ),
).pipe(Command.withDescription("authorize a public key"))

const revokeCommand = Command.make(
  "revoke",
  {
    ...storeOptions,
    fingerprint: Args.text({ name: "fingerprint" }).pipe(Args.withDescription("SHA256:...")),
  },
  (options) =>
    withStore(
      options,
      Effect.gen(function* () {
        const removed = yield* (yield* KeyStore).revoke(options.fingerprint, "cli")
        if (removed === 0)
          return yield* new ConfigError({ message: `no key has the fingerprint ${options.fingerprint}` })
        yield* Console.log(`revoked ${options.fingerprint}; a running gateway closes its sessions`)
      }),
    ),
).pipe(Command.withDescription("remove a key by fingerprint (ssh-keygen -lf KEY prints it)"))

const importCommand = Command.make(
  "import",
  {
    ...storeOptions,
    file: Args.text({ name: "file" }).pipe(Args.withDescription("an authorized_keys file")),
    revokedKeys: Options.text("revoked-keys").pipe(
      Options.withDescription("also import this revoked keys file (an OpenSSH KRL or a list of public keys)"),
      Options.optional,
    ),
  },
  (options) =>
    withDatabase(
      options,
      Effect.gen(function* () {
        const text = yield* readText(options.file).pipe(
          Effect.mapError((error) => new ConfigError({ message: `${options.file}: ${error.message}` })),
        )
        // All or nothing: a line the gateway would ignore is not silently left behind.
        const parsed = readStoredKeys(text)
        if (parsed.problems.length > 0)
          return yield* new ConfigError({
            message: `nothing imported; fix or remove these lines first:\n${parsed.problems
              .map((problem) => `  ${options.file}:${problem.line}: ${problem.reason}`)
              .join("\n")}`,
          })
        const revoked = yield* Option.match(options.revokedKeys, {
          onNone: () => Effect.succeed({ keys: [], certificates: [] }),
          onSome: (path) =>
            readBytesWithMode(path).pipe(
              Effect.mapError(
                (error) => new ConfigError({ message: `--revoked-keys ${path}: ${error.message}` }),
              ),
              Effect.flatMap(({ content }) =>
                Either.match(parseRevokedKeysFile(content), {
                  onLeft: (problem) =>
                    Effect.fail(
                      new ConfigError({
                        message: `nothing imported; --revoked-keys ${path}: ${problem.message}`,
                      }),
                    ),
                  onRight: (revocations) => Effect.succeed(rowsOfRevocations(revocations)),
                }),
              ),
            ),
        })
        const counts = yield* importIntoDatabase(parsed.keys, revoked, `import ${options.file}`)
        const database = yield* KeyDatabase
        yield* Console.log(
          `imported ${counts.added} line(s) into ${database.shown} (${counts.authorities} cert-authority), ${counts.present} already there` +
            (Option.isSome(options.revokedKeys)
              ? `; revoked entries: ${counts.revokedAdded} imported, ${counts.revokedPresent} already there`
              : ""),
        )
      }),
    ),
).pipe(
  Command.withDescription(
    "copy an authorized_keys file (and --revoked-keys) into the key database; safe to repeat",
  ),
)

export const keysCommand = Command.make("keys", {}, () =>
  fail("name a subcommand: keys list, keys add, keys revoke or keys import (see --help)"),
).pipe(
  Command.withDescription("manage the authorized keys, offline"),
  Command.withSubcommands([listCommand, addCommand, revokeCommand, importCommand]),
)

const createTokenCommand = Command.make(
  "create",
  {
    ...storeOptions,
    uses: Options.integer("uses").pipe(
      Options.withDescription("registrations it allows"),
      Options.withDefault(1),
    ),
    ttl: Options.text("ttl").pipe(
      Options.withDescription("lifetime: 90s, 10m, 12h, 7d"),
      Options.withDefault(defaultTtl),
    ),
    identity: Options.text("identity").pipe(
      Options.withDescription(
        "the identity of the keys it registers (written as mcp-identity on their line)",
      ),
      Options.optional,
    ),
    groups: Options.text("groups").pipe(
      Options.withDescription("their groups, comma-separated (written as mcp-groups)"),
      Options.optional,
    ),
  },
  (options) =>
    withStore(
      options,
      Effect.gen(function* () {
        const check = Either.all([
          checkUses(options.uses),
          parseTtl(options.ttl),
          checkTokenIdentity(Option.getOrUndefined(options.identity), Option.getOrUndefined(options.groups)),
        ])
        if (Either.isLeft(check)) return yield* new ConfigError({ message: check.left })
        const [uses, ttlSeconds, identity] = check.right
        const issued = yield* (yield* EnrollmentTokens).create({ uses, ttlSeconds, identity })
        // The token alone on stdout, so TOKEN=$(mcp-ssh-server tokens create) works.
        yield* Console.log(issued.token)
        yield* Console.error(
          `enrollment token ${issued.id}: ${issued.uses} use(s), expires ${issued.expiresAt}; shown once, only its hash is stored`,
        )
      }),
    ),
).pipe(Command.withDescription("create an enrollment token for POST /register; prints it once"))

export const tokensCommand = Command.make("tokens", {}, () =>
  fail("name a subcommand: tokens create (see --help)"),
).pipe(
  Command.withDescription("manage enrollment tokens, offline"),
  Command.withSubcommands([createTokenCommand]),
)
