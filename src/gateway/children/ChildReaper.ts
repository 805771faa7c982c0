/**
 * The guard that no child outlives the gateway, even when the gateway is killed with SIGKILL and
 * runs no finalizer. A small shell process, in its own process group, is told the process group of
 * every running child; when its input closes (the gateway ended, however it ended) it sends SIGTERM,
 * then SIGKILL, to the groups still on its list, and to every process below their leaders in the
 * process tree (what a child moved out of its group with setsid). A normal shutdown stops every child
 * first, so the list is empty by then.
 */
import { type ChildProcessByStdio, spawn } from "node:child_process"
import type { Readable, Writable } from "node:stream"
import { Context, Effect, Layer } from "effect"
import { isSignallablePid } from "./processTree.js"

export interface ChildReaperShape {
  /** This process group must not outlive the gateway. */
  readonly register: (processGroup: number) => void
  /** It has been stopped: forget it (its number may be reused). */
  readonly unregister: (processGroup: number) => void
}

export class ChildReaper extends Context.Tag("mcp-ssh/ChildReaper")<ChildReaper, ChildReaperShape>() {}

/**
 * POSIX sh: `+PGID` adds a group, `-PGID` removes it; at end of input the rest get SIGTERM, then
 * SIGKILL two seconds later. (dash's `kill` takes no `--`: a negative pid follows the signal.) The
 * processes below each group's leader are listed first, from Linux's /proc/PID/task/TID/children:
 * once a leader dies, what it started belongs to init and nothing links it to the gateway.
 */
export const reaperScript = `
groups=" "
while IFS= read -r line; do
  case "$line" in
    +*) groups="$groups\${line#+} " ;;
    -*) groups=$(printf '%s' "$groups" | sed "s/ \${line#-} / /") ;;
  esac
done
descendants() {
  for c in $(cat /proc/$1/task/*/children 2>/dev/null); do echo "$c"; descendants "$c"; done
}
case "$groups" in
  *[0-9]*)
    strays=""
    for g in $groups; do strays="$strays $(descendants "$g")"; done
    for g in $groups; do kill -TERM "-$g" 2>/dev/null; done
    for p in $strays; do kill -TERM "$p" 2>/dev/null; done
    sleep 2
    for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
    for p in $strays; do kill -KILL "$p" 2>/dev/null; done
    ;;
esac
`

export const reaperName = "mcp-ssh-reaper"

type Watchdog = ChildProcessByStdio<Writable, null, Readable>

export const ChildReaperLive = Layer.scoped(
  ChildReaper,
  Effect.gen(function* () {
    const watchdog = yield* Effect.acquireRelease(
      Effect.sync(
        (): Watchdog =>
          spawn("/bin/sh", ["-c", reaperScript], {
            stdio: ["pipe", "ignore", "pipe"],
            // Named so `ps` says what it is.
            argv0: reaperName,
            // Its own group: a Ctrl-C meant for the gateway must not take the guard down first.
            detached: true,
            env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
          }),
      ),
      // Closing its input on a normal shutdown lets it exit; children are already stopped then.
      (watchdog) => Effect.sync(() => watchdog.stdin.end()),
    )
    watchdog.stdin.on("error", () => {})
    watchdog.on("error", () => {})
    // It must not keep the gateway's event loop alive.
    watchdog.unref()
    const tell = (line: string) => {
      if (!watchdog.stdin.destroyed && !watchdog.stdin.writableEnded) watchdog.stdin.write(`${line}\n`)
    }
    // The script sends `kill -TERM -GROUP`: a group of 0 or 1 would be this process's own or all.
    const checked = (processGroup: number) => {
      if (!isSignallablePid(processGroup)) throw new RangeError(`refusing process group ${processGroup}`)
      return processGroup
    }
    return {
      register: (processGroup) => tell(`+${checked(processGroup)}`),
      unregister: (processGroup) => tell(`-${checked(processGroup)}`),
    }
  }),
)
