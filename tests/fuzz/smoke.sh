#!/usr/bin/env bash
# Runs one fuzz target (built by CMake with clang's libFuzzer: target fuzz_targets) on a copy of its seed corpus:
#   ws_frame      the WebSocket frame decoder and handshake parsers
#   http_head     the HTTP head parser (http/head)
#   http_chunked  the chunked body decoder (http/chunked)
#   json_depth    the depth scan in front of every JSON read from outside and the flat-object fast path (core/json)
#   tests/fuzz/smoke.sh BIN_DIR TARGET [SECONDS]   (ctest runs each for 20 s; run longer by hand to hunt bugs)
# What a run finds stays in BIN_DIR/corpus-TARGET; a crash leaves its input there as crash-* and fails the run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$1"
target="$2"
seconds="${3:-20}"

mkdir -p "$bin/corpus-$target"
cp -n "$here/corpus/$target"/* "$bin/corpus-$target/" 2>/dev/null || true
cd "$bin"
exec "./${target}_fuzz" -max_total_time="$seconds" -print_final_stats=1 "corpus-$target"
