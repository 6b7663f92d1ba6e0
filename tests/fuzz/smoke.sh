#!/usr/bin/env bash
# Builds the WebSocket frame/handshake fuzz target with clang's libFuzzer and runs it briefly on the seed corpus.
#   tests/fuzz/smoke.sh OUT_DIR [SECONDS]     (ctest runs it for 20 s; run longer by hand to hunt bugs)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$1"
seconds="${2:-20}"
cxx="$(command -v clang++-14 || command -v clang++)"
mkdir -p "$out/corpus"
cp -n "$here"/corpus/ws_frame/* "$out/corpus/" 2>/dev/null || true
"$cxx" -std=c++20 -g -O1 -Wall -Wextra -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/hydra/src" "$here/ws_frame_fuzz.cpp" "$root/hydra/src/ws/utf8.cpp" "$root/hydra/src/ws/frame.cpp" \
    "$root/hydra/src/ws/handshake.cpp" "$root/hydra/src/common/http.cpp" -lPocoFoundation -o "$out/ws_frame_fuzz"
"$out/ws_frame_fuzz" -max_total_time="$seconds" -print_final_stats=1 "$out/corpus"
