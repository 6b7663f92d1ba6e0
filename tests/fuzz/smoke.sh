#!/usr/bin/env bash
# Builds the fuzz targets with clang's libFuzzer and runs each briefly on its seed corpus:
#   ws_frame_fuzz      the WebSocket frame decoder and handshake parsers
#   http_head_fuzz     the HTTP head parser (common/http)
#   http_chunked_fuzz  the chunked body decoder (common/http)
#   json_depth_fuzz    the depth scan in front of every JSON read from outside (core/json)
#   tests/fuzz/smoke.sh OUT_DIR [SECONDS]     (ctest runs it for 20 s per target; run longer by hand to hunt bugs)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="$1"
seconds="${2:-20}"
cxx="$(command -v clang++-14 || command -v clang++)"
src="$root/hydra/src"

# build TARGET SOURCES...: tests/fuzz/TARGET.cpp with the given hydra sources.
build() {
    local target=$1
    shift
    "$cxx" -std=c++20 -g -O1 -Wall -Wextra -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -I"$src" -I"$root/hydra/include" "$here/$target.cpp" "$@" -o "$out/$target"
}

# run TARGET CORPUS: on a copy of the seed corpus (what the run finds stays in OUT_DIR).
run() {
    local target=$1 corpus=$2
    mkdir -p "$out/corpus-$corpus"
    cp -n "$here"/corpus/"$corpus"/* "$out/corpus-$corpus/" 2>/dev/null || true
    "$out/$target" -max_total_time="$seconds" -print_final_stats=1 "$out/corpus-$corpus"
}

mkdir -p "$out"
build ws_frame_fuzz "$src/ws/utf8.cpp" "$src/ws/frame.cpp" "$src/ws/handshake.cpp" "$src/common/http.cpp" \
    -lPocoFoundation
build http_head_fuzz "$src/common/http.cpp"
build http_chunked_fuzz "$src/common/http.cpp"
build json_depth_fuzz "$src/core/json.cpp"
run ws_frame_fuzz ws_frame
run http_head_fuzz http_head
run http_chunked_fuzz http_chunked
run json_depth_fuzz json_depth
