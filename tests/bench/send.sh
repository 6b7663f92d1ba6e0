#!/usr/bin/env bash
# The end-to-end push benchmark, hydra against nginx + Nchan in the same run (run.sh calls it for the scenarios
# send and send_cluster; it also runs on its own):
#   tests/bench/send.sh                  # 5,000 clients: closed loop and 50k msg/s, then a rate search
#   BENCH_QUICK=1 tests/bench/send.sh    # 1,000 clients, 5k msg/s, short, no search
#
# hydra:  POST /msg/send {"uuid":"c<k>","msg":"ts=.. seq=.."} -> queue mall:wsserver:msg -> MQC /msg/push ->
#         notify -> the client whose upgrade carried X-Request-Id: c<k> (hydra runs with ws.client_uuid=request_id)
# Nchan:  POST /pub?id=c<k> "ts=.. seq=.."  -> the WebSocket subscribed to /sub/c<k>   (tests/bench/nchan.conf.in)
# floor:  hydra-bench floor --queue: hydra's request, durable in SQLite before its 200, one thread doing nothing else
#         (cmd/hydra-bench/floor_server.cpp): what any durable server can reach on this machine
# hydra-bench send (cmd/hydra-bench/send_bench.cpp) holds the clients and posts message k to client k % N from
# BENCH_SEND_PUBLISHERS keep-alive connections, paced at each rate of BENCH_SEND_RATES (0 = closed loop: as fast
# as the connections allow); latencies are measured from when each message was due.
#
# Scenarios (BENCH_SEND_SCENARIOS, default "send send_cluster"):
#   send          hydra with the embedded SQLite queue (a fresh file per run), the floor peer and nginx + Nchan
#   send_cluster  two hydra hosts with queue.backend=kafka on a mock cluster hosted by hydra-bench kafka-mock:
#                 clients on host A, posts to host B
# Every server process (hydra, both hosts and the mock cluster, nginx) is pinned to BENCH_SERVER_CPU (0),
# hydra-bench to BENCH_CLIENT_CPU (1); hydra runs with ws.io_threads=1, nginx with one worker.
#
# Knobs (env): BENCH_SEND_CLIENTS (5000), BENCH_SEND_RATES ("0 50000"), BENCH_SEND_DURATION (10 s measured, after
# BENCH_SEND_WARMUP 2 s), BENCH_SEND_PUBLISHERS (128: a durable server answers a post after its commit, 1-2 ms,
# so 32 connections with one request each would cap it near 20k msg/s whatever its CPU), BENCH_SEND_CLUSTER_PUBLISHERS
# (512 for send_cluster: a host answers a post once the broker acknowledged it, after the producer's 5 ms linger:
# with 128 connections a third of the posts at 15k msg/s waited for a free one, with 256 at 20k msg/s a fifth
# to a half did), BENCH_SEND_PIPELINE (1),
# BENCH_SEND_SEARCH (rates tried in order, per server, until one misses the target twice in a row; "" = no search), BENCH_SEND_SEARCH_SERVERS
# ("hydra floor nchan cluster"), BENCH_SEND_P99_MS (20: the target), BENCH_SEND_CLUSTER_P99_MS (50: the two hosts'
# target), BENCH_SEND_HYDRA_SET (more hydra settings,
# "key=value key=value", e.g. "queue.kafka.properties.fetch.wait.max.ms=5"), BENCH_REPEAT (runs per rate, default 1), and run.sh's
# BENCH_SERVER_CPU, BENCH_CLIENT_CPU, BENCH_SKIP_BUILD=1, BENCH_BUILD_DIR, BENCH_QUIET_WAIT; BENCH_HYDRA_BEFORE (a
# second hydra binary, e.g. a Release build of an earlier commit: the send scenario then runs it too, as
# "hydra_before", interleaved with the others, and the table adds hydra/before).
# A run meets the target when p99 <= BENCH_SEND_P99_MS (the cluster: BENCH_SEND_CLUSTER_P99_MS), deliveries/s >= 97 %
# of the rate, nothing is missing and no post failed. Per-run JSON and server logs land in build/bench/results/send.*, the table and every run in
# build/bench/send-results.json. Needs nginx-light and libnginx-mod-nchan: deploy/install-deps.sh --bench.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BENCH_BUILD_DIR:-$ROOT/build/bench}
OUT=$BUILD/results
RUN_DIR=$BUILD/run-send  # the servers' working directory: queue and user databases, nginx's files

if [[ ${BENCH_QUICK:-0} == 1 ]]; then
    d_clients=1000 d_rates="0 5000" d_duration=3 d_warmup=1 d_search=""
else
    d_clients=5000 d_rates="0 50000" d_duration=10 d_warmup=2
    d_search="2000 4000 6000 8000 10000 15000 20000 30000 40000 45000 50000 60000 80000"
fi
CLIENTS=${BENCH_SEND_CLIENTS:-$d_clients}
RATES=${BENCH_SEND_RATES:-$d_rates}
DURATION=${BENCH_SEND_DURATION:-$d_duration}
WARMUP=${BENCH_SEND_WARMUP:-$d_warmup}
PUBLISHERS=${BENCH_SEND_PUBLISHERS:-128}
CLUSTER_PUBLISHERS=${BENCH_SEND_CLUSTER_PUBLISHERS:-512}
PIPELINE=${BENCH_SEND_PIPELINE:-1}
SEARCH=${BENCH_SEND_SEARCH-$d_search}
SEARCH_SERVERS=${BENCH_SEND_SEARCH_SERVERS:-hydra floor nchan cluster}
P99_MS=${BENCH_SEND_P99_MS:-20}
CLUSTER_P99_MS=${BENCH_SEND_CLUSTER_P99_MS:-50}
REPEAT=${BENCH_REPEAT:-1}
SCENARIOS=${BENCH_SEND_SCENARIOS:-send send_cluster}
SERVER_CPU=${BENCH_SERVER_CPU:-0}
CLIENT_CPU=${BENCH_CLIENT_CPU:-1}
HYDRA_SET=()
for kv in ${BENCH_SEND_HYDRA_SET:-}; do HYDRA_SET+=(--set "$kv"); done

LOG_TAG=send.sh
# shellcheck source=tests/bench/lib.sh
source "$ROOT/tests/bench/lib.sh"

# ---- processes we start: stopped on exit, by PID only ----
PIDS=()      # servers of the current run, stopped in reverse order (hydra hosts before the broker)
BENCH_PID=""
stop_servers() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    PIDS=()
}
cleanup() {
    stop_pid "$BENCH_PID"
    stop_servers
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- build, packages, limits ----
build_bench "$ROOT" "$BUILD"  # sets HYDRA and BENCH
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
if ! command -v nginx >/dev/null || [[ ! -f $NCHAN_MODULE ]]; then
    log "installing nginx-light, libnginx-mod-nchan (deploy/install-deps.sh --bench)"
    "$ROOT/deploy/install-deps.sh" --bench
fi
command -v taskset >/dev/null || { log "taskset not found (apt-get install util-linux)"; exit 1; }
command -v node >/dev/null || { log "node not found (deploy/install-deps.sh --test)"; exit 1; }

ulimit -n "$(ulimit -Hn)"
mkdir -p "$OUT" "$RUN_DIR"
rm -f "$OUT"/send.*

# ---- servers ----
# publishers_of SERVER / p99_of SERVER: the publisher connections and the p99 target (ms) of that server's runs.
publishers_of() { if [[ $1 == cluster ]]; then echo "$CLUSTER_PUBLISHERS"; else echo "$PUBLISHERS"; fi; }
p99_of() { if [[ $1 == cluster ]]; then echo "$CLUSTER_P99_MS"; else echo "$P99_MS"; fi; }
WS_ADDR="" API_ADDR="" SERVER_PID="" EXTRA_PIDS=""

# start_hydra NAME LOG [--set key=value ...]: one hydra host (dev profile) on free ports; sets HY_PID, HY_WS, HY_API.
# The per-address API limits are off: every publisher connects from 127.0.0.1.
start_hydra() {
    local name=$1 logf=$2
    shift 2
    local binary=$HYDRA server=hydra
    [[ $name == hydra_before ]] && binary=$BENCH_HYDRA_BEFORE
    [[ $name == host-* ]] && server=cluster
    (cd "$RUN_DIR" && HYDRA_CONFIG_DIR=$ROOT/config exec taskset -c "$SERVER_CPU" "$binary" run --env dev \
        "${HYDRA_BENCH_SETTINGS[@]}" --set api.threads=$(($(publishers_of "$server") + 8)) \
        --set services.push.database="$RUN_DIR/$name-push.db" "$@" \
        ${HYDRA_SET[@]+"${HYDRA_SET[@]}"}) \
        >"$logf" 2>&1 &
    HY_PID=$!
    PIDS+=("$HY_PID")
    wait_for_addresses "$HY_PID" "$logf" "hydra $name" admin
    HY_WS=$FOUND_WS HY_API=$FOUND_API HY_ADMIN=$FOUND_ADMIN
}

# partitions_held ADMIN: how many partitions of the send route's queue that host holds
# (hydra_queue_partitions_assigned; empty when it does not say).
partitions_held() {
    curl -s --max-time 2 "http://$1/metrics" |
        sed -n 's/^hydra_queue_partitions_assigned{[^}]*queue="mall:wsserver:msg"[^}]*} \([0-9]*\).*/\1/p' |
        head -1 || true
}

# A free TCP port on 127.0.0.1 (for nginx, which cannot be told to pick one).
free_port() {
    node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
        console.log(s.address().port);
        s.close();
    });'
}

# start_server hydra|floor|nchan|cluster TAG: sets WS_ADDR, API_ADDR, SERVER_PID (the process holding the clients) and
# EXTRA_PIDS (other server processes, NAME=PID,...).
start_server() {
    local kind=$1 tag=$2
    EXTRA_PIDS=""
    case $kind in
        hydra | hydra_before)
            rm -f "$RUN_DIR"/send-queue.db* "$RUN_DIR"/"$kind"-push.db*
            start_hydra "$kind" "$OUT/$tag.server.log" --set queue.backend=sqlite \
                --set queue.sqlite.path="$RUN_DIR/send-queue.db"
            WS_ADDR=$HY_WS API_ADDR=$HY_API SERVER_PID=$HY_PID
            ;;
        floor)
            rm -f "$RUN_DIR"/floor-queue.db*
            local sync=normal  # as hydra's queue (BENCH_SEND_HYDRA_SET may make it full)
            [[ " ${HYDRA_SET[*]-} " == *"queue.sqlite.synchronous=full"* ]] && sync=full
            taskset -c "$SERVER_CPU" "$BENCH" floor --ws 127.0.0.1:0 --api 127.0.0.1:0 \
                --queue "$RUN_DIR/floor-queue.db" --sync "$sync" >"$OUT/$tag.server.log" 2>&1 &
            SERVER_PID=$!
            PIDS+=("$SERVER_PID")
            wait_for_addresses "$SERVER_PID" "$OUT/$tag.server.log" "floor peer"
            WS_ADDR=$FOUND_WS API_ADDR=$FOUND_API
            ;;
        cluster)
            rm -f "$RUN_DIR"/host-a-push.db* "$RUN_DIR"/host-b-push.db*
            local mlog="$OUT/$tag.mock.log" fifo="$RUN_DIR/mock.in" bootstrap=""
            # A one-broker librdkafka mock cluster (hydra-bench kafka-mock, as tests/faults/kafka_outage.sh uses):
            # it prints its address and nothing else. (kcat -d mock hosts the same cluster but writes a debug line
            # per request, which cost the shared core a third of the mock's time.) Its stdin is a FIFO it holds
            # open itself: no EOF, so it runs until stopped.
            rm -f "$fifo" && mkfifo "$fifo"
            taskset -c "$SERVER_CPU" "$BENCH" kafka-mock <>"$fifo" >"$mlog" 2>&1 &
            local mock_pid=$!
            PIDS+=("$mock_pid")
            for _ in $(seq 1 200); do
                bootstrap=$(sed -n 's/^bootstrap //p' "$mlog" 2>/dev/null | head -1)
                [[ -n $bootstrap ]] && break
                sleep 0.05
            done
            [[ -n $bootstrap ]] || { log "the mock cluster did not start:"; cat "$mlog" >&2; exit 1; }
            # The mock has no CreateTopics: a topic a client names first gets the mock's 4 partitions, where
            # hydra's Admin API creates the queue's topics with queue.kafka.topics.partitions (3) and the
            # cluster's with cluster.topics.partitions (1). kafka-mock's "topic" command creates them as hydra
            # would, so that the run measures hydra's layout (each partition's log is a list the mock walks
            # from its start for every fetch: a fourth partition of the queue cost the mock ~0.04 cores at
            # 15,000 msg/s).
            local conf parts node_a=bench-a node_b=bench-b prefix=mall.wsserver
            conf=$(HYDRA_CONFIG_DIR=$ROOT/config "$HYDRA" conf show --env dev "${HYDRA_BENCH_SETTINGS[@]}" \
                ${HYDRA_SET[@]+"${HYDRA_SET[@]}"}) || { log "hydra conf show failed"; exit 1; }
            parts=$(node -e 'const c = JSON.parse(process.argv[1]);
                console.log(c.queue.kafka.topics.partitions, c.cluster.topics.partitions)' "$conf" 2>/dev/null) || parts=""
            [[ $parts =~ ^[1-9][0-9]*\ [1-9][0-9]*$ ]] ||
                { log "cannot read the topics' partitions from hydra conf show (got '$parts')"; exit 1; }
            local queue_parts=${parts% *} cluster_parts=${parts#* }
            local topics=("$prefix.msg $queue_parts" "$prefix.msg.dlq $queue_parts" "$prefix.presence $cluster_parts"
                "$prefix.bus $cluster_parts" "$prefix.node.$node_a $cluster_parts" "$prefix.node.$node_b $cluster_parts")
            local topic
            for topic in "${topics[@]}"; do
                # A FIFO with no reader would block the write: the mock must still be there.
                kill -0 "$mock_pid" 2>/dev/null || { log "the mock cluster exited:"; cat "$mlog" >&2; exit 1; }
                echo "topic $topic" >"$fifo"
            done
            for _ in $(seq 1 100); do
                [[ $(grep -c '^topic ' "$mlog") -ge ${#topics[@]} ]] && break
                sleep 0.05
            done
            [[ $(grep -c '^topic ' "$mlog") -ge ${#topics[@]} ]] ||
                { log "the mock did not create the topics:"; cat "$mlog" >&2; exit 1; }
            # fetch.wait.max.ms=5: the mock broker holds a fetch that finds no data for the whole wait (500 ms by
            # default) where a real broker answers as soon as data arrives (see the queue benchmarks).
            local kafka=(--set queue.backend=kafka --set queue.kafka.brokers="$bootstrap"
                --set queue.kafka.properties.session.timeout.ms=6000
                --set queue.kafka.properties.fetch.wait.max.ms=5)
            start_hydra host-a "$OUT/$tag.server.log" "${kafka[@]}" --set cluster.node_id="$node_a"
            WS_ADDR=$HY_WS SERVER_PID=$HY_PID
            CLUSTER_ADMIN_A=$HY_ADMIN
            start_hydra host-b "$OUT/$tag.host-b.log" "${kafka[@]}" --set cluster.node_id="$node_b"
            API_ADDR=$HY_API CLUSTER_ADMIN_B=$HY_ADMIN
            # Both hosts consume the route's queue in one group. The mock cluster waits 3 s for a group's first
            # members and gives a rebalance up to session.timeout.ms - 1 s, during which nothing of the queue is
            # consumed: measured, that is seconds of latency in a 10 s window. The run starts once the group has
            # settled: each host holds some of the partitions.
            local held_a="" held_b=""
            for _ in $(seq 1 120); do
                held_a=$(partitions_held "$CLUSTER_ADMIN_A") held_b=$(partitions_held "$CLUSTER_ADMIN_B")
                [[ ${held_a:-0} -ge 1 && ${held_b:-0} -ge 1 ]] && break
                sleep 0.25
            done
            [[ ${held_a:-0} -ge 1 && ${held_b:-0} -ge 1 ]] ||
                log "warning: the queue's consumer group did not settle in 30 s" \
                    "(partitions: A ${held_a:-?}, B ${held_b:-?})"
            EXTRA_PIDS="host_b=$HY_PID,kafka_mock=$mock_pid"
            ;;
        nchan)
            local dir=$RUN_DIR/nginx port
            port=$(free_port)
            rm -rf "$dir" && mkdir -p "$dir"
            sed -e "s#@RUN_DIR@#$dir#g" -e "s#@PORT@#$port#g" "$ROOT/tests/bench/nchan.conf.in" >"$dir/nchan.conf"
            taskset -c "$SERVER_CPU" nginx -p "$dir" -c "$dir/nchan.conf" -g 'daemon off;' \
                >"$OUT/$tag.server.log" 2>&1 &
            local master=$!
            PIDS+=("$master")
            SERVER_PID=""
            # The one worker does all the work: measure it, not the master.
            for _ in $(seq 1 200); do
                SERVER_PID=$(pgrep -P "$master" | head -1 || true)
                [[ -n $SERVER_PID ]] && curl -s -o /dev/null "http://127.0.0.1:$port/pub?id=probe" && break
                kill -0 "$master" 2>/dev/null || break
                sleep 0.05
            done
            if [[ -z $SERVER_PID ]]; then
                log "nginx did not start:"
                cat "$OUT/$tag.server.log" "$dir/error.log" >&2 2>/dev/null || true
                exit 1
            fi
            WS_ADDR=127.0.0.1:$port API_ADDR=127.0.0.1:$port
            EXTRA_PIDS="nginx_master=$master"
            ;;
    esac
    sleep 0.5
}

# The request templates: one tool, two servers.
server_args() {
    case $1 in
        hydra | hydra_before | cluster | floor)
            echo '--path / --post-path /msg/send --content-type application/json'
            ;;
        nchan) echo '--path /sub/ --id-in-path 1 --post-path /pub?id={id} --content-type text/plain' ;;
    esac
}
server_body() {
    case $1 in
        hydra | hydra_before | cluster | floor) echo '{"uuid":"{id}","msg":"ts={ts} seq={seq}"}' ;;
        nchan) echo 'ts={ts} seq={seq}' ;;
    esac
}

# record_cluster_counts FILE: what the two hosts' metrics say about the run (all of it, warm-up included), added
# to the run's JSON as "cluster": the MQC messages each host handled (both consume the queue, in one group), the
# notifies host B routed to another host (B holds no client, so every one it handled), and so the Kafka messages
# per routed notify — measured, for the cluster's table of messages per operation.
CLUSTER_ADMIN_A="" CLUSTER_ADMIN_B=""
record_cluster_counts() {
    local a b
    a=$(curl -s --max-time 5 "http://$CLUSTER_ADMIN_A/metrics" || true)
    b=$(curl -s --max-time 5 "http://$CLUSTER_ADMIN_B/metrics" || true)
    node -e '
        const fs = require("fs");
        const [file, a, b] = process.argv.slice(1);
        const sum = (text, name, must) => text.split("\n")
            .filter((l) => l.startsWith(name + "{") && must.every((m) => l.includes(m)))
            .reduce((s, l) => s + Number(l.split(" ").pop()), 0);
        let r;
        try { r = JSON.parse(fs.readFileSync(file, "utf8")); } catch { process.exit(0); }
        const onA = sum(a, "hydra_mqc_handled_total", ["result=\"ok\""]);
        const onB = sum(b, "hydra_mqc_handled_total", ["result=\"ok\""]);
        const routed = sum(b, "hydra_cluster_routed_total", ["kind=\"notify\""]);
        r.cluster = { handled_on_a: onA, handled_on_b: onB, notify_routed_by_b: routed,
            notify_routed_by_b_via_node: sum(b, "hydra_cluster_routed_total", ["kind=\"notify\"", "via=\"node\""]),
            share_handled_on_b: onA + onB > 0 ? onB / (onA + onB) : null,
            kafka_messages_per_routed_notify: onB > 0 ? routed / onB : null };
        fs.writeFileSync(file, JSON.stringify(r, null, 2) + "\n");' "$1" "$a" "$b"
}

# run_one SERVER RATE TAG: a fresh server, one hydra-bench send run, the server stopped. Result: $OUT/TAG.json.
run_one() {
    local server=$1 rate=$2 tag=$3
    log "$tag: $server at ${rate/#0/closed loop} msg/s"
    wait_quiet
    start_server "$server" "$tag"
    local args
    read -r -a args <<<"$(server_args "$server")"
    local extra=()
    [[ -n $EXTRA_PIDS ]] && extra=(--extra-pids "$EXTRA_PIDS")
    taskset -c "$CLIENT_CPU" "$BENCH" send --ws "$WS_ADDR" --api "$API_ADDR" --server-pid "$SERVER_PID" \
        --label "$server" --out "$OUT/$tag.json" --connections "$CLIENTS" --id-prefix c \
        --rate "$rate" --warmup "$WARMUP" --duration "$DURATION" --publishers "$(publishers_of "$server")" \
        --pipeline "$PIPELINE" \
        --settle 2 "${args[@]}" --body "$(server_body "$server")" "${extra[@]}" \
        >/dev/null 2>"$OUT/$tag.bench.log" &
    BENCH_PID=$!
    local rc=0
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=""
    if [[ $rc != 0 ]]; then
        log "hydra-bench send failed (exit $rc):"
        tail -20 "$OUT/$tag.bench.log" >&2
    fi
    [[ $server == cluster ]] && record_cluster_counts "$OUT/$tag.json"
    stop_servers
}

# meets_target TAG RATE SERVER: whether the run met the target (see the header).
meets_target() {
    node -e '
        const [file, rate, p99] = process.argv.slice(1);
        let r; try { r = JSON.parse(require("fs").readFileSync(file, "utf8")); } catch { process.exit(1); }
        const ok = !r.error && r.latency_ms.count > 0 && r.latency_ms.p99 <= Number(p99) &&
            r.deliveries.rate_in_window >= 0.97 * Number(rate) && r.deliveries.missing === 0 &&
            Object.keys(r.posts.rejected).length === 0 && r.posts.lost_in_flight === 0;
        process.exit(ok ? 0 : 1);' "$OUT/$1.json" "$2" "$(p99_of "$3")"
}

servers_of() {
    case $1 in
        send) echo "hydra ${BENCH_HYDRA_BEFORE:+hydra_before }floor nchan" ;;
        send_cluster) echo "cluster" ;;
        *) log "unknown scenario $1" && exit 2 ;;
    esac
}

# Fixed rates, servers interleaved so that drifts of the machine hit each alike.
for scenario in $SCENARIOS; do
    read -r -a servers <<<"$(servers_of "$scenario")"
    for rate in $RATES; do
        for rep in $(seq 1 "$REPEAT"); do
            for server in "${servers[@]}"; do run_one "$server" "$rate" "send.$server.r$rate.$rep"; done
        done
    done
done

# The search: per server, rates in order until one misses the target.
SEARCHED=""
if [[ -n $SEARCH ]]; then
    for scenario in $SCENARIOS; do
        read -r -a servers <<<"$(servers_of "$scenario")"
        for server in "${servers[@]}"; do
            [[ " $SEARCH_SERVERS " == *" $server "* ]] || continue
            SEARCHED+=" $server"
            for rate in $SEARCH; do
                tag=send.$server.search$rate
                run_one "$server" "$rate" "$tag"
                # One more try before giving up: a single burst of other work on the machine can spoil a p99.
                if ! meets_target "$tag" "$rate" "$server"; then
                    [[ -f $OUT/$tag.json ]] && mv "$OUT/$tag.json" "$OUT/$tag.try1.json"
                    log "$server misses the target at $rate msg/s; trying once more"
                    run_one "$server" "$rate" "$tag"
                fi
                if meets_target "$tag" "$rate" "$server"; then
                    log "$server meets the target at $rate msg/s"
                else
                    log "$server misses the target at $rate msg/s; search stops"
                    break
                fi
            done
        done
    done
fi

# ---- table and send-results.json ----
# What was measured: the commit, and whether tracked files differed from it (BENCH_REVISION overrides, e.g. for
# binaries built elsewhere with BENCH_SKIP_BUILD=1).
REVISION=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then REVISION+="+local changes"; fi
REVISION=${BENCH_REVISION:-$REVISION}
NGINX_VERSION=$(nginx -v 2>&1 | sed 's#.*nginx/##')
NCHAN_VERSION=$(dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || echo unknown)
export BENCH_REVISION=$REVISION BENCH_NGINX="$NGINX_VERSION" BENCH_NCHAN="$NCHAN_VERSION"
node - "$OUT" "$BUILD/send-results.json" "$SCENARIOS" "$RATES" "$REPEAT" "$SEARCH" "$SEARCHED" "$P99_MS" \
    "$CLIENTS" "$PUBLISHERS" "$PIPELINE" "$DURATION" "$SERVER_CPU" "$CLIENT_CPU" "$CLUSTER_PUBLISHERS" \
    "$CLUSTER_P99_MS" <<'EOF'
const fs = require('fs');
const os = require('os');
const [outDir, resultsFile, scenarioList, rateList, repeatArg, searchList, searchedList, p99Target, clients,
  publishers, pipeline, duration, serverCpu, clientCpu, clusterPublishers, clusterP99] = process.argv.slice(2);
const p99Of = (srv) => Number(srv === 'cluster' ? clusterP99 : p99Target);
const words = (s) => s.split(/\s+/).filter(Boolean);
const scenarios = words(scenarioList);
const rates = words(rateList);
const repeat = Number(repeatArg);
const serversOf = { send: process.env.BENCH_HYDRA_BEFORE ? ['hydra', 'hydra_before', 'floor', 'nchan']
  : ['hydra', 'floor', 'nchan'], send_cluster: ['cluster'] };
const names = { hydra: 'hydra (SQLite)', hydra_before: 'hydra before (SQLite)', cluster: 'hydra 2 hosts (Kafka mock)',
  floor: 'floor (SQLite)', nchan: 'nginx + Nchan' };
const servers = scenarios.flatMap((s) => serversOf[s] || []);
// A run's JSON, plus server_cpu_total: the process holding the clients and the others (host B and the mock
// cluster; nginx's master).
const load = (tag) => {
  let r;
  try { r = JSON.parse(fs.readFileSync(`${outDir}/${tag}.json`, 'utf8')); } catch { return null; }
  if (r.cpu && typeof r.cpu.server_cores === 'number')
    r.server_cpu_total = Object.values(r.cpu.processes || {}).reduce((a, b) => a + (b || 0), r.cpu.server_cores);
  return r;
};
const get = (obj, path) => path.split('.').reduce((o, k) => (o == null ? undefined : o[k]), obj);
const median = (vals) => {
  const nums = vals.filter((v) => typeof v === 'number').sort((a, b) => a - b);
  if (nums.length === 0) return null;
  const m = nums.length >> 1;
  return nums.length % 2 ? nums[m] : (nums[m - 1] + nums[m]) / 2;
};
const fmt = (v) => {
  if (v === undefined || v === null) return 'n/a';
  if (typeof v !== 'number') return String(v);
  if (Math.abs(v) >= 1000) return Math.round(v).toLocaleString('en-US');
  return String(Math.round(v * 100) / 100);
};
const metrics = [
  ['deliveries/s', 'deliveries.rate_in_window'],
  ['posts/s', 'posts.rate_in_window'],
  ['latency p50 (ms)', 'latency_ms.p50'],
  ['latency p99 (ms)', 'latency_ms.p99'],
  ['latency p99.9 (ms)', 'latency_ms.p999'],
  ['post round trip p99 (ms)', 'post_latency_ms.p99'],
  ['missing', 'deliveries.missing'],
  ['duplicates', 'deliveries.duplicates'],
  ['posts rejected or lost', null],
  ['publisher backlog (msgs delayed)', 'publisher.delayed_by_busy_connections'],
  ['msgs skipped (> 5 s late to send)', 'posts.skipped_over_max_lag'],
  ['server CPU, all processes (cores)', 'server_cpu_total'],
  ['  in the process holding the clients', 'cpu.server_cores'],
  ['client CPU (cores)', 'cpu.client_cores'],
  ['2 hosts: share of messages handled on host B', 'cluster.share_handled_on_b'],
  ['2 hosts: Kafka messages per notify B routed', 'cluster.kafka_messages_per_routed_notify'],
];
const failedPosts = (r) => r ? Object.values(r.posts.rejected).reduce((a, b) => a + b, 0) + r.posts.lost_in_flight
  : undefined;
const runs = {};
const table = [];
for (const rate of rates) for (const srv of servers) {
  const rs = [];
  for (let k = 1; k <= repeat; k++) rs.push(load(`send.${srv}.r${rate}.${k}`));
  runs[`${srv}@${rate}`] = rs;
  for (const [metric, path] of metrics) {
    const vals = rs.map((r) => (path ? get(r, path) : failedPosts(r)));
    table.push({ rate: rate === '0' ? 'closed loop' : Number(rate), server: srv, metric, value: median(vals),
      runs: vals });
  }
}
// The search: the highest rate that met the target, per server.
const search = {};
for (const srv of words(searchedList)) {
  let best = null;
  const tried = [];
  for (const rate of words(searchList)) {
    const r = load(`send.${srv}.search${rate}`);
    if (!r) break;
    const ok = !r.error && r.latency_ms.count > 0 && r.latency_ms.p99 <= p99Of(srv) &&
      r.deliveries.rate_in_window >= 0.97 * Number(rate) && r.deliveries.missing === 0 && failedPosts(r) === 0;
    tried.push({ rate: Number(rate), ok, deliveries_per_s: r.deliveries.rate_in_window, p99_ms: r.latency_ms.p99,
      missing: r.deliveries.missing, server_cores: get(r, 'cpu.server_cores'),
      client_cores: get(r, 'cpu.client_cores') });
    if (!ok) break;
    best = Number(rate);
  }
  search[srv] = { highest_rate_meeting_target: best, tried };
}

const cols = ['rate', 'metric', ...servers.map((s) => names[s])];
if (servers.includes('hydra') && servers.includes('nchan')) cols.push('hydra/nchan');
if (servers.includes('hydra_before')) cols.push('hydra/before');
if (servers.includes('hydra') && servers.includes('floor')) cols.push('hydra/floor');
if (servers.includes('cluster') && servers.includes('nchan')) cols.push('2 hosts/nchan');
const rows = [];
for (const rate of rates) for (const [metric] of metrics) {
  const v = (srv) => (table.find((t) => t.server === srv && t.metric === metric &&
    String(t.rate) === (rate === '0' ? 'closed loop' : rate)) || {}).value;
  const row = [rate === '0' ? 'closed loop' : fmt(Number(rate)), metric, ...servers.map((s) => fmt(v(s)))];
  const ratio = (a, b) => (typeof a === 'number' && typeof b === 'number' && b !== 0 ? fmt(a / b) : '');
  if (cols.includes('hydra/nchan')) row.push(ratio(v('hydra'), v('nchan')));
  if (cols.includes('hydra/before')) row.push(ratio(v('hydra'), v('hydra_before')));
  if (cols.includes('hydra/floor')) row.push(ratio(v('hydra'), v('floor')));
  if (cols.includes('2 hosts/nchan')) row.push(ratio(v('cluster'), v('nchan')));
  rows.push(row);
}
const widths = cols.map((c, i) => Math.max(c.length, ...rows.map((r) => (r[i] || '').length)));
const line = (r) => r.map((c, i) => (i >= 2 ? (c || '').padStart(widths[i]) : (c || '').padEnd(widths[i])))
  .join('  ').trimEnd();
const env = process.env;
console.log(`hydra ${env.BENCH_REVISION}, nginx ${env.BENCH_NGINX} + nchan ${env.BENCH_NCHAN}; ` +
  `${clients} clients, ${publishers} publishers x ${pipeline}` +
  (servers.includes('cluster') ? ` (2 hosts: ${clusterPublishers})` : '') + `, ${duration} s measured; ` +
  (repeat > 1 ? `median of ${repeat} runs` : 'one run each'));
console.log(line(cols));
console.log(widths.map((w) => '-'.repeat(w)).join('  '));
for (const r of rows) console.log(line(r));
if (Object.keys(search).length) {
  console.log(`\nhighest rate with p99 <= ${p99Target} ms (2 hosts: ${clusterP99} ms), >= 97 % delivered in the ` +
    'window, nothing lost:');
  for (const [srv, s] of Object.entries(search)) {
    const best = s.highest_rate_meeting_target;
    const tried = s.tried.map((t) => `${fmt(t.rate)}: ${fmt(t.deliveries_per_s)}/s p99 ${fmt(t.p99_ms)} ms` +
      (t.missing ? ` missing ${t.missing}` : '')).join('; ');
    console.log(`  ${names[srv]}: ${best === null ? 'none' : fmt(best) + ' msg/s'}  (${tried})`);
  }
}
const warnings = [];
for (const [key, rs] of Object.entries(runs)) rs.forEach((r, i) => {
  const tag = `${key} run ${i + 1}`;
  if (!r) return warnings.push(`${tag}: no result`);
  if (r.error) warnings.push(`${tag}: error: ${r.error}`);
  const other = get(r, 'cpu.other_cores') || 0;
  if (other > 0.1) warnings.push(`${tag}: other processes used ${other} cores during the measurement`);
  const steal = get(r, 'cpu.steal_cores') || 0;
  if (steal > 0.1) warnings.push(`${tag}: the hypervisor took ${steal} cores from this VM (steal) during the measurement`);
  const client = get(r, 'cpu.client_cores') || 0;
  if (client > 0.9) warnings.push(`${tag}: the load generator used ${client} cores: it may be the bottleneck`);
});
if (warnings.length) console.log(`\nwarnings:\n  ${warnings.join('\n  ')}`);
const results = {
  date: new Date().toISOString(),
  machine: { cpus: os.cpus().length, cpu_model: os.cpus()[0] && os.cpus()[0].model, kernel: os.release(),
             memory_mb: Math.round(os.totalmem() / 1048576) },
  pinning: { server_cpu: Number(serverCpu), client_cpu: Number(clientCpu) },
  versions: { hydra: process.env.BENCH_REVISION, nginx: process.env.BENCH_NGINX, nchan: process.env.BENCH_NCHAN },
  parameters: { clients: Number(clients), publishers: Number(publishers), pipeline: Number(pipeline),
                duration_s: Number(duration), rates, p99_target_ms: Number(p99Target),
                cluster_publishers: Number(clusterPublishers), cluster_p99_target_ms: Number(clusterP99) },
  repeat, table, search, warnings, runs,
};
fs.writeFileSync(resultsFile, JSON.stringify(results, null, 2) + '\n');
console.log(`\nresults: ${resultsFile}`);
EOF
