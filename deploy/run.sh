#!/usr/bin/env bash
# One command from a fresh checkout to a running host: install packages, build (Release), run the dev profile.
# Extra arguments go to `hydra run`, e.g. deploy/run.sh --set api.address=127.0.0.1:18080
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake --preset prod >/dev/null
cmake --build --preset prod -j"$(nproc)" --target hydra_cli
exec build/prod/bin/hydra run --env dev "$@"
