#!/usr/bin/env node
/** mcp-ssh-client: the stdio bridge an MCP host starts to reach a gateway. */
console.error(
  "mcp-ssh-client: not available in this version; use `ssh -T -p 8022 -i KEY mcp@HOST` as the MCP command",
)
process.exitCode = 2
