/**
 * Suites that need HAProxy or PostgreSQL: `.ci/run` installs both, so under CI they always run (a
 * missing one fails them with the helper's reason instead of hiding them). Elsewhere, a machine
 * without them skips those suites, so `npm test` works with OpenSSH and python3 alone.
 */
import { haproxyPath } from "./haproxy.js"
import { postgresBinDir } from "./postgres.js"

const installed = (find: () => unknown): boolean => {
  try {
    return find() !== undefined
  } catch {
    return false
  }
}

const underCi = process.env.CI !== undefined && process.env.CI !== "" && process.env.CI !== "false"

export const withoutHaproxy = !underCi && haproxyPath === undefined
export const withoutPostgres = !underCi && !installed(postgresBinDir)
