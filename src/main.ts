#!/usr/bin/env node
/** mcp-ssh-server (`dist/main.js`): the gateway, and its `keys` and `tokens` admin commands. */
import { main } from "./gateway/cli.js"

main()
