#!/usr/bin/env bash
# SIGKILL fault run: a stream of POST /msg/send on the SQLite queue while hydra is killed with SIGKILL at random
# moments (FAULT_KILLS times, 20) and restarted each time on the same queue and user files; at the end, nothing
# acknowledged may be missing.
#   tests/faults/sigkill_sqlite.sh
#   FAULT_KILLS=5 FAULT_RATE=100 tests/faults/sigkill_sqlite.sh    # a short run
# The stream (hydra-bench stream) posts {"uname":"alice","msg":"seq=<k>"} at FAULT_RATE per second from 8 keep-alive
# connections that reconnect while hydra is down, and records which posts were answered 200 (durable in the queue).
# alice is never logged in, so the MQC handler of /msg/push keeps every message in her mailbox (SQLite, the push
# database): a message counts as delivered when it comes out of the mailbox at her login. Between kills hydra runs
# for a random 0.5–3.5 s (FAULT_MIN_UP_MS, FAULT_MAX_UP_MS). After the last restart the stream ends, the queue drains
# (hydra_queue_messages ready + leased = 0), and hydra-bench mailbox logs in as alice and reads everything:
#   lost = acknowledged but never delivered (must be 0); duplicates (at-least-once: allowed, counted);
#   delivered but not acknowledged (the post was in flight when hydra died: allowed).
# Outputs in FAULT_OUT (build/soak-results/sigkill): stream.json, mailbox.json, acked.txt, seconds.csv, hydra-N.log.
# Knobs (env): FAULT_KILLS (20), FAULT_RATE (300), FAULT_MIN_UP_MS (500), FAULT_MAX_UP_MS (3500),
# FAULT_BUILD_DIR (build/bench), FAULT_SKIP_BUILD=1, FAULT_SERVER_CPU (0), FAULT_CLIENT_CPU (1), FAULT_OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${FAULT_BUILD_DIR:-$ROOT/build/bench}
OUT=${FAULT_OUT:-$ROOT/build/soak-results/sigkill}
RUN_DIR=$OUT/run
KILLS=${FAULT_KILLS:-20}
RATE=${FAULT_RATE:-300}
MIN_UP_MS=${FAULT_MIN_UP_MS:-500}
MAX_UP_MS=${FAULT_MAX_UP_MS:-3500}
SERVER_CPU=${FAULT_SERVER_CPU:-0}
CLIENT_CPU=${FAULT_CLIENT_CPU:-1}

LOG_TAG=sigkill_sqlite.sh
# shellcheck source=tests/bench/lib.sh
source "$ROOT/tests/bench/lib.sh"
# shellcheck source=tests/faults/lib.sh
source "$ROOT/tests/faults/lib.sh"

HYDRA_PID="" STREAM_PID=""
cleanup() {
    stop_pid "$STREAM_PID"
    stop_pid "$HYDRA_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BENCH_SKIP_BUILD=${FAULT_SKIP_BUILD:-0} build_bench "$ROOT" "$BUILD"  # sets HYDRA and BENCH
command -v curl >/dev/null || { log "curl not found (deploy/install-deps.sh --bench)"; exit 1; }
rm -rf "$OUT" && mkdir -p "$RUN_DIR"
WS=127.0.0.1:$(free_port) API=127.0.0.1:$(free_port) ADMIN=127.0.0.1:$(free_port)

STARTS=0
start_hydra() {
    STARTS=$((STARTS + 1))
    local logf=$OUT/hydra-$STARTS.log
    (cd "$RUN_DIR" && exec taskset -c "$SERVER_CPU" "$HYDRA" run --config "$ROOT/config/dev.json" \
        --set ws.address="$WS" --set api.address="$API" --set admin.address="$ADMIN" --set log.level=warn \
        --set ws.max_connections_per_ip=0 --set api.max_connections_per_ip=0 --set api.rate_limit.requests_per_s=0 \
        --set queue.backend=sqlite --set queue.sqlite.path="$RUN_DIR/queue.db" --set queue.sqlite.lease_ms=2000 \
        --set services.push.database="$RUN_DIR/push.db" --set services.push.mailbox.max_messages=1000000 \
        --set services.push.mailbox.max_bytes=1073741824) >"$logf" 2>&1 &
    HYDRA_PID=$!
    wait_listening "$HYDRA_PID" "$logf"
}

start_hydra
# Long enough for every kill: each up time at most MAX_UP_MS, plus restarts (a few hundred ms each), plus 10 s.
STREAM_S=$(((KILLS * (MAX_UP_MS + 1500)) / 1000 + 10))
log "hydra on ws $WS api $API admin $ADMIN; streaming $RATE posts/s for up to $STREAM_S s, $KILLS kills"
taskset -c "$CLIENT_CPU" "$BENCH" stream --api "$API" --rate "$RATE" --duration "$STREAM_S" --publishers 8 \
    --body '{"uname":"alice","msg":"seq={seq}"}' --acked "$OUT/acked.txt" --seconds-csv "$OUT/seconds.csv" \
    --out "$OUT/stream.json" >/dev/null 2>"$OUT/stream.log" &
STREAM_PID=$!
sleep 2  # the stream runs a while before the first kill

for i in $(seq 1 "$KILLS"); do
    up_ms=$((MIN_UP_MS + RANDOM % (MAX_UP_MS - MIN_UP_MS + 1)))
    sleep "$(printf '%d.%03d' $((up_ms / 1000)) $((up_ms % 1000)))"  # the random moment: not a wait for anything
    depth=$(metric "$ADMIN" hydra_queue_messages 'state="ready"' || true)
    kill -KILL "$HYDRA_PID"
    wait "$HYDRA_PID" 2>/dev/null || true
    log "kill $i/$KILLS after ${up_ms} ms up (queue ready: ${depth:-?}); restarting"
    start_hydra
done

log "kills done; waiting for the stream to end"
rc=0
wait "$STREAM_PID" || rc=$?
STREAM_PID=""
[[ $rc == 0 ]] || { log "hydra-bench stream failed (exit $rc):"; tail -20 "$OUT/stream.log" >&2; exit 1; }

# The queue drains into alice's mailbox.
for _ in $(seq 1 600); do
    ready=$(metric "$ADMIN" hydra_queue_messages 'state="ready"')
    leased=$(metric "$ADMIN" hydra_queue_messages 'state="leased"')
    [[ ${ready:-1} == 0 && ${leased:-1} == 0 ]] && break
    sleep 0.1
done
log "queue drained (ready ${ready:-?}, leased ${leased:-?}); reading alice's mailbox"
taskset -c "$CLIENT_CPU" "$BENCH" mailbox --ws "$WS" --uname alice --pwd alice-pw --acked "$OUT/acked.txt" \
    --quiet 10 --out "$OUT/mailbox.json" >/dev/null 2>"$OUT/mailbox.log" || rc=$?
[[ -s $OUT/mailbox.json ]] || { log "no mailbox result:"; tail -20 "$OUT/mailbox.log" >&2; exit 1; }

node -e '
const fs = require("fs");
const s = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
const m = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
if (m.error) { console.log("mailbox error: " + m.error); process.exit(1); }
console.log(`kills: ${process.argv[3]}, hydra starts: ${process.argv[4]}`);
console.log(`posts: ${s.sent} sent, ${s.acknowledged} acknowledged (200), rejected ${JSON.stringify(s.rejected)}, ` +
  `${s.broken_in_flight} in flight when hydra died (fate unknown), ${s.not_sent_server_down} not sent while it was down`);
console.log(`delivered: ${m.delivered_distinct} distinct (${m.frames - 1} frames), duplicates ${m.duplicates}, ` +
  `delivered but not acknowledged ${m.delivered_not_acknowledged}`);
console.log(`lost: ${m.lost}` + (m.lost ? ` (e.g. seq ${m.lost_examples_seq.join(", ")})` : ""));
process.exit(m.lost === 0 && m.acknowledged > 0 ? 0 : 1);
' "$OUT/stream.json" "$OUT/mailbox.json" "$KILLS" "$STARTS" || rc=1
exit "$rc"
