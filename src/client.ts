#!/usr/bin/env node
/** mcp-ssh-client (`dist/client.js`): the stdio bridge an MCP host starts to reach a gateway. */
import { main } from "./client/cli.js"

main()
