#!/usr/bin/env bash
# The package as users get it: `npm pack` (which builds on prepack), installed globally into a
# temporary prefix, and both bins run from there. Everything is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

tarball=$(npm pack --silent --pack-destination "$work" | tail -n 1)
npm install --global --prefix "$work/prefix" --no-audit --no-fund --loglevel=error "$work/$tarball"

server_version=$("$work/prefix/bin/mcp-ssh-server" --version)
expected=$(node -p 'require("./package.json").version')
case "$server_version" in
  *"$expected"*) ;;
  *) echo "check-package: mcp-ssh-server --version printed '$server_version', expected $expected" >&2; exit 1 ;;
esac
"$work/prefix/bin/mcp-ssh-client" --help | grep -q -- "--known-hosts" ||
  { echo "check-package: mcp-ssh-client --help does not list its flags" >&2; exit 1; }
echo "check-package: $tarball installs, and both bins run (mcp-ssh-server $server_version)"
# The systemd unit, verified against the bin just installed (verify wants ExecStart to exist).
bash scripts/check-systemd-unit.sh "$work/prefix/bin/mcp-ssh-server"
