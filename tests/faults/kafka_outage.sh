#!/usr/bin/env bash
# Kafka outage fault run: one hydra host on queue.backend=kafka (cluster on) against a one-broker librdkafka mock
# cluster (hydra-bench kafka-mock) whose broker is taken down mid-stream for FAULT_OUTAGE_S (10 s) and brought back on
# the same port with its data (rd_kafka_mock_broker_set_down / set_up).
#   tests/faults/kafka_outage.sh
# The stream (hydra-bench stream) posts {"uname":"alice","msg":"seq=<k>"} at FAULT_RATE per second for
# FAULT_BEFORE_S + FAULT_OUTAGE_S + FAULT_AFTER_S seconds (10 + 10 + 20) from FAULT_PUBLISHERS (64) keep-alive
# connections, one request in flight on each (a post due while every connection waits for an answer, and more than
# 1 s late, is not sent: counted); alice is never logged in, so the MQC handler keeps each message in her mailbox.
# Recorded:
#   - GET /readyz and /healthz on the API listener every 0.5 s (probes.csv: seconds since the stream started, status
#     codes; /readyz answers 404 on a build without it);
#   - the answers to the posts per second (seconds.csv: ok, 503, other, broken, slowest ok / 503 in ms), so how pushes
#     fail during the outage and how long a failing one waits (queue.push_timeout_ms, FAULT_PUSH_TIMEOUT_MS: 5000);
#   - that hydra is the same process at the end (recovered without a restart);
#   - after the stream, once hydra_mqc_handled_total reaches the acknowledged count (or 120 s), alice logs in
#     and reads her mailbox: lost = acknowledged (200) but never delivered, must be 0; duplicates allowed.
# Outputs in FAULT_OUT (build/soak-results/kafka): stream.json, mailbox.json, seconds.csv, probes.csv, hydra.log,
# mock.log. Knobs (env): FAULT_RATE (200), FAULT_BEFORE_S (10), FAULT_OUTAGE_S (10), FAULT_AFTER_S (20),
# FAULT_PUSH_TIMEOUT_MS (5000), FAULT_PUBLISHERS (64), FAULT_BUILD_DIR (build/bench), FAULT_SKIP_BUILD=1,
# FAULT_SERVER_CPU (0), FAULT_CLIENT_CPU (1), FAULT_OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${FAULT_BUILD_DIR:-$ROOT/build/bench}
OUT=${FAULT_OUT:-$ROOT/build/soak-results/kafka}
RUN_DIR=$OUT/run
RATE=${FAULT_RATE:-200}
BEFORE=${FAULT_BEFORE_S:-10}
OUTAGE=${FAULT_OUTAGE_S:-10}
AFTER=${FAULT_AFTER_S:-20}
PUSH_TIMEOUT_MS=${FAULT_PUSH_TIMEOUT_MS:-5000}
PUBLISHERS=${FAULT_PUBLISHERS:-64}
SERVER_CPU=${FAULT_SERVER_CPU:-0}
CLIENT_CPU=${FAULT_CLIENT_CPU:-1}

LOG_TAG=kafka_outage.sh
# shellcheck source=tests/bench/lib.sh
source "$ROOT/tests/bench/lib.sh"
# shellcheck source=tests/faults/lib.sh
source "$ROOT/tests/faults/lib.sh"

HYDRA_PID="" STREAM_PID="" MOCK_PID="" PROBE_PID=""
cleanup() {
    stop_pid "$PROBE_PID"
    stop_pid "$STREAM_PID"
    stop_pid "$HYDRA_PID"
    exec 7>&- 2>/dev/null || true  # EOF on the mock's stdin: it quits
    stop_pid "$MOCK_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BENCH_SKIP_BUILD=${FAULT_SKIP_BUILD:-0} build_bench "$ROOT" "$BUILD"  # sets HYDRA and BENCH
command -v curl >/dev/null || { log "curl not found (deploy/install-deps.sh --bench)"; exit 1; }
rm -rf "$OUT" && mkdir -p "$RUN_DIR"

# The mock cluster, commands through a FIFO.
mkfifo "$RUN_DIR/mock.in"
taskset -c "$SERVER_CPU" "$BENCH" kafka-mock <"$RUN_DIR/mock.in" >"$OUT/mock.log" 2>&1 &
MOCK_PID=$!
exec 7>"$RUN_DIR/mock.in"
BOOTSTRAP=""
for _ in $(seq 1 200); do
    BOOTSTRAP=$(sed -n 's/^bootstrap //p' "$OUT/mock.log" | head -1)
    [[ -n $BOOTSTRAP ]] && break
    sleep 0.05
done
[[ -n $BOOTSTRAP ]] || { log "the mock cluster did not start:"; cat "$OUT/mock.log" >&2; exit 1; }

WS=127.0.0.1:$(free_port) API=127.0.0.1:$(free_port) ADMIN=127.0.0.1:$(free_port)
(cd "$RUN_DIR" && exec taskset -c "$SERVER_CPU" "$HYDRA" run --config "$ROOT/config/dev.json" \
    --set ws.address="$WS" --set api.address="$API" --set admin.address="$ADMIN" --set log.level=warn \
    --set api.max_connections_per_ip=0 --set api.rate_limit.requests_per_s=0 \
    --set queue.backend=kafka --set queue.kafka.brokers="$BOOTSTRAP" --set cluster.enabled=true \
    --set cluster.node_id=fault-a --set queue.push_timeout_ms="$PUSH_TIMEOUT_MS" \
    --set queue.kafka.properties.session.timeout.ms=6000 --set queue.kafka.properties.fetch.wait.max.ms=5 \
    --set services.push.database="$RUN_DIR/push.db" --set services.push.mailbox.max_messages=1000000 \
    --set services.push.mailbox.max_bytes=1073741824) >"$OUT/hydra.log" 2>&1 &
HYDRA_PID=$!
wait_listening "$HYDRA_PID" "$OUT/hydra.log"
FIRST_PID=$HYDRA_PID
# The consumer has joined its group once a first message goes through: one post, then its handling.
for _ in $(seq 1 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -H 'Content-Type: application/json' \
        -d '{"uname":"alice","msg":"warm-up"}' "http://$API/msg/send" || true)
    [[ $code == 200 ]] && break
    sleep 0.1
done
for _ in $(seq 1 600); do
    [[ $(metric "$ADMIN" hydra_mqc_handled_total 'result="ok"') -ge 1 ]] && break
    sleep 0.1
done
log "hydra $HYDRA_PID on kafka $BOOTSTRAP (mock $MOCK_PID); consumer ready"

TOTAL=$((BEFORE + OUTAGE + AFTER))
T0=$(date +%s.%N)
taskset -c "$CLIENT_CPU" "$BENCH" stream --api "$API" --rate "$RATE" --duration "$TOTAL" --publishers "$PUBLISHERS" \
    --body '{"uname":"alice","msg":"seq={seq}"}' --acked "$OUT/acked.txt" --seconds-csv "$OUT/seconds.csv" \
    --out "$OUT/stream.json" >/dev/null 2>"$OUT/stream.log" &
STREAM_PID=$!
(
    echo "t_s,readyz,healthz"
    while :; do
        r=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$API/readyz" || echo 000)
        h=$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$API/healthz" || echo 000)
        echo "$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.1f", a - b }'),$r,$h"
        sleep 0.5  # the probe's period
    done
) >"$OUT/probes.csv" &
PROBE_PID=$!

sleep "$BEFORE"  # the outage starts at a fixed moment of the stream
echo down >&7
log "broker down at $(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.1f", a - b }') s"
sleep "$OUTAGE"  # the outage's length
echo up >&7
log "broker up at $(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.1f", a - b }') s"

rc=0
wait "$STREAM_PID" || rc=$?
STREAM_PID=""
stop_pid "$PROBE_PID"
PROBE_PID=""
[[ $rc == 0 ]] || { log "hydra-bench stream failed (exit $rc):"; tail -20 "$OUT/stream.log" >&2; exit 1; }
kill -0 "$FIRST_PID" 2>/dev/null || { log "hydra died"; tail -20 "$OUT/hydra.log" >&2; exit 1; }

acked=$(wc -l <"$OUT/acked.txt")
for _ in $(seq 1 1200); do
    handled=$(metric "$ADMIN" hydra_mqc_handled_total 'result="ok"')
    [[ -n $handled && $handled -ge $((acked + 1)) ]] && break
    sleep 0.1
done
log "handled ${handled:-?} of $acked acknowledged (+1 warm-up); reading alice's mailbox"
"$BENCH" mailbox --ws "$WS" --uname alice --pwd alice-pw --acked "$OUT/acked.txt" --quiet 10 \
    --out "$OUT/mailbox.json" >/dev/null 2>"$OUT/mailbox.log" || rc=$?
[[ -s $OUT/mailbox.json ]] || { log "no mailbox result:"; tail -20 "$OUT/mailbox.log" >&2; exit 1; }

node -e '
const fs = require("fs");
const [streamFile, mailboxFile, secondsFile, probesFile, before, outage, timeoutMs] = process.argv.slice(1);
const s = JSON.parse(fs.readFileSync(streamFile, "utf8"));
const m = JSON.parse(fs.readFileSync(mailboxFile, "utf8"));
const rows = (f) => fs.readFileSync(f, "utf8").trim().split("\n").slice(1).map((l) => l.split(","));
const secs = rows(secondsFile).map((r) => r.map(Number));
const probes = rows(probesFile);
const b = Number(before), o = Number(outage);
const phase = (t) => (t < b ? "before" : t < b + o ? "outage" : "after");
const sum = {};
for (const [sec, ok, s503, other, broken, slowOk, slow503] of secs) {
  const p = phase(sec);
  const x = (sum[p] ??= { ok: 0, s503: 0, other: 0, broken: 0, slowOk: 0, slow503: 0 });
  x.ok += ok; x.s503 += s503; x.other += other; x.broken += broken;
  x.slowOk = Math.max(x.slowOk, slowOk); x.slow503 = Math.max(x.slow503, slow503);
}
console.log(`posts: ${s.sent} sent, ${s.acknowledged} acknowledged (200), rejected ${JSON.stringify(s.rejected)}`);
for (const p of ["before", "outage", "after"]) {
  const x = sum[p] || {};
  console.log(`  ${p.padEnd(6)} answered 200: ${x.ok} (slowest ${x.slowOk} ms), 503: ${x.s503} (slowest ${x.slow503} ms; ` +
    `queue.push_timeout_ms ${timeoutMs}), other: ${x.other}, broken: ${x.broken}`);
}
const firstOkAfter = secs.find((r) => r[0] >= b + o && r[1] > 0);
console.log(`first second with pushes answered 200 after the broker came back: ` +
  (firstOkAfter ? `${firstOkAfter[0] - b - o} s after` : "none"));
const probeSummary = (col) => {
  const by = {};
  for (const r of probes) { const p = phase(Number(r[0])); (by[p] ??= {})[r[col]] = ((by[p] ??= {})[r[col]] || 0) + 1; }
  return Object.entries(by).map(([p, c]) => `${p} ${JSON.stringify(c)}`).join(", ");
};
console.log(`GET /readyz (status: samples): ${probeSummary(1)}`);
console.log(`GET /healthz (status: samples): ${probeSummary(2)}`);
console.log(`delivered: ${m.delivered_distinct} distinct, duplicates ${m.duplicates}, delivered but not acknowledged ${m.delivered_not_acknowledged}`);
console.log(`lost: ${m.lost}` + (m.lost ? ` (e.g. seq ${m.lost_examples_seq.join(", ")})` : ""));
process.exit(m.lost === 0 && m.acknowledged > 0 && firstOkAfter ? 0 : 1);
' "$OUT/stream.json" "$OUT/mailbox.json" "$OUT/seconds.csv" "$OUT/probes.csv" "$BEFORE" "$OUTAGE" "$PUSH_TIMEOUT_MS" || rc=1
log "hydra recovered without a restart: pid $FIRST_PID still running"
exit "$rc"
