#!/usr/bin/env bash
# Browser test: starts the real hydra binary, then two headless Chromium pages chat through it.
#   tests/browser/run.sh HYDRA_BINARY SOURCE_DIR OUT_DIR        (ctest runs it; the screenshot lands in OUT_DIR)
set -euo pipefail

# A missing tool is reported as skipped (ctest SKIP_RETURN_CODE), never as a pass.
for tool in /usr/bin/chromium node npm; do
    command -v "$tool" >/dev/null || { echo "skipped: $tool not found (deploy/install-deps.sh --test installs it)" >&2; exit 77; }
done
hydra="$1"
src="$2"
out="$3"
mkdir -p "$out"
here="$(cd "$(dirname "$0")" && pwd)"

if [[ ! -d "$out/node_modules/playwright-core" ]]; then
    cp "$here/package.json" "$out/package.json"
    npm install --prefix "$out" --no-audit --no-fund --silent >/dev/null
fi

rm -f "$out"/*.db "$out"/*.db-*
cd "$src"
"$hydra" run --env dev --set api.address=127.0.0.1:0 --set admin.address=127.0.0.1:0 --set ws.address=127.0.0.1:0 --set log.level=warn \
    --set "queue.sqlite.path=$out/queue.db" --set "services.push.database=$out/push.db" >"$out/hydra.out" 2>"$out/hydra.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT

for _ in $(seq 100); do
    grep -q "running" "$out/hydra.out" 2>/dev/null && break
    sleep 0.1
done
api=$(sed -n 's#^api listening on http://127.0.0.1:\([0-9]*\).*#\1#p' "$out/hydra.out")
ws=$(sed -n 's#^ws listening on ws://127.0.0.1:\([0-9]*\).*#\1#p' "$out/hydra.out")
if [[ -z "$api" || -z "$ws" ]]; then
    echo "hydra did not start:" >&2
    cat "$out/hydra.err" >&2
    exit 1
fi
# ES modules resolve packages from the script's own directory: run it beside node_modules.
cp "$here/chat_test.mjs" "$out/chat_test.mjs"
node "$out/chat_test.mjs" "$api" "$ws" "$out"
