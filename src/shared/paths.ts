/** File paths as people write them in flags and config files. */
import { homedir } from "node:os"
import { join } from "node:path"

/** `~` and `~/...` under the home directory, as a shell expands them; other paths as given. */
export const expandHome = (path: string, home: string = homedir()): string =>
  path === "~" ? home : path.startsWith("~/") ? join(home, path.slice(2)) : path
