#!/usr/bin/env bash
# Benchmarks hydra against the node `ws` peer (tests/bench/node_peer.js) and the floor peer (`hydra-bench floor`:
# the least a server must do for these scenarios) on this machine, in one run:
#   tests/bench/run.sh                 # full run (~35 minutes on 2 cores)
#   BENCH_QUICK=1 tests/bench/run.sh   # scaled down (~4 minutes)
# For each scenario it starts a server, runs hydra-bench against it, stops it, then the same with the next server.
# The server is pinned to BENCH_SERVER_CPU (0) and the load generator to BENCH_CLIENT_CPU (1) with taskset; hydra
# runs with ws.io_threads=1 so every server has one core, and with ws.max_connections_per_ip and ws.rate_limit off and
# ws.client_uuid=request_id (the load generator opens thousands of connections from one address, floods on purpose and
# names its clients). Prints a table and writes build/bench/results.json (raw per-run JSON and server logs in
# build/bench/results/).
#
# With REPEAT > 1 (BENCH_REPEAT, default 3, 1 with BENCH_QUICK) the table shows the median of the runs.
# echo_tls and broadcast_tls are echo and broadcast over wss://: hydra with ws.tls.cert_file/key_file, the node peer on
# https.createServer, both with the same self-signed P-256 certificate made at run time (build/bench/tls/); the
# HTTP posts stay plain; the floor peer is plain TCP only and sits these out. Echo and broadcast report the server's
# CPU time per message (from /proc/PID/stat over the measurement, divided by the messages delivered), and with both
# variants run the table adds each server's TLS cost: its CPU per message over TLS vs plaintext, in percent extra.
# The scenarios send and send_cluster (the push path: POST /msg/send -> queue -> MQC -> WebSocket, against nginx +
# Nchan) are run by tests/bench/send.sh after the others; see its header for their knobs.
#
# Knobs (env): BENCH_SCENARIOS="idle churn echo echo_tls broadcast broadcast_tls broadcast_closed slow send
# send_cluster", BENCH_CHURN_CYCLES,
# BENCH_SERVERS="hydra node floor" (also hydra_nometrics: hydra with admin.metrics=false, for what counting
# costs; and hydra_before: the hydra binary BENCH_HYDRA_BEFORE, e.g. a Release build of an earlier commit, run
# exactly like hydra — a change measured against what it changed, in the same run), BENCH_IDLE_CONNS, BENCH_ECHO_CONNS, BENCH_ECHO_DURATION, BENCH_ECHO_WINDOW,
# BENCH_BCAST_CONNS, BENCH_BCAST_COUNT, BENCH_BCAST_INTERVAL_MS, BENCH_SLOW_CONNS, BENCH_SLOW_FILL_MB,
# BENCH_SERVER_CPU, BENCH_CLIENT_CPU, BENCH_SKIP_BUILD=1, BENCH_BUILD_DIR,
# BENCH_QUIET_WAIT (seconds to wait for other processes to go idle before each run; default 300).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build/bench}
OUT=$BUILD/results
RUN_DIR=$BUILD/run  # hydra's working directory (its dev queue database lands here, not in the repo)
NODE_DIR=$BUILD/node

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    d_idle=5000 d_echo=1000 d_echo_s=5 d_bcast=2000 d_count=100 d_slow=2000 d_repeat=1 d_churn=20000
else
    d_idle=19000 d_echo=5000 d_echo_s=20 d_bcast=10000 d_count=200 d_slow=10000 d_repeat=3 d_churn=100000
fi
CHURN_CYCLES=${BENCH_CHURN_CYCLES:-$d_churn}
REPEAT=${BENCH_REPEAT:-$d_repeat}
IDLE_CONNS=${BENCH_IDLE_CONNS:-$d_idle}
ECHO_CONNS=${BENCH_ECHO_CONNS:-$d_echo}
ECHO_DURATION=${BENCH_ECHO_DURATION:-$d_echo_s}
ECHO_WINDOW=${BENCH_ECHO_WINDOW:-1}
BCAST_CONNS=${BENCH_BCAST_CONNS:-$d_bcast}
BCAST_COUNT=${BENCH_BCAST_COUNT:-$d_count}
BCAST_INTERVAL_MS=${BENCH_BCAST_INTERVAL_MS:-20}
SLOW_CONNS=${BENCH_SLOW_CONNS:-$d_slow}
SLOW_FILL_MB=${BENCH_SLOW_FILL_MB:-8}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
SCENARIOS=${BENCH_SCENARIOS:-idle churn echo echo_tls broadcast broadcast_tls broadcast_closed slow send send_cluster}
# hydra, the node `ws` peer, and the floor peer (`hydra-bench floor`: the least a server must do, one send per
# delivery and nothing else; what any server could reach on this machine).
SERVERS=${BENCH_SERVERS:-hydra node floor}
# send and send_cluster go to send.sh; the rest run here against the node peer.
SEND_SCENARIOS=""
WS_SCENARIOS=""
for s in $SCENARIOS; do
    case $s in
        send | send_cluster) SEND_SCENARIOS+=" $s" ;;
        *) WS_SCENARIOS+=" $s" ;;
    esac
done
SCENARIOS=${WS_SCENARIOS# }

LOG_TAG=run.sh
# shellcheck source=tests/bench/lib.sh
source "$ROOT/tests/bench/lib.sh"

# ---- processes we start: stopped on exit, by PID only ----
SERVER_PID=""
BENCH_PID=""
cleanup() {
    stop_pid "$BENCH_PID"
    stop_pid "$SERVER_PID"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build, node deps, limits ----
build_bench "$ROOT" "$BUILD"  # sets HYDRA and BENCH

if [[ -n $SCENARIOS && ! -f $NODE_DIR/node_modules/ws/package.json ]]; then
    log "installing ws into $NODE_DIR"
    mkdir -p "$NODE_DIR"
    npm install --no-save --no-audit --no-fund --silent --prefix "$NODE_DIR" ws >/dev/null
fi
command -v taskset >/dev/null || { log "taskset not found (apt-get install util-linux)"; exit 1; }

# ---- a throwaway certificate for the *_tls scenarios (hydra-bench does not verify it) ----
TLS_DIR=$BUILD/tls
if [[ " $SCENARIOS " == *_tls\ * ]]; then
    command -v openssl >/dev/null || { log "openssl not found (apt-get install openssl)"; exit 1; }
    mkdir -p "$TLS_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" 2>/dev/null
fi

ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT" "$RUN_DIR"
rm -f "$OUT"/*.json "$OUT"/*.log

# ---- servers ----
WS_ADDR=""
API_ADDR=""
ADMIN_ADDR=""
# start_server hydra|node|floor LOG TLS(0|1): with TLS the WebSocket listener speaks wss:// with $TLS_DIR's
# certificate (hydra: the per-address API limits are off, all load comes from 127.0.0.1)
start_server() {
    local kind=$1 logf=$2 tls=$3
    local -a tls_args=() metrics_args=()
    local binary=$HYDRA
    if [[ $kind == hydra_nometrics ]]; then
        kind=hydra
        metrics_args=(--set admin.metrics=false)
    elif [[ $kind == hydra_before ]]; then
        kind=hydra
        binary=${BENCH_HYDRA_BEFORE:?BENCH_HYDRA_BEFORE: the hydra binary to compare with}
    fi
    if [[ $tls == 1 && $kind == hydra ]]; then
        tls_args=(--set "ws.tls.cert_file=$TLS_DIR/cert.pem" --set "ws.tls.key_file=$TLS_DIR/key.pem")
    elif [[ $tls == 1 && $kind == node ]]; then
        tls_args=(--tls-cert "$TLS_DIR/cert.pem" --tls-key "$TLS_DIR/key.pem")
    fi
    if [[ $kind == hydra ]]; then
        (cd "$RUN_DIR" && exec taskset -c "$SERVER_CPU" "$binary" run --config "$ROOT/config/dev.json" \
            "${HYDRA_BENCH_SETTINGS[@]}" "${tls_args[@]}" "${metrics_args[@]}") >"$logf" 2>&1 &
    elif [[ $kind == floor ]]; then
        taskset -c "$SERVER_CPU" "$BENCH" floor --ws 127.0.0.1:0 --api 127.0.0.1:0 >"$logf" 2>&1 &
    else
        (export NODE_PATH=$NODE_DIR/node_modules &&
            exec taskset -c "$SERVER_CPU" node "$ROOT/tests/bench/node_peer.js" --ws 127.0.0.1:0 --api 127.0.0.1:0 \
                "${tls_args[@]}") \
            >"$logf" 2>&1 &
    fi
    SERVER_PID=$!
    # hydra serves /v1/exchange/broadcast on its admin listener; the peers on their one HTTP address.
    wait_for_addresses "$SERVER_PID" "$logf" "$kind" "$([[ $kind == hydra ]] && echo admin)"
    WS_ADDR=$FOUND_WS API_ADDR=$FOUND_API ADMIN_ADDR=${FOUND_ADMIN:-$FOUND_API}
    sleep 0.5  # let it settle before the RSS baseline
}

# run_bench NAME SCENARIO ARGS... : hydra-bench on the client CPU against the running server
run_bench() {
    local name=$1 scenario=$2
    shift 2
    taskset -c "$CLIENT_CPU" "$BENCH" "$scenario" --ws "$WS_ADDR" --api "$API_ADDR" --admin "$ADMIN_ADDR" --server-pid "$SERVER_PID" \
        --label "$name" --out "$OUT/$name.json" "$@" >/dev/null 2>"$OUT/$name.bench.log" &
    BENCH_PID=$!
    local rc=0
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    if [[ $rc != 0 ]]; then
        log "hydra-bench $scenario failed (exit $rc):"
        tail -20 "$OUT/$name.bench.log" >&2
    fi
}

scenario_args() {
    case $1 in
        idle) echo "idle --connections $IDLE_CONNS --settle 2" ;;
        churn) echo "churn --cycles $CHURN_CYCLES --concurrency 16" ;;
        echo) echo "echo --connections $ECHO_CONNS --duration $ECHO_DURATION --warmup 2 --window $ECHO_WINDOW" ;;
        echo_tls) echo "$(scenario_args echo) --tls 1" ;;
        broadcast)
            echo "broadcast --connections $BCAST_CONNS --broadcasts $BCAST_COUNT --mode paced" \
                "--interval-ms $BCAST_INTERVAL_MS --payload-bytes 64"
            ;;
        broadcast_tls) echo "$(scenario_args broadcast) --tls 1" ;;
        broadcast_closed)
            echo "broadcast --connections $BCAST_CONNS --broadcasts $BCAST_COUNT --mode closed --payload-bytes 64"
            ;;
        slow)
            echo "slow --connections $SLOW_CONNS --broadcasts $BCAST_COUNT --mode closed --payload-bytes 64" \
                "--slow-rcvbuf 1024 --slow-fill-mb $SLOW_FILL_MB"
            ;;
        *) log "unknown scenario $1" && exit 2 ;;
    esac
}

# Each scenario REPEAT times, the servers interleaved so that drifts of the machine hit them alike.
for scenario in $SCENARIOS; do
    read -r -a args <<<"$(scenario_args "$scenario")"
    for rep in $(seq 1 "$REPEAT"); do
        for server in $SERVERS; do
            # The floor peer only echoes and broadcasts; it has no send queue to measure in `slow`, and no TLS.
            [[ $server == floor && ($scenario == slow || $scenario == *_tls) ]] && continue
            log "$scenario: $server (run $rep/$REPEAT)"
            wait_quiet
            start_server "$server" "$OUT/$scenario.$server.$rep.server.log" "$([[ $scenario == *_tls ]] && echo 1 || echo 0)"
            run_bench "$scenario.$server.$rep" "${args[@]}"
            stop_pid "$SERVER_PID"
            SERVER_PID=""
        done
    done
done

# ---- table and results.json ----
run_send() {
    [[ -n $SEND_SCENARIOS ]] || return 0
    BENCH_SKIP_BUILD=1 BENCH_BUILD_DIR=$BUILD BENCH_SEND_SCENARIOS=${SEND_SCENARIOS# } "$ROOT/tests/bench/send.sh"
}
if [[ -z $SCENARIOS ]]; then
    run_send
    exit 0
fi
# What was measured: the commit, and whether tracked files differed from it.
REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then REVISION+="+local changes"; fi
export BENCH_REVISION=$REVISION BENCH_PARAMS="idle=$IDLE_CONNS echo=${ECHO_CONNS}x${ECHO_DURATION}s/w$ECHO_WINDOW \
broadcast=${BCAST_CONNS}x$BCAST_COUNT@${BCAST_INTERVAL_MS}ms slow=${SLOW_CONNS} fill=${SLOW_FILL_MB}MB churn=$CHURN_CYCLES"
node - "$OUT" "$BUILD/results.json" "$SCENARIOS" "$REPEAT" "$SERVER_CPU" "$CLIENT_CPU" "$NODE_DIR" "$SERVERS" <<'EOF'
const fs = require('fs');
const os = require('os');
const [outDir, resultsFile, scenarioList, repeatArg, serverCpu, clientCpu, nodeDir, serverList] = process.argv.slice(2);
const scenarios = scenarioList.split(/\s+/).filter(Boolean);
const repeat = Number(repeatArg);
const servers = serverList.split(/\s+/).filter(Boolean);
const load = (name) => {
  try { return JSON.parse(fs.readFileSync(`${outDir}/${name}.json`, 'utf8')); } catch { return null; }
};
const get = (obj, path) => path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
const runs = Object.fromEntries(servers.map((srv) => [srv, {}]));
for (const s of scenarios) for (const srv of servers) {
  runs[srv][s] = [];
  if (srv === 'floor' && (s === 'slow' || s.endsWith('_tls'))) continue;  // not run (see above)
  for (let r = 1; r <= repeat; r++) runs[srv][s].push(load(`${s}.${srv}.${r}`));
}
// [metric, json path, unit, better]
const metrics = {
  idle: [
    ['connections held', 'held', '', 'higher'],
    ['connect rate', 'connect.rate_per_s', 'conn/s', 'higher'],
    ['server RSS per idle conn (RssAnon)', 'server.bytes_per_conn_rss_anon', 'B', 'lower'],
    ['server RSS per idle conn (VmRSS)', 'server.bytes_per_conn_vm_rss', 'B', 'lower'],
  ],
  churn: [
    ['connect/disconnect cycles/s', 'cycles_per_s', '/s', 'higher'],
    ['failed cycles', 'failed', '', 'lower'],
    ['server RssAnon growth after the first tenth', 'server.rss_anon_growth_kb_after_first_tenth', 'KB', 'lower'],
    ['  per cycle', 'server.rss_anon_bytes_per_cycle_after_first_tenth', 'B', 'lower'],
    ['server open files before', 'server.open_files_before', '', ''],
    ['server open files 2 s after the last cycle', 'server.open_files_end', '', 'lower'],
  ],
  echo: [
    ['round trips/s', 'msgs_per_s', 'msg/s', 'higher'],
    ['round trip p50', 'latency_ms.p50', 'ms', 'lower'],
    ['round trip p99', 'latency_ms.p99', 'ms', 'lower'],
    ['server CPU', 'cpu.server_cores', 'cores', ''],
    ['server CPU per round trip', 'server_cpu_us_per_msg', 'µs', 'lower'],
  ],
  broadcast: [
    ['deliveries/s', 'deliveries_per_s', 'msg/s', 'higher'],
    ['time to post all broadcasts', 'posting_s', 's', 'lower'],
    ['delivery latency p50, from post', 'delivery_latency_ms.p50', 'ms', 'lower'],
    ['delivery latency p99, from post', 'delivery_latency_ms.p99', 'ms', 'lower'],
    ['delivery latency p50, from schedule', 'delivery_latency_from_schedule_ms.p50', 'ms', 'lower'],
    ['delivery latency p99, from schedule', 'delivery_latency_from_schedule_ms.p99', 'ms', 'lower'],
    ['completion latency p99, from schedule', 'completion_latency_from_schedule_ms.p99', 'ms', 'lower'],
    ['server CPU per delivery', 'server_cpu_us_per_msg', 'µs', 'lower'],
    ['missing deliveries', 'missing', '', 'lower'],
  ],
  broadcast_closed: [
    ['deliveries/s', 'deliveries_per_s', 'msg/s', 'higher'],
    ['delivery latency p50', 'delivery_latency_ms.p50', 'ms', 'lower'],
    ['delivery latency p99', 'delivery_latency_ms.p99', 'ms', 'lower'],
    ['completion latency p50', 'completion_latency_ms.p50', 'ms', 'lower'],
    ['completion latency p99', 'completion_latency_ms.p99', 'ms', 'lower'],
    ['server CPU', 'cpu.server_cores', 'cores', ''],
    ['missing deliveries', 'missing', '', 'lower'],
  ],
  slow: [
    ['delivery p99, before the slow client', 'baseline.delivery_latency_ms.p99', 'ms', 'lower'],
    ['delivery p99, with the slow client', 'with_slow_client.delivery_latency_ms.p99', 'ms', 'lower'],
    ['delivery p99, after it left', 'baseline_after.delivery_latency_ms.p99', 'ms', 'lower'],
    ['delivery p99 with / mean(before, after)', 'delivery_p99_ratio', '', 'lower'],
    ['  noise: |before - after| / mean', 'baseline_delivery_p99_spread', '', ''],
    ['completion p99 with / mean(before, after)', 'completion_p99_ratio', '', 'lower'],
    ['median broadcast\'s completion, with / mean(before, after)', 'completion_p50_ratio', '', 'lower'],
    ['  noise: |before - after| / mean', 'baseline_completion_p50_spread', '', ''],
    ['server RssAnon growth (peak)', 'server.growth_peak_kb.rss_anon_kb', 'KB', 'lower'],
    ['slow client disconnected', 'slow_client.disconnected', '', ''],
    ['missing deliveries (others)', 'with_slow_client.missing', '', 'lower'],
  ],
};
// Over wss://: the same figures.
metrics.echo_tls = metrics.echo;
metrics.broadcast_tls = metrics.broadcast;
// Median of the numbers; for booleans "yes"/"no" when all runs agree, else "k/n yes".
const combine = (values) => {
  const vals = values.filter((v) => v !== undefined && v !== null);
  if (vals.length === 0) return null;
  if (typeof vals[0] === 'boolean') {
    const yes = vals.filter(Boolean).length;
    return yes === vals.length ? true : yes === 0 ? false : `${yes}/${vals.length} yes`;
  }
  const nums = vals.filter((v) => typeof v === 'number').sort((a, b) => a - b);
  if (nums.length === 0) return vals[0];
  const m = nums.length >> 1;
  return nums.length % 2 ? nums[m] : (nums[m - 1] + nums[m]) / 2;
};
const fmt = (v) => {
  if (v === undefined || v === null) return 'n/a';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v !== 'number') return String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  return String(Math.round(v * 1000) / 1000);
};
// Columns: each server's median, then hydra's ratio to each peer.
const names = { hydra: 'hydra', hydra_nometrics: 'hydra, metrics off', hydra_before: 'hydra before', node: 'node ws',
  floor: 'floor' };
const peers = servers.filter((srv) => srv !== 'hydra');
const ratioOf = (h, p) => (typeof h === 'number' && typeof p === 'number' && p !== 0 ? Math.round((h / p) * 100) / 100 : null);
const table = [];
for (const s of scenarios) {
  for (const [metric, path, unit, better] of metrics[s] || []) {
    const row = { scenario: s, metric, unit, better };
    for (const srv of servers) {
      row[`${srv}_runs`] = runs[srv][s].map((r) => get(r, path));
      row[srv] = combine(row[`${srv}_runs`]);
    }
    for (const p of peers) row[`hydra/${p}`] = ratioOf(row.hydra, row[p]);
    table.push(row);
  }
  // What TLS costs each server: its median CPU per message over TLS vs over plaintext (needs both scenarios).
  const plain = s.endsWith('_tls') ? s.slice(0, -4) : null;
  if (plain && scenarios.includes(plain)) {
    const per = s === 'echo_tls' ? 'round trip' : 'delivery';
    const row = { scenario: s, metric: `server CPU per ${per}, TLS vs plaintext`, unit: '% extra', better: 'lower' };
    for (const srv of servers) {
      const t = combine(runs[srv][s].map((r) => get(r, 'server_cpu_us_per_msg')));
      const p = combine(runs[srv][plain].map((r) => get(r, 'server_cpu_us_per_msg')));
      row[`${srv}_runs`] = [];
      row[srv] = typeof t === 'number' && typeof p === 'number' && p > 0 ? Math.round((t / p - 1) * 1000) / 10 : null;
    }
    for (const p of peers) row[`hydra/${p}`] = null;  // a ratio of percentages says nothing
    table.push(row);
  }
}
const cols = ['scenario', 'metric', ...servers.map((srv) => names[srv] || srv), ...peers.map((p) => `hydra/${names[p] || p}`), 'better'];
const numeric = new Set(servers.map((_, i) => i + 2));
const rows = table.map((r) => [r.scenario, r.metric + (r.unit ? ` (${r.unit})` : ''), ...servers.map((srv) => fmt(r[srv])),
  ...peers.map((p) => (r[`hydra/${p}`] === null ? '' : String(r[`hydra/${p}`]))), r.better]);
const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((r) => r[i].length)));
const line = (r) => r.map((c, i) => (numeric.has(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd();
// The TLS version and cipher the *_tls runs negotiated (hydra-bench offers OpenSSL's defaults).
const tlsUsed = [...new Set(servers.flatMap((srv) => scenarios.filter((s) => s.endsWith('_tls'))
  .flatMap((s) => runs[srv][s].map((r) => get(r, 'connect.tls')).filter(Boolean).map((t) => `${names[srv] || srv} ${t}`))))];
console.log(`hydra ${process.env.BENCH_REVISION}; ${process.env.BENCH_PARAMS}; ` +
  (repeat > 1 ? `median of ${repeat} runs each` : 'one run each') +
  (tlsUsed.length ? `; wss: ${tlsUsed.join(', ')}, self-signed P-256 certificate` : ''));
console.log(line(cols));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const r of rows) console.log(line(r));
const warnings = [];
for (const s of scenarios) for (const srv of servers) runs[srv][s].forEach((r, i) => {
  const tag = `${s}/${srv} run ${i + 1}`;
  if (!r) return warnings.push(`${tag}: no result (see ${outDir}/${s}.${srv}.${i + 1}.bench.log)`);
  if (r.error) warnings.push(`${tag}: error: ${r.error}`);
  const cpus = ['cpu', 'connect.cpu', 'baseline.cpu', 'with_slow_client.cpu', 'baseline_after.cpu'].map((p) => get(r, p));
  const other = Math.max(0, ...cpus.map((c) => (c && c.other_cores) || 0));
  if (other > 0.1) warnings.push(`${tag}: other processes used ${other} cores during the measurement`);
  const steal = Math.max(0, ...cpus.map((c) => (c && c.steal_cores) || 0));
  if (steal > 0.1) warnings.push(`${tag}: the hypervisor took ${steal} cores from this VM (steal) during the measurement`);
});
if (warnings.length) console.log(`\nwarnings:\n  ${warnings.join('\n  ')}`);
let wsVersion = null;
try { wsVersion = JSON.parse(fs.readFileSync(`${nodeDir}/node_modules/ws/package.json`, 'utf8')).version; } catch {}
const results = {
  date: new Date().toISOString(),
  machine: { cpus: os.cpus().length, cpu_model: os.cpus()[0] && os.cpus()[0].model, kernel: os.release(),
             memory_mb: Math.round(os.totalmem() / 1048576) },
  pinning: { server_cpu: Number(serverCpu), client_cpu: Number(clientCpu) },
  versions: { hydra: process.env.BENCH_REVISION, node: process.version, ws: wsVersion },
  parameters: process.env.BENCH_PARAMS,
  tls: tlsUsed,
  repeat,
  table,
  warnings,
  runs,
};
fs.writeFileSync(resultsFile, JSON.stringify(results, null, 2) + '\n');
console.log(`\nresults: ${resultsFile}`);
EOF
run_send
