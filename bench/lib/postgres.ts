/**
 * A temporary PostgreSQL for the bench: the tests' own (test/support/postgres.ts: initdb in a
 * temporary directory, pg_ctl on a free loopback port, stopped with pg_ctl, never a signal), as the
 * bench takes HAProxy's config from the tests. pg_ctl starts the server in the background, outside
 * the bench's tracked processes: a scenario disposes of it in a finally block.
 */
import { postgresBinDir } from "../../test/support/postgres.js"

export { type PostgresServer, startPostgres } from "../../test/support/postgres.js"

/** Why PostgreSQL cannot run here (for the skip note), or undefined when its binaries are installed. */
export const postgresMissing = (): string | undefined => {
  try {
    postgresBinDir()
    return undefined
  } catch (error) {
    return error instanceof Error ? error.message : String(error)
  }
}
