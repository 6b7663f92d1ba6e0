#!/usr/bin/env bash
# deploy/hydra.service: `systemd-analyze verify` finds nothing wrong (with ExecStart= pointing at the built
# binary, since /usr/local/bin/hydra is not installed here) and its sandbox exposure is at most 4.0.
#   tests/deploy/systemd_unit.sh UNIT BINARY
set -euo pipefail
unit=$1 binary=$(realpath "$2")
command -v systemd-analyze >/dev/null || { echo "systemd-analyze not found" >&2; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed "s|/usr/local/bin/hydra|$binary|g" "$unit" >"$dir/hydra.service"
out=$(systemd-analyze verify "$dir/hydra.service" 2>&1) || { echo "$out" >&2; exit 1; }
if [[ -n "$out" ]]; then
    echo "systemd-analyze verify complained:" >&2
    echo "$out" >&2
    exit 1
fi
level=$(systemd-analyze security --offline=true "$dir/hydra.service" 2>&1 |
    sed -n 's/.*Overall exposure level for hydra.service: \([0-9.]*\).*/\1/p')
[[ -n "$level" ]] || { echo "no exposure level in systemd-analyze security's output" >&2; exit 1; }
echo "exposure $level"
awk -v l="$level" 'BEGIN { exit !(l <= 4.0) }' || { echo "exposure $level is above 4.0" >&2; exit 1; }
