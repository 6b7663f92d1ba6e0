#include "scenario.h"

#include <sched.h>

#include <algorithm>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <stdexcept>
#include <type_traits>

namespace bench::scenario {

const char* const kUsage = R"(usage: hydra-bench SCENARIO --ws HOST:PORT [options]

scenarios:
  idle       open N connections and hold them: connect rate; with --server-pid, the server's RSS per connection
  echo       N connections on the echo path, each keeping W 32-byte text messages in flight: round trips/s, latency
  broadcast  N connections; K POST /v1/exchange/broadcast (needs --api or --admin): deliveries/s, delivery and completion latency
  slow       broadcast three times on the same N connections: without, with, and again without one extra client
             that never reads (and first sends echo requests, see --slow-fill-mb)
  send       N clients with their own ids; M keep-alive HTTP connections post messages, message k to client k % N,
             at --rate msg/s (0: as fast as they can): deliveries/s, latency from when each message was due, missing
  churn      K connect/disconnect cycles (upgrade, one echo, then a close handshake or, every other time, a
             dropped socket), C at a time: cycles/s, and the server's RssAnon and open files along the way
  soak       N clients held for --duration S while --rate R /msg/send/s go to them (message k to client k % N),
             --broadcast-rate B /msg/broadcast/s and --churn-rate C connect/disconnect cycles/s on extra
             connections (--churn-path, default /echo); every --interval S (5) a CSV row (--csv FILE) with the
             server's RSS, open files, CPU and queue depth (GET /metrics on --admin; /proc of --server-pid without
             it) and the interval's delivery p50/p99; after the last post, --grace S (30) for the rest to arrive;
             then every acknowledged message is checked and the pass criteria are reported (--warmup S, default
             120: RSS drift measured after it; --max-rss-drift 0.05; --max-p99-ratio 2). Connects to --path (use /)
  stream     no clients: POST --body TEMPLATE ({seq}, {ts}, {id}) to --post-path at --rate R/s for --duration S from
             --publishers M connections that reconnect when the server goes away; --acked FILE gets every
             acknowledged seq, --seconds-csv FILE the answers per second (ok, 503, other, broken, slowest)
  mailbox    log in as --uname/--pwd (alice/alice-pw) on --ws, read until --quiet S (10) passes without a message
             (at most --max S, 600) and compare the seq= of what arrived with --acked FILE: lost, duplicates
  kafka-mock not a load: a librdkafka mock cluster (one broker) in this process; prints "bootstrap HOST:PORT",
             then obeys "down" / "up" (the broker refuses connections / accepts again, same port and data) and
             "quit" on stdin
  kafka-relay no server: the Kafka floor of the two-host send path (kafka_relay.cpp): hydra-bench kafka-relay
             --brokers HOST:PORT --rate R --seconds S [--keys 5000] [--kafka-property name=value]
  queue      queue backends in-process, no server: hydra-bench queue --backend sqlite|kafka ... (queue_bench.cpp)
  floor      not a load: runs the floor peer, the least a server must do for these scenarios (floor_server.cpp):
             hydra-bench floor --ws 127.0.0.1:0 --api 127.0.0.1:0

options:
  --ws HOST:PORT          WebSocket server (IPv4 literal, e.g. 127.0.0.1:9087)
  --tls 1                 wss://: TLS (OpenSSL) on the WebSocket connections; the server's certificate is not
                          verified (loopback benchmarking). idle, echo, broadcast, send; the HTTP posts stay plain
  --api HOST:PORT         HTTP API of the server (broadcast, slow, send)
  --admin HOST:PORT       where broadcast and slow post /v1/exchange/broadcast (default: --api; hydra serves it on
                          its admin listener, admin.address)
  --server-pid PID        read the server's VmRSS/RssAnon from /proc/PID/status
  --connections N         client connections (default 1000)
  --threads T             client epoll threads (default: CPUs this process may run on; send with 1: the
                          publishers' loop serves the clients too)
  --path P                WebSocket path (default /echo)
  --connect-concurrency C handshakes in progress at once (default 256)
  --out FILE              also write the JSON result to FILE
  --label TEXT            copied into the result (e.g. "hydra", "node ws")
  --detail 1              broadcast, slow: also list every broadcast's completion latency (ms, from its post)
  idle:      --settle S (default 2) seconds before the RSS is read; --hold S (default 0) extra seconds held
  echo:      --duration S (default 10), --warmup S (default 1), --window W (default 1), --message-bytes B (default 32)
  broadcast: --broadcasts K (default 200), --mode paced|closed (default paced), --interval-ms MS (default 20, paced),
             --payload-bytes B (default 64: target size of the notify frame's payload), --warmup-broadcasts N
             (default 10: sent first, checked, but not in the figures)
  slow:      the broadcast options, plus --slow-rcvbuf BYTES (default 1024), --slow-fill-mb MB (default 8: echo
             requests the slow client sends first so the server has more than its send queue cap to hold for it),
             --slow-wait S (default 5: how long after the run to wait for the server to drop the slow client)
  churn:     --cycles K (default 100000), --concurrency C (default 16 blocking clients)
  send:      --rate R msg/s (default 10000; 0 = closed loop), --warmup S, --duration S (sent at the rate, measured),
             --publishers M (default 16) keep-alive HTTP connections with --pipeline P (default 1) requests in flight
             each, --post-path TEMPLATE (default /msg/send), --body TEMPLATE (default {"uuid":"{id}","msg":"ts={ts}
             seq={seq}"}), --content-type T (default application/json), --id-prefix P (default c): client i sends
             X-Request-Id: P<i>, --id-in-path 1: and connects to --path followed by P<i> (nchan: --path /sub/).
             In templates {id} = the target client's id, {ts} = when the message was due (CLOCK_MONOTONIC ns), {seq}
             = its number. Clients look for ts=<digits> and seq=<digits> anywhere in what they receive.
             --drain S (default 5: wait after the last post until nothing arrived for S), --settle S (default 2:
             pause before the first post), --tick-us U (default 100: least sleep between paced batches),
             --max-lag S (default 5: a message not sent within S of its due time, all connections being busy, is
             skipped and counted; keeps an overloaded run from lasting minutes),
             --extra-pids NAME=PID,... (more server processes whose CPU is reported)
)";

Options parse_args(int argc, char** argv) {
    if (argc < 2) throw std::invalid_argument("missing scenario");
    Options o;
    o.scenario = argv[1];
    if (o.scenario == "-h" || o.scenario == "--help" || o.scenario == "help") {
        std::cout << kUsage;
        std::exit(0);
    }
    if (!find_scenario(o.scenario)) throw std::invalid_argument("unknown scenario " + o.scenario);
    using Setter = std::function<void(const std::string&)>;
    auto text = [](std::string& field) -> Setter { return [&field](const std::string& v) { field = v; }; };
    auto real = [](double& field) -> Setter { return [&field](const std::string& v) { field = std::stod(v); }; };
    auto flag = [](bool& field) -> Setter {
        return [&field](const std::string& v) { field = v == "1" || v == "yes" || v == "true"; };
    };
    auto integer = [](auto& field) -> Setter {
        return [&field](const std::string& v) {
            field = static_cast<std::remove_reference_t<decltype(field)>>(std::stod(v));
        };
    };
    const std::map<std::string, Setter> setters = {
        {"--ws", text(o.ws)},
        {"--api", text(o.api)},
        {"--admin", text(o.admin)},
        {"--server-pid", integer(o.server_pid)},
        {"--connections", integer(o.connections)},
        {"--threads", integer(o.threads)},
        {"--path", text(o.path)},
        {"--connect-concurrency", integer(o.connect_concurrency)},
        {"--out", text(o.out)},
        {"--label", text(o.label)},
        {"--settle", real(o.settle_s)},
        {"--hold", real(o.hold_s)},
        {"--duration", real(o.duration_s)},
        {"--warmup", real(o.warmup_s)},
        {"--window", integer(o.window)},
        {"--message-bytes", integer(o.message_bytes)},
        {"--broadcasts", integer(o.broadcasts)},
        {"--warmup-broadcasts", integer(o.warmup_broadcasts)},
        {"--mode", text(o.mode)},
        {"--interval-ms", real(o.interval_ms)},
        {"--payload-bytes", integer(o.payload_bytes)},
        {"--slow-rcvbuf", integer(o.slow_rcvbuf)},
        {"--slow-fill-mb", real(o.slow_fill_mb)},
        {"--slow-wait", real(o.slow_wait_s)},
        {"--detail", flag(o.detail)},
        {"--tls", flag(o.tls)},
        {"--cycles", integer(o.cycles)},
        {"--concurrency", integer(o.concurrency)},
        {"--rate", real(o.rate)},
        {"--publishers", integer(o.publishers)},
        {"--pipeline", integer(o.pipeline)},
        {"--post-path", text(o.post_path)},
        {"--body", text(o.body)},
        {"--content-type", text(o.content_type)},
        {"--id-prefix", text(o.id_prefix)},
        {"--id-in-path", flag(o.id_in_path)},
        {"--drain", real(o.drain_s)},
        {"--tick-us", real(o.tick_us)},
        {"--max-lag", real(o.max_lag_s)},
        {"--extra-pids", text(o.extra_pids)},
        {"--broadcast-rate", real(o.broadcast_rate)},
        {"--churn-rate", real(o.churn_rate)},
        {"--churn-path", text(o.churn_path)},
        {"--interval", real(o.interval_s)},
        {"--grace", real(o.grace_s)},
        {"--max-rss-drift", real(o.max_rss_drift)},
        {"--max-p99-ratio", real(o.max_p99_ratio)},
        {"--csv", text(o.csv)},
        {"--acked", text(o.acked)},
        {"--seconds-csv", text(o.seconds_csv)},
        {"--uname", text(o.uname)},
        {"--pwd", text(o.pwd)},
        {"--quiet", real(o.quiet_s)},
        {"--max", real(o.max_s)},
    };
    for (int i = 2; i < argc; ++i) {
        std::string a = argv[i];
        auto it = setters.find(a);
        if (it == setters.end()) throw std::invalid_argument("unknown option " + a);
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        if (a == "--warmup") o.warmup_given = true;
        try {
            it->second(argv[++i]);
        } catch (const std::logic_error&) {
            throw std::invalid_argument(a + ": not a number: " + argv[i]);
        }
    }
    if (o.ws.empty() && o.scenario != "stream") throw std::invalid_argument("--ws is required");
    if ((o.scenario == "send" || o.scenario == "soak" || o.scenario == "stream") && o.api.empty())
        throw std::invalid_argument("--api is required for " + o.scenario);
    if ((o.scenario == "stream" || o.scenario == "mailbox") && o.acked.empty())
        throw std::invalid_argument("--acked is required for " + o.scenario);
    if (o.scenario == "soak" && o.rate <= 0) throw std::invalid_argument("--rate must be > 0 for soak");
    if ((o.scenario == "broadcast" || o.scenario == "slow") && o.api.empty() && o.admin.empty())
        throw std::invalid_argument("--api or --admin is required for " + o.scenario);
    if (o.tls && (o.scenario == "churn" || o.scenario == "slow"))
        throw std::invalid_argument("--tls: not for " + o.scenario + " (its clients are plain TCP)");
    if (o.connections < 1) throw std::invalid_argument("--connections must be >= 1");
    if (o.window < 1) throw std::invalid_argument("--window must be >= 1");
    if (o.message_bytes < 16 || o.message_bytes > 4096) throw std::invalid_argument("--message-bytes: 16..4096");
    if (o.broadcasts < 1) throw std::invalid_argument("--broadcasts must be >= 1");
    if (o.cycles < 10) throw std::invalid_argument("--cycles must be >= 10");
    if (o.concurrency < 1) throw std::invalid_argument("--concurrency must be >= 1");
    if (o.warmup_broadcasts < 0) throw std::invalid_argument("--warmup-broadcasts must be >= 0");
    if (o.mode != "paced" && o.mode != "closed") throw std::invalid_argument("--mode is paced or closed");
    if (o.rate < 0) throw std::invalid_argument("--rate must be >= 0");
    if (o.publishers < 1 || o.pipeline < 1) throw std::invalid_argument("--publishers and --pipeline must be >= 1");
    if (o.duration_s <= 0 || o.warmup_s < 0) throw std::invalid_argument("--duration must be > 0, --warmup >= 0");
    if (o.threads <= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        o.threads = sched_getaffinity(0, sizeof set, &set) == 0 ? std::max(1, CPU_COUNT(&set)) : 1;
    }
    return o;
}

void log(const std::string& msg) { std::cerr << "hydra-bench: " << msg << std::endl; }

std::string iso_now() {
    std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

OJson rss_json(const std::optional<Rss>& r) { return r ? r->to_json() : OJson(nullptr); }

bench::PoolConfig pool_config(const Options& o, bench::Mode mode) {
    bench::PoolConfig c;
    c.target = bench::parse_ipv4(o.ws);
    c.host = o.ws;
    c.path = o.path;
    c.connections = o.connections;
    c.threads = o.threads;
    c.connect_concurrency = o.connect_concurrency;
    c.mode = mode;
    c.echo_window = o.window;
    c.echo_bytes = o.message_bytes;
    c.tls = o.tls;
    return c;
}

OJson cpu_us_per_msg(const OJson& cpu, std::uint64_t messages) {
    if (!cpu.contains("server_s") || !cpu["server_s"].is_number() || messages == 0) return OJson();
    return round_to(cpu["server_s"].get<double>() * 1e6 / static_cast<double>(messages), 3);
}

OJson connect_json(const bench::Pool::ConnectResult& r, const bench::Pool& pool) {
    const bench::Stats s = pool.merged_stats();
    double secs = static_cast<double>(r.finished_ns - r.started_ns) / 1e9;
    OJson j{{"open", r.open},
            {"failed", r.failed},
            {"seconds", round_to(secs, 3)},
            {"rate_per_s", round_to(secs > 0 ? r.open / secs : 0, 1)},
            {"handshake_latency_ms", s.connect_latency.to_json_ms()}};
    if (!r.errors.empty()) j["errors"] = r.errors;
    if (std::string tls = pool.tls_description(); !tls.empty()) j["tls"] = tls;
    return j;
}

bench::Pool::ConnectResult connect_pool(bench::Pool& pool, const Options& o) {
    log("connecting " + std::to_string(o.connections) + " clients to " + (o.tls ? "wss://" : "ws://") + o.ws + o.path);
    auto r = pool.connect_all();
    log(std::to_string(r.open) + " open, " + std::to_string(r.failed) + " failed in " +
        std::to_string(static_cast<double>(r.finished_ns - r.started_ns) / 1e9) + " s");
    for (const auto& e : r.errors) log("  connect error: " + e);
    if (r.open == 0)
        throw std::runtime_error("no connection could be opened" +
                                 (r.errors.empty() ? std::string() : ": " + r.errors.front()));
    return r;
}
}  // namespace bench::scenario
