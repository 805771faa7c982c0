/**
 * What a session channel may ask for: MCP by `shell`, `exec NAME[,NAME...]` or the `mcp` subsystem.
 * Terminals, environment, X11, agent forwarding, signals and other subsystems are refused, as a
 * forced-command sshd account would.
 */
import type { ServerChannel, Session } from "../../shared/ssh2.js"
import { parseSelection } from "../hub/Hub.js"

/** The MCP subsystem name; `ssh -s host mcp` requests it. */
export const mcpSubsystem = "mcp"

export const wireSessionRequests = (
  session: Session,
  logRefusal: (what: string) => void,
  startMcp: (channel: ServerChannel, selection: ReadonlyArray<string>) => void,
) => {
  const refuse = (what: string) => (_accept: unknown, reject: (() => void) | undefined) => {
    logRefusal(`refused ${what} request`)
    reject?.()
  }
  session.on("pty", refuse("pty"))
  session.on("env", refuse("env"))
  session.on("x11", refuse("x11"))
  session.on("auth-agent", refuse("agent forwarding"))
  session.on("signal", refuse("signal"))
  session.on("shell", (accept) => startMcp(accept(), []))
  session.on("exec", (accept, _reject, info) => startMcp(accept(), parseSelection(info.command)))
  session.on("subsystem", (accept, reject, info) => {
    if (info.name === mcpSubsystem) return startMcp(accept(), [])
    refuse(`subsystem '${info.name}'`)(accept, reject)
  })
}
