#!/usr/bin/env bash
# User-space instructions per message on the push path (POST /msg/send -> queue -> MQC /msg/push -> notify ->
# client), counted by callgrind in a window of a paced run: a figure that does not move with the machine's speed,
# for comparing two builds of hydra where the send benchmark's noise hides a few per cent. Kernel time (the
# sockets' system calls, most of the push path's CPU) is not in it: send.sh measures the whole.
#   tests/bench/instructions.sh                                   # the current build
#   BENCH_HYDRA_BEFORE=<hydra binary> tests/bench/instructions.sh  # and an earlier one, alternating
# Knobs (env): BENCH_INSTR_RATE (msg/s, default 200: well within what hydra keeps up with under callgrind; near
# its limit, at 400, the queue's consumer was busy for part of the messages, which then took the fetcher's lease
# path instead of the hand-off real runs take), BENCH_INSTR_WINDOW (seconds counted, 10), BENCH_INSTR_CLIENTS
# (1000), BENCH_INSTR_HYDRA_SET ("key=value ..."), BENCH_INSTR_TOP (rows of the per-function table, 25),
# BENCH_REPEAT (runs per binary, 1), and run.sh's BENCH_SKIP_BUILD, BENCH_BUILD_DIR.
# At this rate a transaction carries one to a few messages, so SQLite's share is mostly a transaction's cost and
# moves with the batching from run to run (±15 %); the figure outside SQLite (HTTP handler, Context, JSON, MQC
# route, exchange) is the one to compare (±3 %; a function's own figure in the table, closer).
# Needs valgrind (deploy/install-deps.sh --bench). Results: build/bench/results/instructions.*.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(realpath -m "${BENCH_BUILD_DIR:-$ROOT/build/bench}")  # absolute: the server runs in its own directory
[[ -n ${BENCH_HYDRA_BEFORE:-} ]] && BENCH_HYDRA_BEFORE=$(realpath -m "$BENCH_HYDRA_BEFORE")
OUT=$BUILD/results
RUN_DIR=$BUILD/run-instructions
RATE=${BENCH_INSTR_RATE:-200}
WINDOW=${BENCH_INSTR_WINDOW:-10}
CLIENTS=${BENCH_INSTR_CLIENTS:-1000}
TOP=${BENCH_INSTR_TOP:-25}
REPEAT=${BENCH_REPEAT:-1}
HYDRA_SET=()
for kv in ${BENCH_INSTR_HYDRA_SET:-}; do HYDRA_SET+=(--set "$kv"); done

LOG_TAG=instructions.sh
# shellcheck source=tests/bench/lib.sh
source "$ROOT/tests/bench/lib.sh"

SERVER_PID="" BENCH_PID=""
cleanup() {
    stop_pid "$BENCH_PID"
    stop_pid "$SERVER_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

build_bench "$ROOT" "$BUILD"  # sets HYDRA and BENCH
if ! command -v callgrind_control >/dev/null || ! command -v curl >/dev/null; then
    log "installing valgrind and curl (deploy/install-deps.sh --bench)"
    "$ROOT/deploy/install-deps.sh" --bench
fi
mkdir -p "$OUT"
rm -f "$OUT"/instructions.*

# handled ADMIN: messages the MQC routes handled so far (hydra_mqc_handled_total, every route, result ok).
handled() {
    local text
    text=$(curl -sf "http://$1/metrics") || { log "cannot read http://$1/metrics"; exit 1; }
    awk '/^hydra_mqc_handled_total\{.*result="ok"/ {s += $NF} END {print s + 0}' <<<"$text"
}

# control COMMAND...: callgrind_control on the server (instrumentation on/off, dump), or a clear failure.
control() {
    callgrind_control "$@" "$SERVER_PID" >/dev/null 2>&1 || { log "callgrind_control $* failed"; exit 1; }
}

# measure NAME BINARY: one run; writes $OUT/instructions.NAME.<n>.{callgrind,txt} and prints the summary line.
measure() {
    local name=$1 binary=$2 n=$3
    local dir=$RUN_DIR/$name.$n out=$OUT/instructions.$name.$n
    rm -rf "$dir"
    mkdir -p "$dir"
    (cd "$dir" && HYDRA_CONFIG_DIR=$ROOT/config exec valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$dir/callgrind.out" "$binary" run --env dev "${HYDRA_BENCH_SETTINGS[@]}" \
        --set api.threads=40 \
        --set services.push.database="$dir/push.db" --set queue.backend=sqlite --set queue.sqlite.path="$dir/q.db" \
        ${HYDRA_SET[@]+"${HYDRA_SET[@]}"}) >"$dir/server.log" 2>&1 &
    SERVER_PID=$!
    wait_for_addresses "$SERVER_PID" "$dir/server.log" "hydra $name" admin
    local ws=$FOUND_WS api=$FOUND_API admin=$FOUND_ADMIN
    "$BENCH" send --ws "$ws" --api "$api" --label "$name" --out "$dir/send.json" --connections "$CLIENTS" \
        --id-prefix c --rate "$RATE" --warmup 3 --duration $((WINDOW + 6)) --publishers 32 --pipeline 1 --settle 2 \
        --path / --post-path /msg/send --content-type application/json \
        --body '{"uuid":"{id}","msg":"ts={ts} seq={seq}"}' >/dev/null 2>"$dir/send.log" &
    BENCH_PID=$!
    for _ in $(seq 1 1200); do
        grep -qi 'warm' "$dir/send.log" 2>/dev/null && break
        sleep 0.1
    done
    sleep 4  # past the warm-up: the clients are connected and the queue's consumer is parked
    local m0 m1
    m0=$(handled "$admin")
    control -i on
    sleep "$WINDOW"
    control -i off
    m1=$(handled "$admin")
    control -d
    wait "$BENCH_PID" || true
    BENCH_PID=""
    stop_pid "$SERVER_PID"
    SERVER_PID=""
    local messages=$((m1 - m0)) file
    file=$(ls "$dir"/callgrind.out.* 2>/dev/null | head -1 || true)
    [[ -n $file ]] || { log "$name: callgrind wrote no dump; see $dir"; exit 1; }
    cp "$file" "$out.callgrind"
    local total sqlite
    total=$(awk '/^totals:/ {print $2}' "$file")
    # SQLite's own instructions: their share per message depends on how many messages a transaction carried, which
    # moves from run to run; the rest does not.
    sqlite=$(callgrind_annotate --show-percs=yes --threshold=100 "$file" 2>/dev/null |
        awk '/^ *[0-9,]+ +\(/ && /libsqlite3/ { v = $1; gsub(",", "", v); s += v } END { print s + 0 }')
    if ((messages <= 0)); then
        log "$name: no message handled in the window; see $dir"
        exit 1
    fi
    {
        echo "$name run $n: $messages messages in ${WINDOW} s, $((total / messages)) user-space instructions per" \
            "message, $(((total - sqlite) / messages)) outside SQLite"
        echo "inclusive instructions per message, by function (all threads):"
        callgrind_annotate --show-percs=yes --inclusive=yes "$file" 2>/dev/null | awk -v n="$messages" -v top="$TOP" '
            /^ *[0-9,]+ +\(/ && !/PROGRAM TOTALS/ {
                v = $1; gsub(",", "", v); $1 = ""; $2 = ""; sub(/^ +/, "");
                sub(/ \[.*$/, ""); sub(/^\?\?\?:/, ""); if (length($0) > 110) $0 = substr($0, 1, 110) "...";
                if (shown++ < top) printf "%10d  %s\n", v / n, $0
            }'
    } >"$out.txt"
    head -1 "$out.txt"
}

servers=(hydra)
[[ -n ${BENCH_HYDRA_BEFORE:-} ]] && servers+=(hydra_before)
for ((n = 1; n <= REPEAT; n++)); do
    for name in "${servers[@]}"; do
        binary=$HYDRA
        [[ $name == hydra_before ]] && binary=$BENCH_HYDRA_BEFORE
        log "$name run $n: $RATE msg/s, $WINDOW s counted"
        measure "$name" "$binary" "$n"
    done
done
echo
for name in "${servers[@]}"; do
    echo "== $name ($(ls "$OUT"/instructions."$name".*.txt | wc -l) runs; per-function table of run 1)"
    cat "$OUT/instructions.$name.1.txt"
    echo
done
