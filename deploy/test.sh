#!/usr/bin/env bash
# One command from a fresh checkout to a passing test suite: install packages, build the dev preset
# (Debug, AddressSanitizer + UndefinedBehaviorSanitizer), run every suite under ctest, two at a time.
# It installs every tool the suite needs, so a suite reported "Skipped" (a tool missing) fails the run.
#   deploy/test.sh [CTEST ARGS...]     e.g. deploy/test.sh -R '^integration\.ws' to run some suites
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh --test
cmake --preset dev >/dev/null
cmake --build --preset dev -j"$(nproc)"
log="build/dev/ctest.log"
status=0
ctest --preset dev -j2 "$@" 2>&1 | tee "$log" || status=$?
if grep -Eq '\*\*\*Skipped|Not Run' "$log"; then
    echo "test.sh: a suite was skipped or not run (above); every tool it needs should have been installed" >&2
    exit 1
fi
exit "$status"
