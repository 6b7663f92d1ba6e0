#!/usr/bin/env bash
# The soak: one hydra host (SQLite queue) under a steady mixed load for a long time, sampled every 5 s.
#   tests/soak/soak.sh                                  # 10 minutes, 10,000 clients, 1,000 sends/s, ...
#   SOAK_DURATION_S=60 SOAK_CONNECTIONS=1000 tests/soak/soak.sh   # a short run
# hydra-bench soak (cmd/hydra-bench/soak_bench.cpp) holds SOAK_CONNECTIONS WebSocket clients (uuid = their
# X-Request-Id, hydra runs with ws.client_uuid=request_id), posts SOAK_RATE POST /msg/send per second to them
# (message k to client k % N; each carries when it was due), SOAK_BROADCASTS POST /msg/broadcast per second (to every
# client) and SOAK_CHURN connect + echo + disconnect cycles per second on extra connections (/echo; every other one
# drops its socket without a close). Every SOAK_INTERVAL_S it reads hydra's GET /metrics (admin listener): RSS, open
# files, CPU seconds, WebSocket connections, queue depth (hydra_queue_messages ready + leased), and the delivery
# latencies of that interval (from when each message was due to its arrival). After the last post it waits up to
# SOAK_GRACE_S for acknowledged messages still on their way, then checks every acknowledged message one by one.
#
# Pass (printed at the end, exit 1 otherwise):
#   - RSS: the median of the last 3 samples is < 5 % above the median of the first 3 after SOAK_WARMUP_S (120 s)
#   - nothing lost: every /msg/send answered 200 arrived at its client; every broadcast reached every held client
#   - p99 flat: the median of the per-interval delivery p99s of the last quarter <= 2x that of the second quarter
#   - no held client closed by the server
# Outputs (SOAK_OUT, default build/soak-results): soak.csv (one row per interval), soak.json (hydra-bench's
# result), soak.png (gnuplot), hydra.log, bench.log.
# hydra runs pinned to SOAK_SERVER_CPU (0) with ws.io_threads=1, hydra-bench to SOAK_CLIENT_CPU (1), as in the
# benchmarks. Needs gnuplot-nox for the plot (deploy/install-deps.sh --bench); without it the CSV is still written.
# Knobs (env): SOAK_DURATION_S (600), SOAK_CONNECTIONS (10000), SOAK_RATE (1000), SOAK_BROADCASTS (10),
# SOAK_CHURN (50), SOAK_INTERVAL_S (5), SOAK_WARMUP_S (120), SOAK_GRACE_S (30), SOAK_PUBLISHERS (16),
# SOAK_SERVER_CPU, SOAK_CLIENT_CPU, SOAK_HYDRA_SET ("key=value ..."), SOAK_BUILD_DIR (build/bench),
# SOAK_SKIP_BUILD=1, SOAK_OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${SOAK_BUILD_DIR:-$ROOT/build/bench}
OUT=${SOAK_OUT:-$ROOT/build/soak-results}
RUN_DIR=$OUT/run
DURATION=${SOAK_DURATION_S:-600}
CONNECTIONS=${SOAK_CONNECTIONS:-10000}
RATE=${SOAK_RATE:-1000}
BROADCASTS=${SOAK_BROADCASTS:-10}
CHURN=${SOAK_CHURN:-50}
INTERVAL=${SOAK_INTERVAL_S:-5}
WARMUP=${SOAK_WARMUP_S:-120}
GRACE=${SOAK_GRACE_S:-30}
PUBLISHERS=${SOAK_PUBLISHERS:-16}
SERVER_CPU=${SOAK_SERVER_CPU:-0}
CLIENT_CPU=${SOAK_CLIENT_CPU:-1}
HYDRA_SET=()
for kv in ${SOAK_HYDRA_SET:-}; do HYDRA_SET+=(--set "$kv"); done

LOG_TAG=soak.sh
# shellcheck source=tests/bench/lib.sh
source "$ROOT/tests/bench/lib.sh"

HYDRA_PID="" BENCH_PID=""
cleanup() {
    stop_pid "$BENCH_PID"
    stop_pid "$HYDRA_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BENCH_SKIP_BUILD=${SOAK_SKIP_BUILD:-0} build_bench "$ROOT" "$BUILD"  # sets HYDRA and BENCH
command -v taskset >/dev/null || { log "taskset not found (apt-get install util-linux)"; exit 1; }
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < CONNECTIONS + 200)); then
    log "open files are limited to $(ulimit -n) per process: fewer than $CONNECTIONS connections + 200"
    exit 1
fi
rm -rf "$RUN_DIR" && mkdir -p "$OUT" "$RUN_DIR"
rm -f "$OUT"/soak.csv "$OUT"/soak.json "$OUT"/soak.png

# hydra: the dev profile with the benchmarks' settings (limits per address and rate limits off: every client comes
# from 127.0.0.1), a fresh queue file, metrics on the admin listener.
(cd "$RUN_DIR" && exec taskset -c "$SERVER_CPU" "$HYDRA" run --config "$ROOT/config/dev.json" \
    --set ws.address=127.0.0.1:0 --set api.address=127.0.0.1:0 --set admin.address=127.0.0.1:0 --set log.level=warn \
    --set ws.io_threads=1 --set ws.ping_interval_ms=0 --set ws.idle_timeout_ms=0 \
    --set ws.client_uuid=request_id --set ws.max_connections_per_ip=0 --set ws.rate_limit.messages_per_s=0 \
    --set api.max_connections_per_ip=0 --set api.rate_limit.requests_per_s=0 --set api.threads=$((PUBLISHERS + 8)) \
    --set queue.backend=sqlite --set queue.sqlite.path="$RUN_DIR/queue.db" \
    --set services.push.database="$RUN_DIR/push.db" ${HYDRA_SET[@]+"${HYDRA_SET[@]}"}) \
    >"$OUT/hydra.log" 2>&1 &
HYDRA_PID=$!
wait_for_addresses "$HYDRA_PID" "$OUT/hydra.log" hydra admin
log "hydra $HYDRA_PID: ws $FOUND_WS, api $FOUND_API, admin $FOUND_ADMIN"
log "$DURATION s: $CONNECTIONS clients, $RATE sends/s, $BROADCASTS broadcasts/s, $CHURN connect+disconnect/s"

rc=0
taskset -c "$CLIENT_CPU" "$BENCH" soak --ws "$FOUND_WS" --api "$FOUND_API" --admin "$FOUND_ADMIN" \
    --server-pid "$HYDRA_PID" --path / --id-prefix c --connections "$CONNECTIONS" --duration "$DURATION" \
    --rate "$RATE" --broadcast-rate "$BROADCASTS" --churn-rate "$CHURN" --interval "$INTERVAL" --warmup "$WARMUP" \
    --grace "$GRACE" --publishers "$PUBLISHERS" --csv "$OUT/soak.csv" --out "$OUT/soak.json" --label hydra \
    >/dev/null 2>"$OUT/bench.log" &
BENCH_PID=$!
wait "$BENCH_PID" || rc=$?
BENCH_PID=""
kill -0 "$HYDRA_PID" 2>/dev/null || { log "hydra died during the soak:"; tail -20 "$OUT/hydra.log" >&2; rc=1; }

if command -v gnuplot >/dev/null && [[ -s $OUT/soak.csv ]]; then
    gnuplot <<GP
set datafile separator ','
set terminal pngcairo size 1200,900 font ',10'
set output '$OUT/soak.png'
set key autotitle columnhead top left
set multiplot layout 4,1 title "hydra soak: $CONNECTIONS clients, $RATE sends/s, $BROADCASTS broadcasts/s, $CHURN churn/s (one sample per $INTERVAL s)"
set xlabel ''
set xrange [0:*]
set grid
set ylabel 'MB'
set y2label 'open files'
set yrange [0:*]
set y2range [0:*]
set y2tics
plot '$OUT/soak.csv' using 1:2 with lines lw 2 title 'RSS (MB)', '' using 1:3 axes x1y2 with lines title 'open fds (right)'
unset y2label
unset y2tics
set ylabel 'cores'
plot '$OUT/soak.csv' using 1:4 with lines lw 2 title 'hydra CPU (cores)'
set ylabel 'ms'
plot '$OUT/soak.csv' using 1:12 with lines lw 2 title 'send delivery p99', '' using 1:11 with lines title 'send delivery p50', '' using 1:16 with lines title 'broadcast delivery p99'
set ylabel 'messages'
set xlabel 'seconds'
plot '$OUT/soak.csv' using 1:(\$6+\$7) with lines lw 2 title 'queue depth (ready + leased)'
unset multiplot
GP
    log "plot: $OUT/soak.png"
else
    log "gnuplot not found (deploy/install-deps.sh --bench): no plot"
fi

[[ -s $OUT/soak.json ]] || { log "no result; see $OUT/bench.log"; tail -20 "$OUT/bench.log" >&2; exit 1; }
node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
if (r.error) { console.log("error: " + r.error); process.exit(1); }
const p = r.pass;
const mark = (ok) => (ok ? "PASS" : "FAIL");
console.log(`posts: ${r.posts.sent} sent, ${r.posts.ok_2xx} acknowledged, lost in flight ${r.posts.lost_in_flight}, ` +
  `rejected ${JSON.stringify(r.posts.rejected)}, skipped ${r.posts.skipped_over_max_lag}`);
console.log(`deliveries: ${r.deliveries.total}, duplicates ${r.deliveries.duplicates}, misrouted ${r.deliveries.misrouted}; ` +
  `latency p50 ${r.latency_ms.p50} ms, p99 ${r.latency_ms.p99} ms, max ${r.latency_ms.max} ms`);
console.log(`broadcasts: ${r.broadcasts.ok} acknowledged, ${r.broadcasts.deliveries} deliveries, ` +
  `p99 ${r.broadcast_latency_ms.p99} ms; churn: ${r.churn.cycles} cycles, ${r.churn.failed} failed`);
// other = the machine busy time minus hydra, hydra-bench and softirq, clamped at 0: near 0 also when every core
// was busy and others waited, so the load average is printed as well.
if (r.cpu) console.log(`cpu over the run (cores): hydra ${r.cpu.server_cores}, hydra-bench ${r.cpu.client_cores}, ` +
  `softirq ${r.cpu.softirq_cores}, other ${r.cpu.other_cores}, steal ${r.cpu.steal_cores}; ` +
  `load average at the end ${require("os").loadavg().map((x) => x.toFixed(1)).join(" ")}`);
console.log(`${mark(p.rss.ok)} RSS drift ${(p.rss.drift * 100).toFixed(2)} % (${p.rss.after_warmup_mb} -> ${p.rss.end_mb} MB, peak ${p.rss.peak_after_warmup_mb} MB; limit ${p.rss.limit * 100} %; ${p.rss.rule})`);
console.log(`${mark(p.lost.ok)} lost: ${p.lost.lost} of ${p.lost.acknowledged} acknowledged (unsent: ${p.lost.skipped_unsent})`);
console.log(`${mark(p.broadcasts.ok)} broadcast deliveries: ${p.broadcasts.deliveries} of ${p.broadcasts.expected_deliveries} expected`);
console.log(`${mark(p.p99_flat.ok)} p99 flat: last quarter ${p.p99_flat.last_quarter_median_p99_ms} ms vs second quarter ${p.p99_flat.second_quarter_median_p99_ms} ms (limit x${p.p99_flat.limit_ratio})`);
console.log(`${mark(p.clients_kept.ok)} held clients closed by the server: ${p.clients_kept.closed_by_server}`);
console.log(p.all ? "soak: PASS" : "soak: FAIL");
process.exit(p.all ? 0 : 1);
' "$OUT/soak.json" || rc=1
log "results in $OUT (soak.csv, soak.json, soak.png)"
exit "$rc"
