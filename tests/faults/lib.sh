# shellcheck shell=bash
# Shared by the fault scripts (sourced after tests/bench/lib.sh): free ports, starting hydra on fixed ports (so
# that a restarted host answers on the same addresses), reading its /metrics.

# A free TCP port on 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_listening PID LOG: waits (up to 60 s) until hydra's log shows its three listeners; exits on failure.
wait_listening() {
    local pid=$1 logf=$2
    for _ in $(seq 1 1200); do
        if grep -q 'ws listening' "$logf" 2>/dev/null && grep -q 'api listening' "$logf" 2>/dev/null &&
            grep -q 'admin listening' "$logf" 2>/dev/null; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    log "hydra did not start; its output:"
    cat "$logf" >&2
    exit 1
}

# metric ADMIN NAME LABEL_FILTER: the sum of the samples of NAME whose labels contain LABEL_FILTER ("" = all); 0 when
# there is no such sample (hydra_queue_messages has series only for queues with rows), "" when /metrics did not
# answer.
metric() {
    local text
    text=$(curl -sf --max-time 5 "http://$1/metrics") || { echo ""; return 0; }
    awk -v name="$2" -v filter="$3" '
        $0 !~ /^#/ { n = $1; sub(/\{.*/, "", n); if (n == name && index($1, filter) > 0) s += $NF }
        END { printf "%d\n", s }' <<<"$text"
}
