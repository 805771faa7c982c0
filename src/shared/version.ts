/** Kept in step with package.json by the release process; `--version` prints it. */
export const version = "0.1.0"
