#!/usr/bin/env bash
# One command from a fresh checkout to a passing test suite: install packages, build the dev preset
# (Debug, AddressSanitizer + UndefinedBehaviorSanitizer), run every test under ctest.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh --test
cmake --preset dev >/dev/null
cmake --build --preset dev -j"$(nproc)"
ctest --preset dev
