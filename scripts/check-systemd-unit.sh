#!/usr/bin/env bash
# contrib/mcp-ssh.service through `systemd-analyze verify`, with its ExecStart pointed at an installed
# mcp-ssh-server (verify refuses a binary that does not exist): check-package.sh passes the one it
# installed into its temporary prefix. Usage: scripts/check-systemd-unit.sh /path/to/mcp-ssh-server
#
# verify exits 0 after mere warnings ("Unknown key ..., ignoring", "Failed to parse ..., ignoring"),
# which are exactly the typos that silently drop a hardening line; and a clean unit verifies
# silently. So any line it prints about this unit fails the check too.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:?usage: $0 /path/to/installed/mcp-ssh-server}
command -v systemd-analyze >/dev/null 2>&1 ||
  { echo "check-systemd-unit: systemd-analyze not found (Debian: apt-get install systemd)" >&2; exit 1; }
[ -x "$bin" ] || { echo "check-systemd-unit: $bin is not an executable file" >&2; exit 1; }
unit=contrib/mcp-ssh.service
installed_path=/usr/bin/mcp-ssh-server
[ "$(grep -c "^ExecStart=$installed_path\$" "$unit")" = 1 ] ||
  { echo "check-systemd-unit: $unit has no single 'ExecStart=$installed_path' line" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The same name (verify reads the unit type from it), the bin that exists here.
sed "s#^ExecStart=$installed_path\$#ExecStart=$bin#" "$unit" >"$work/mcp-ssh.service"

status=0
output=$(systemd-analyze verify --man=no --generators=no "$work/mcp-ssh.service" 2>&1) || status=$?
# Lines about other units (a dependency such as network-online.target on this machine) are not ours.
ours=$(printf '%s\n' "$output" | awk -v mine="$work/mcp-ssh.service:" '
  index($0, mine) == 1 { print; next }
  /^\/[^ ]+\.(service|target|socket|mount|slice):[0-9]+: / { next }
  NF > 0 { print }')
if [ "$status" -ne 0 ] || [ -n "$ours" ]; then
  echo "check-systemd-unit: systemd-analyze verify $unit (exit status $status):" >&2
  printf '%s\n' "$output" | sed "s#$work/#contrib/#" >&2
  exit 1
fi
echo "check-systemd-unit: $unit verifies cleanly (systemd-analyze $(systemd-analyze --version | head -n 1 | cut -d' ' -f2))"
