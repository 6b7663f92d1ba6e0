# shellcheck shell=bash
# Shared by tests/bench/run.sh and tests/bench/send.sh (sourced): logging, stopping the processes a script
# started (by PID only), waiting for a server's addresses and for an idle machine, building hydra and hydra-bench.
# The sourcing script sets LOG_TAG (its name in log lines) before using log.

log() { echo "${LOG_TAG:-bench}: $*" >&2; }

# The settings every benchmark gives a hydra host: free loopback ports, one WS loop, warnings only, no pings or idle
# timeouts, the client's X-Request-Id as its uuid (the load generator addresses clients by it), and no per-address
# or rate limits (the load comes from one address and floods on purpose).
HYDRA_BENCH_SETTINGS=(--set ws.address=127.0.0.1:0 --set api.address=127.0.0.1:0 --set admin.address=127.0.0.1:0
    --set log.level=warn --set ws.io_threads=1 --set ws.ping_interval_ms=0 --set ws.idle_timeout_ms=0
    --set ws.client_uuid=request_id --set ws.max_connections_per_ip=0 --set ws.rate_limit.messages_per_s=0
    --set api.max_connections_per_ip=0 --set api.rate_limit.requests_per_s=0)

# stop_pid PID: SIGTERM, up to 10 s, then SIGKILL; reaps it. A no-op for "" or a PID that is gone.
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid did not stop on SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# wait_for_addresses PID LOG WHAT [admin]: waits (up to 20 s) for a server started in the background to print its
# ws:// (or wss://) and http:// addresses in LOG; sets FOUND_WS and FOUND_API ("127.0.0.1:PORT"), or shows LOG and
# exits. With "admin" (hydra) it also waits for the admin listener's line ("admin listening on http://...") and sets
# FOUND_ADMIN.
wait_for_addresses() {
    local pid=$1 logf=$2 what=$3 admin=${4:-}
    FOUND_WS="" FOUND_API="" FOUND_ADMIN=""
    for _ in $(seq 1 400); do
        FOUND_WS=$(grep -o 'wss\?://127\.0\.0\.1:[0-9]*' "$logf" 2>/dev/null | head -1 | sed 's#wss\?://##' || true)
        FOUND_API=$(grep -v 'admin listening' "$logf" 2>/dev/null | grep -o 'http://127\.0\.0\.1:[0-9]*' | head -1 |
            sed 's#http://##' || true)
        FOUND_ADMIN=$(grep -o 'admin listening on http://127\.0\.0\.1:[0-9]*' "$logf" 2>/dev/null | head -1 |
            sed 's#.*http://##' || true)
        [[ -n $FOUND_WS && -n $FOUND_API && ( -z $admin || -n $FOUND_ADMIN ) ]] && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    log "$what did not start; its output:"
    cat "$logf" >&2
    exit 1
}

# Busy cores on the machine over one second, from /proc/stat (other builds or benchmarks skew the figures).
busy_cores() {
    local a b
    read -r -a a < <(head -1 /proc/stat)
    sleep 1
    read -r -a b < <(head -1 /proc/stat)
    # cpu user nice system idle iowait irq softirq steal
    local busy=$(((b[1] + b[2] + b[3] + b[6] + b[7] + b[8]) - (a[1] + a[2] + a[3] + a[6] + a[7] + a[8])))
    echo $((busy * 100 / $(getconf CLK_TCK)))  # in hundredths of a core
}

# Waits (up to BENCH_QUIET_WAIT seconds, default 300) until the machine is idle: < 0.15 core busy.
wait_quiet() {
    local limit=${BENCH_QUIET_WAIT:-300} waited=0 busy
    while busy=$(busy_cores) && ((busy > 15)); do
        if ((waited == 0)); then log "machine busy (${busy}% of a core used by other processes); waiting"; fi
        waited=$((waited + 1))
        if ((waited >= limit)); then
            log "still busy after ${limit}s; measuring anyway (see cpu.other_cores in the results)"
            return 0
        fi
    done
}

# build_bench ROOT BUILD: hydra and hydra-bench, Release, unless BENCH_SKIP_BUILD=1; sets HYDRA and BENCH to the
# binaries (exits when one is missing).
build_bench() {
    local root=$1 build=$2
    if [[ ${BENCH_SKIP_BUILD:-0} != 1 ]]; then
        log "building hydra and hydra-bench (Release) in $build"
        cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DHYDRA_BUILD_TESTS=OFF >/dev/null
        cmake --build "$build" -j"$(nproc)" --target hydra_cli hydra_bench >/dev/null
    fi
    HYDRA=$build/bin/hydra
    BENCH=$build/bin/hydra-bench
    [[ -x $HYDRA && -x $BENCH ]] || { log "missing $HYDRA or $BENCH"; exit 1; }
}
