// hydra-bench: a load generator for any server speaking hydra's WebSocket protocol (hydra itself, or the node `ws`
// peer in tests/bench/node_peer.js; the send scenario also nginx + Nchan). Scenarios: idle, echo, broadcast, slow,
// send. Results as JSON on stdout and --out.
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <hydra/ws_client.h>

#include "pool.h"
#include "send_bench.h"
#include "soak_bench.h"
#include "util.h"
#include "ws/frame.h"
#include "ws/handshake.h"

namespace {

using bench::OJson;
using bench::round_to;

constexpr const char* kUsage = R"(usage: hydra-bench SCENARIO --ws HOST:PORT [options]

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
  --threads T             client epoll threads (default: CPUs this process may run on)
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

struct Options {
    std::string scenario;
    std::string ws;
    std::string api;
    std::string admin;  // the broadcast posts' server; "" = api
    pid_t server_pid = 0;
    int connections = 1000;
    int threads = 0;
    std::string path = "/echo";
    int connect_concurrency = 256;
    std::string out;
    std::string label;
    double settle_s = 2;
    double hold_s = 0;
    double duration_s = 10;
    double warmup_s = 1;
    int window = 1;
    std::size_t message_bytes = 32;
    int broadcasts = 200;
    int warmup_broadcasts = 10;
    std::string mode = "paced";
    double interval_ms = 20;
    std::size_t payload_bytes = 64;
    int slow_rcvbuf = 1024;
    double slow_fill_mb = 8;
    double slow_wait_s = 5;
    bool detail = false;
    bool tls = false;
    int cycles = 100000;
    int concurrency = 16;
    double rate = 10000;
    int publishers = 16;
    int pipeline = 1;
    std::string post_path = "/msg/send";
    std::string body = R"({"uuid":"{id}","msg":"ts={ts} seq={seq}"})";
    std::string content_type = "application/json";
    std::string id_prefix = "c";
    bool id_in_path = false;
    double drain_s = 5;
    double tick_us = 100;
    double max_lag_s = 5;
    std::string extra_pids;
    double broadcast_rate = 10;
    double churn_rate = 50;
    std::string churn_path = "/echo";
    double interval_s = 5;
    double grace_s = 30;
    double max_rss_drift = 0.05;
    double max_p99_ratio = 2;
    std::string csv;
    std::string acked;
    std::string seconds_csv;
    std::string uname = "alice";
    std::string pwd = "alice-pw";
    double quiet_s = 10;
    double max_s = 600;
    bool warmup_given = false;
};

Options parse_args(int argc, char** argv) {
    if (argc < 2) throw std::invalid_argument("missing scenario");
    Options o;
    o.scenario = argv[1];
    if (o.scenario == "-h" || o.scenario == "--help" || o.scenario == "help") {
        std::cout << kUsage;
        std::exit(0);
    }
    if (o.scenario != "idle" && o.scenario != "echo" && o.scenario != "broadcast" && o.scenario != "slow" &&
        o.scenario != "send" && o.scenario != "churn" && o.scenario != "soak" && o.scenario != "stream" &&
        o.scenario != "mailbox")
        throw std::invalid_argument("unknown scenario " + o.scenario);
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

std::string iso_now() {
    std::time_t t = std::time(nullptr);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
    return buf;
}

OJson rss_json(const std::optional<bench::Rss>& r) { return r ? r->to_json() : OJson(nullptr); }

// ---- connecting ----

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

// Server CPU time per message (µs): the meter's server seconds over `messages`; null without a server PID.
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

void log(const std::string& msg) { std::cerr << "hydra-bench: " << msg << std::endl; }

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

// ---- idle ----

OJson run_idle(const Options& o) {
    OJson result;
    std::optional<bench::Rss> before;
    if (o.server_pid) before = bench::read_rss(o.server_pid);
    bench::Pool pool(pool_config(o, bench::Mode::Idle));
    bench::CpuMeter cpu(o.server_pid);
    auto r = connect_pool(pool, o);
    result["connect"] = connect_json(r, pool);
    result["connect"]["cpu"] = cpu.to_json();
    std::this_thread::sleep_for(std::chrono::duration<double>(o.settle_s));
    std::optional<bench::Rss> after;
    if (o.server_pid) after = bench::read_rss(o.server_pid);
    if (o.hold_s > 0) std::this_thread::sleep_for(std::chrono::duration<double>(o.hold_s));
    bench::Stats s = pool.merged_stats();
    result["held"] = pool.open_connections();
    result["closed_by_server"] = s.closed_by_peer;
    result["settle_s"] = o.settle_s;
    if (o.server_pid) {
        OJson srv{{"pid", o.server_pid}, {"before", rss_json(before)}, {"after", rss_json(after)}};
        if (before && after && r.open > 0) {
            srv["bytes_per_conn_vm_rss"] =
                round_to(static_cast<double>(after->vm_rss_kb - before->vm_rss_kb) * 1024.0 / r.open, 1);
            srv["bytes_per_conn_rss_anon"] =
                round_to(static_cast<double>(after->rss_anon_kb - before->rss_anon_kb) * 1024.0 / r.open, 1);
        }
        result["server"] = srv;
    }
    result["client_rss"] = rss_json(bench::read_rss(getpid()));
    return result;
}

// ---- echo ----

OJson run_echo(const Options& o) {
    OJson result;
    bench::Pool pool(pool_config(o, bench::Mode::Echo));
    auto r = connect_pool(pool, o);
    result["connect"] = connect_json(r, pool);
    result["window"] = o.window;
    result["message_bytes"] = o.message_bytes;
    result["warmup_s"] = o.warmup_s;
    result["duration_s"] = o.duration_s;
    std::optional<bench::Rss> before;
    if (o.server_pid) before = bench::read_rss(o.server_pid);
    std::int64_t start = bench::now_ns() + 10'000'000;
    auto from = start + static_cast<std::int64_t>(o.warmup_s * 1e9);
    auto to = from + static_cast<std::int64_t>(o.duration_s * 1e9);
    log("echo: warmup " + std::to_string(o.warmup_s) + " s, measuring " + std::to_string(o.duration_s) + " s");
    pool.echo_start(from, to);
    bench::sleep_until_ns(from);
    bench::CpuMeter cpu(o.server_pid);
    bench::sleep_until_ns(to);
    result["cpu"] = cpu.to_json();
    pool.echo_stop();
    std::optional<bench::Rss> during;
    if (o.server_pid) during = bench::read_rss(o.server_pid);
    auto drain_deadline = bench::now_ns() + 3'000'000'000;
    while (bench::now_ns() < drain_deadline && pool.merged_stats().inflight > 0)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    bench::Stats s = pool.merged_stats();
    result["round_trips"] = s.echo_in_window;
    result["msgs_per_s"] = round_to(static_cast<double>(s.echo_in_window) / o.duration_s, 1);
    result["latency_ms"] = s.echo_latency.to_json_ms();
    // One round trip = one message read and one written by the server.
    result["server_cpu_us_per_msg"] = cpu_us_per_msg(result["cpu"], s.echo_in_window);
    result["unanswered_at_end"] = s.inflight;
    result["bad_echoes"] = s.echo_bad;
    result["closed_by_server"] = s.closed_by_peer;
    result["still_open"] = pool.open_connections();
    if (o.server_pid)
        result["server"] = OJson{{"pid", o.server_pid}, {"before", rss_json(before)}, {"end", rss_json(during)}};
    return result;
}

// ---- broadcast ----

struct BroadcastRun {
    OJson json;
    double delivery_p99_ms = 0;
    double completion_p99_ms = 0;
    double completion_p50_ms = 0;  // the median broadcast's time to reach every client: robust to a few slow ones
};

// Where /v1/exchange/broadcast is posted: the admin listener if given, else the API.
const std::string& broadcast_address(const Options& o) { return o.admin.empty() ? o.api : o.admin; }

std::string broadcast_body(std::int64_t ts, int seq, std::size_t payload_bytes) {
    // Frame payload: {"service":"notify","code":200,"data":DATA} = 39 bytes + DATA.
    std::string head = "{\"ts\":" + std::to_string(ts) + ",\"seq\":" + std::to_string(seq) + ",\"pad\":\"";
    std::size_t fixed = 39 + head.size() + 2;
    std::string pad(payload_bytes > fixed ? payload_bytes - fixed : 0, 'x');
    return "{\"data\":" + head + pad + "\"}}";
}

// Posts warmup + count broadcasts with seq first_seq.. and waits for them to reach `expected` clients. The warmup
// broadcasts (the first ones after a pause run slow: cold caches, TCP state) are delivered and checked like the
// others but left out of the latencies, the completion times and deliveries/s.
BroadcastRun run_broadcasts(bench::Pool& pool, bench::HttpClient& http, const Options& o, int first_seq, int expected) {
    const int warm = o.warmup_broadcasts;
    const int total = warm + o.broadcasts;
    const auto at = [](int k) { return static_cast<std::size_t>(k); };
    std::vector<std::int64_t> posted(at(total), 0);
    std::vector<std::int64_t> scheduled(at(total), 0);
    bench::Histogram post_rtt;
    bench::Stats before = pool.merged_stats();
    std::int64_t server_reported = -1;
    int http_errors = 0;
    const bool paced = o.mode == "paced";
    const auto interval = static_cast<std::int64_t>(o.interval_ms * 1e6);
    std::int64_t start = bench::now_ns();
    int incomplete_waits = 0;
    std::optional<bench::CpuMeter> cpu;
    for (int k = 0; k < total; ++k) {
        if (paced) bench::sleep_until_ns(start + k * interval);
        if (k == warm) cpu.emplace(o.server_pid);
        const int seq = first_seq + k;
        const std::int64_t ts = bench::now_ns();
        if (k == 0) start = ts;
        posted[at(k)] = ts;
        if (paced) {
            scheduled[at(k)] = start + k * interval;
            pool.set_scheduled(seq, scheduled[at(k)]);
        }
        try {
            http.send_post("/v1/exchange/broadcast", broadcast_body(ts, seq, o.payload_bytes));
            auto resp = http.read_response();
            if (k >= warm) post_rtt.record(bench::now_ns() - ts);
            if (resp.status != 200) {
                if (http_errors++ < 3) log("broadcast: HTTP " + std::to_string(resp.status) + ": " + resp.body);
            } else if (server_reported < 0) {
                auto p = resp.body.find("\"connections\":");
                if (p != std::string::npos) server_reported = std::atoll(resp.body.c_str() + p + 14);
            }
        } catch (const std::exception& e) {
            if (http_errors++ < 3) log(std::string("broadcast: ") + e.what());
        }
        if (!paced) {
            // Closed loop: the next broadcast once every client has this one (or 10 s without progress).
            std::uint32_t last = 0;
            std::int64_t last_progress = bench::now_ns();
            for (;;) {
                std::uint32_t got = pool.received(seq);
                if (static_cast<int>(got) >= expected) break;
                std::int64_t now = bench::now_ns();
                if (got != last) {
                    last = got;
                    last_progress = now;
                } else if (now - last_progress > 10'000'000'000) {
                    ++incomplete_waits;
                    break;
                }
                std::this_thread::sleep_for(std::chrono::microseconds(100));
            }
        }
    }
    // Wait for everything to arrive, or 5 s without progress.
    auto received = [&](int from, int to) {
        std::uint64_t n = 0;
        for (int k = from; k < to; ++k) n += pool.received(first_seq + k);
        return n;
    };
    const std::uint64_t want_all = static_cast<std::uint64_t>(expected) * static_cast<std::uint64_t>(total);
    std::uint64_t last = 0;
    std::int64_t last_progress = bench::now_ns();
    for (;;) {
        std::uint64_t got = received(0, total);
        if (got >= want_all) break;
        std::int64_t now = bench::now_ns();
        if (got != last) {
            last = got;
            last_progress = now;
        } else if (now - last_progress > 5'000'000'000) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    OJson cpu_json = cpu ? cpu->to_json() : OJson();
    bench::Stats s = pool.merged_stats();

    // The measured part: seq first_seq + warm ...
    const std::int64_t first = posted[at(warm)];
    const std::uint64_t want = static_cast<std::uint64_t>(expected) * static_cast<std::uint64_t>(o.broadcasts);
    const std::uint64_t deliveries = received(warm, total);
    const std::uint64_t all_deliveries = received(0, total);
    std::int64_t last_arrival = 0;
    bench::Histogram completion;
    bench::Histogram completion_scheduled;
    OJson by_seq = OJson::array();
    int incomplete = 0;
    for (int k = warm; k < total; ++k) {
        const int seq = first_seq + k;
        const std::int64_t arrival = s.last_arrival[static_cast<std::size_t>(seq)];
        last_arrival = std::max(last_arrival, arrival);
        if (o.detail) by_seq.push_back(arrival > 0 ? OJson(round_to(bench::ms(arrival - posted[at(k)]), 3)) : OJson());
        if (static_cast<int>(pool.received(seq)) >= expected && arrival > 0) {
            completion.record(arrival - posted[at(k)]);
            if (paced) completion_scheduled.record(arrival - scheduled[at(k)]);
        } else {
            ++incomplete;
        }
    }
    const auto group = static_cast<std::size_t>(first_seq / total);
    const bench::Histogram& delivery = s.delivery_latency[group];
    const double wall_s = last_arrival > first ? static_cast<double>(last_arrival - first) / 1e9 : 0;
    const double posting_s = static_cast<double>(posted.back() - first) / 1e9;

    BroadcastRun run;
    run.delivery_p99_ms = round_to(bench::ms(delivery.percentile(0.99)), 3);
    run.completion_p99_ms = round_to(bench::ms(completion.percentile(0.99)), 3);
    run.completion_p50_ms = round_to(bench::ms(completion.percentile(0.5)), 3);
    run.json = OJson{
        {"mode", o.mode},
        {"interval_ms", paced ? OJson(o.interval_ms) : OJson(nullptr)},
        {"broadcasts", o.broadcasts},
        {"warmup_broadcasts", warm},
        {"clients", expected},
        {"server_reported_connections", server_reported},
        {"payload_bytes", OJson{{"min", s.min_payload}, {"max", s.max_payload}}},
        {"deliveries", deliveries},
        {"expected", want},
        {"missing", want > deliveries ? want - deliveries : 0},
        {"missing_including_warmup", want_all > all_deliveries ? want_all - all_deliveries : 0},
        {"incomplete_broadcasts", incomplete},
        {"out_of_order", s.out_of_order - before.out_of_order},
        {"bad_messages", s.bad_messages - before.bad_messages},
        {"http_errors", http_errors},
        {"posting_s", round_to(posting_s, 3)},
        {"wall_s", round_to(wall_s, 3)},
        {"deliveries_per_s", round_to(wall_s > 0 ? static_cast<double>(deliveries) / wall_s : 0, 1)},
        {"broadcasts_per_s", round_to(wall_s > 0 ? o.broadcasts / wall_s : 0, 1)},
        {"delivery_latency_ms", delivery.to_json_ms()},
        {"completion_latency_ms", completion.to_json_ms()},
        {"post_latency_ms", post_rtt.to_json_ms()},
        {"closed_by_server", s.closed_by_peer - before.closed_by_peer},
        {"cpu", cpu_json},
        // Per delivery, the POSTs' share included (one per `clients` deliveries).
        {"server_cpu_us_per_msg", cpu_us_per_msg(cpu_json, deliveries)},
    };
    if (paced) {
        // Measured from when each broadcast was due rather than when the poster got to send it: a server whose
        // POST answers late (node: it fans out before answering) delays the poster, which would otherwise hide
        // that wait (coordinated omission).
        run.json["delivery_latency_from_schedule_ms"] = s.delivery_latency_scheduled[group].to_json_ms();
        run.json["completion_latency_from_schedule_ms"] = completion_scheduled.to_json_ms();
    }
    if (incomplete_waits) run.json["closed_loop_timeouts"] = incomplete_waits;
    if (o.detail) run.json["completion_ms_by_seq"] = by_seq;
    log("broadcast: " + std::to_string(deliveries) + "/" + std::to_string(want) + " deliveries, p99 " +
        std::to_string(run.delivery_p99_ms) + " ms, completion p99 " + std::to_string(run.completion_p99_ms) + " ms");
    return run;
}

// ---- churn ----

// K connect/disconnect cycles, C blocking clients at a time. The server's RssAnon and open files are read before,
// after every tenth of the cycles, and 2 s after the last: a server that keeps anything per closed connection
// (a map entry, a timer, a buffer, a socket) grows linearly; one that cleans up stays flat after the first tenth
// (allocator warm-up).
OJson run_churn(const Options& o) {
    const int port = ntohs(bench::parse_ipv4(o.ws).sin_port);
    const std::string host = o.ws.substr(0, o.ws.rfind(':'));
    const int tenth = std::max(1, o.cycles / 10);
    std::atomic<int> next{0};
    std::atomic<int> done{0};
    std::atomic<long> failed{0};
    std::atomic<long> bad_echoes{0};
    std::mutex mu;
    std::string first_error;
    auto worker = [&](int t) {
        for (int i = next++; i < o.cycles; i = next++) {
            try {
                hydra::WsClient c = hydra::WsClient::connect(
                    host, port, o.path, {{"X-Request-Id", "churn-" + std::to_string(t) + "-" + std::to_string(i)}});
                c.send_text("churn");
                hydra::WsMessage m = c.receive(std::chrono::seconds(5));
                if (m.type != hydra::WsMessage::Type::text || m.data != "churn") ++bad_echoes;
                if (i % 2 == 0) c.close();  // else: the destructor drops the socket, as a crashed client would
            } catch (const std::exception& e) {
                if (failed++ == 0) {
                    std::lock_guard lock(mu);
                    first_error = e.what();
                }
            }
            ++done;
        }
    };
    OJson samples = OJson::array();
    auto sample = [&](int cycles_done) {
        OJson row{{"cycles", cycles_done}};
        if (o.server_pid) {
            auto rss = bench::read_rss(o.server_pid);
            row["rss_anon_kb"] = rss ? OJson(rss->rss_anon_kb) : OJson(nullptr);
            row["open_files"] = bench::open_files(o.server_pid);
        }
        samples.push_back(row);
        return row;
    };
    OJson before = sample(0);
    bench::CpuMeter cpu(o.server_pid);
    const std::int64_t start = bench::now_ns();
    std::vector<std::thread> threads;
    for (int t = 0; t < o.concurrency; ++t) threads.emplace_back(worker, t);
    for (int k = 1; k < 10; ++k) {
        while (done.load() < k * tenth) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        sample(done.load());
    }
    for (auto& th : threads) th.join();
    const double seconds = static_cast<double>(bench::now_ns() - start) / 1e9;
    OJson cpu_json = cpu.to_json();
    std::this_thread::sleep_for(std::chrono::seconds(2));  // closes in flight on the server finish
    OJson end = sample(o.cycles);

    OJson result{{"cycles", o.cycles},
                 {"concurrency", o.concurrency},
                 {"failed", failed.load()},
                 {"bad_echoes", bad_echoes.load()},
                 {"seconds", round_to(seconds, 3)},
                 {"cycles_per_s", round_to(o.cycles / seconds, 1)},
                 {"cpu", cpu_json},
                 {"samples", samples}};
    if (!first_error.empty()) result["first_error"] = first_error;
    if (o.server_pid && end["rss_anon_kb"].is_number() && samples.size() > 1 && samples[1]["rss_anon_kb"].is_number()) {
        // From the first tenth (allocator and tables warmed up) to the end.
        const OJson& warm = samples[1];
        const double cycles_after = o.cycles - warm["cycles"].get<double>();
        const double growth_kb = end["rss_anon_kb"].get<double>() - warm["rss_anon_kb"].get<double>();
        result["server"] = OJson{
            {"rss_anon_growth_kb_after_first_tenth", growth_kb},
            {"rss_anon_bytes_per_cycle_after_first_tenth", round_to(growth_kb * 1024 / cycles_after, 3)},
            {"open_files_before", before["open_files"]},
            {"open_files_end", end["open_files"]},
        };
    }
    log("churn: " + std::to_string(o.cycles) + " cycles in " + std::to_string(seconds) + " s, " +
        std::to_string(failed.load()) + " failed");
    return result;
}

bench::PoolConfig broadcast_pool_config(const Options& o, int phases) {
    bench::PoolConfig c = pool_config(o, bench::Mode::Broadcast);
    c.broadcast_group_size = o.warmup_broadcasts + o.broadcasts;
    c.broadcast_slots = c.broadcast_group_size * phases;
    c.broadcast_skip = o.warmup_broadcasts;
    return c;
}

OJson run_broadcast(const Options& o) {
    OJson result;
    bench::Pool pool(broadcast_pool_config(o, 1));
    auto r = connect_pool(pool, o);
    result["connect"] = connect_json(r, pool);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    bench::HttpClient http(bench::parse_ipv4(broadcast_address(o)), broadcast_address(o));
    std::optional<bench::Rss> before;
    if (o.server_pid) before = bench::read_rss(o.server_pid);
    log("broadcast: " + std::to_string(o.broadcasts) + " broadcasts (" + o.mode + ") to " +
        std::to_string(pool.open_connections()) + " clients");
    BroadcastRun run = run_broadcasts(pool, http, o, 0, pool.open_connections());
    for (auto& [k, v] : run.json.items()) result[k] = v;
    if (o.server_pid)
        result["server"] = OJson{
            {"pid", o.server_pid}, {"before", rss_json(before)}, {"end", rss_json(bench::read_rss(o.server_pid))}};
    return result;
}

// ---- send ----

OJson run_send(const Options& o) {
    bench::SendConfig c;
    c.pool = pool_config(o, bench::Mode::Deliver);
    c.pool.id_prefix = o.id_prefix;
    c.pool.id_in_path = o.id_in_path;
    c.api = bench::parse_ipv4(o.api);
    c.api_host = o.api;
    c.post_path = o.post_path;
    c.body = o.body;
    c.content_type = o.content_type;
    c.publishers = o.publishers;
    c.pipeline = o.pipeline;
    c.rate = o.rate;
    c.warmup_s = o.warmup_s;
    c.duration_s = o.duration_s;
    c.drain_s = o.drain_s;
    c.settle_s = o.settle_s;
    c.tick_us = o.tick_us;
    c.max_lag_s = o.max_lag_s;
    c.server_pid = o.server_pid;
    // NAME=PID,NAME=PID
    std::size_t start = 0;
    while (start < o.extra_pids.size()) {
        std::size_t end = o.extra_pids.find(',', start);
        std::string item = o.extra_pids.substr(start, end == std::string::npos ? std::string::npos : end - start);
        start = end == std::string::npos ? o.extra_pids.size() : end + 1;
        auto eq = item.find('=');
        if (eq == std::string::npos) throw std::invalid_argument("--extra-pids: expected NAME=PID, got " + item);
        c.extra_pids.emplace_back(item.substr(0, eq), static_cast<pid_t>(std::stol(item.substr(eq + 1))));
    }
    return bench::run_send(std::move(c));
}

// ---- soak, stream, mailbox (soak_bench.cpp) ----

OJson run_soak(const Options& o) {
    bench::SoakConfig c;
    c.pool = pool_config(o, bench::Mode::Deliver);
    c.pool.id_prefix = o.id_prefix;
    c.api = bench::parse_ipv4(o.api);
    c.api_host = o.api;
    if (!o.admin.empty()) {
        c.admin = bench::parse_ipv4(o.admin);
        c.admin_host = o.admin;
    }
    c.server_pid = o.server_pid;
    c.duration_s = o.duration_s;
    c.rate = o.rate;
    c.broadcast_rate = o.broadcast_rate;
    c.churn_rate = o.churn_rate;
    c.churn_path = o.churn_path;
    c.publishers = o.publishers;
    c.interval_s = o.interval_s;
    if (o.warmup_given) c.warmup_s = o.warmup_s;
    c.grace_s = o.grace_s;
    c.max_rss_drift = o.max_rss_drift;
    c.max_p99_ratio = o.max_p99_ratio;
    c.csv = o.csv;
    return bench::run_soak(std::move(c));
}

OJson run_stream(const Options& o) {
    bench::StreamConfig c;
    c.api = bench::parse_ipv4(o.api);
    c.api_host = o.api;
    c.post_path = o.post_path;
    if (o.body != Options{}.body) c.body = o.body;
    c.rate = o.rate;
    c.duration_s = o.duration_s;
    c.publishers = o.publishers;
    c.acked_file = o.acked;
    c.seconds_csv = o.seconds_csv;
    return bench::run_stream(c);
}

OJson run_mailbox(const Options& o) {
    bench::MailboxConfig c;
    const sockaddr_in addr = bench::parse_ipv4(o.ws);
    c.ws_host = o.ws.substr(0, o.ws.rfind(':'));
    c.ws_port = ntohs(addr.sin_port);
    c.uname = o.uname;
    c.pwd = o.pwd;
    c.acked_file = o.acked;
    c.quiet_s = o.quiet_s;
    c.max_s = o.max_s;
    return bench::run_mailbox(c);
}

// ---- slow ----

// A blocking client with a tiny receive buffer that completes the handshake and then never reads.
struct SlowClient {
    int fd = -1;
    std::uint16_t local_port = 0;
    int rcvbuf = 0;
    ~SlowClient() {
        if (fd >= 0) ::close(fd);
    }
};

void open_slow_client(SlowClient& sc, const Options& o) {
    sockaddr_in target = bench::parse_ipv4(o.ws);
    sc.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sc.fd < 0) throw std::runtime_error(std::string("slow client: socket: ") + strerror(errno));
    // Before connect(), so the window announced in the SYN is already small.
    setsockopt(sc.fd, SOL_SOCKET, SO_RCVBUF, &o.slow_rcvbuf, sizeof o.slow_rcvbuf);
    socklen_t len = sizeof sc.rcvbuf;
    getsockopt(sc.fd, SOL_SOCKET, SO_RCVBUF, &sc.rcvbuf, &len);
    timeval tv{5, 0};
    setsockopt(sc.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (::connect(sc.fd, reinterpret_cast<const sockaddr*>(&target), sizeof target) != 0)
        throw std::runtime_error(std::string("slow client: connect: ") + strerror(errno));
    sockaddr_in local{};
    len = sizeof local;
    getsockname(sc.fd, reinterpret_cast<sockaddr*>(&local), &len);
    sc.local_port = ntohs(local.sin_port);
    auto up = hydra::ws::make_upgrade_request(o.ws, o.path);
    if (::send(sc.fd, up.request.data(), up.request.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(up.request.size()))
        throw std::runtime_error("slow client: cannot send the upgrade request");
    // Read the 101 byte by byte so that nothing after it is consumed.
    std::string in;
    for (;;) {
        char ch;
        ssize_t n = ::recv(sc.fd, &ch, 1, 0);
        if (n <= 0) throw std::runtime_error("slow client: no handshake answer");
        in.push_back(ch);
        if (in.size() >= 4 && in.compare(in.size() - 4, 4, "\r\n\r\n") == 0) break;
    }
    auto r = hydra::ws::parse_upgrade_response(in, up.key);
    if (r.status != hydra::ws::ParseStatus::Ok) throw std::runtime_error("slow client: handshake: " + r.error);
}

// Sends echo requests the slow client will never read the answers of, until `bytes` are sent, the server stops
// reading (send blocked for 2 s) or the connection breaks.
OJson fill_slow_client(SlowClient& sc, double megabytes) {
    const std::size_t target = static_cast<std::size_t>(megabytes * 1024 * 1024);
    std::string frame = hydra::ws::encode_frame_masked(hydra::ws::Opcode::Binary, std::string(16384, 's'),
                                                       hydra::ws::random_mask_key());
    timeval tv{2, 0};
    setsockopt(sc.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::size_t sent = 0;
    std::string stopped = "done";
    std::int64_t start = bench::now_ns();
    while (sent < target) {
        std::size_t off = 0;
        while (off < frame.size()) {
            ssize_t n = ::send(sc.fd, frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += static_cast<std::size_t>(n);
                sent += static_cast<std::size_t>(n);
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            stopped = (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                          ? "server stopped reading (send blocked 2 s)"
                          : std::string("connection broken: ") + strerror(errno);
            break;
        }
        if (stopped != "done") break;
    }
    return OJson{{"requested_bytes", target},
                 {"sent_bytes", sent},
                 {"seconds", round_to(static_cast<double>(bench::now_ns() - start) / 1e9, 3)},
                 {"result", stopped}};
}

OJson slow_client_state(const SlowClient& sc, std::uint16_t server_port) {
    bench::TcpEntry e = bench::find_tcp_entry(server_port, sc.local_port);
    tcp_info info{};
    socklen_t len = sizeof info;
    int client_state = getsockopt(sc.fd, IPPROTO_TCP, TCP_INFO, &info, &len) == 0 ? info.tcpi_state : 0;
    int client_unsent = 0;
    ioctl(sc.fd, SIOCOUTQ, &client_unsent);
    bool held = e.found && e.inode != 0 && e.state == 1;
    return OJson{{"server_socket_found", e.found},
                 {"server_socket_state", e.found ? bench::tcp_state_name(e.state) : "gone"},
                 {"server_socket_held_by_process", e.found && e.inode != 0},
                 {"server_kernel_send_queue_bytes", e.tx_queue},
                 {"server_kernel_unread_bytes", e.rx_queue},
                 {"client_kernel_unsent_bytes", client_unsent},
                 {"client_socket_state", bench::tcp_state_name(client_state)},
                 {"disconnected", !held}};
}

OJson run_slow(const Options& o) {
    OJson result;
    bench::Pool pool(broadcast_pool_config(o, 3));
    auto r = connect_pool(pool, o);
    result["connect"] = connect_json(r, pool);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    bench::HttpClient http(bench::parse_ipv4(broadcast_address(o)), broadcast_address(o));
    const int expected = pool.open_connections();

    // Baseline, with the slow client, baseline again after it left: the two baselines bracket the slow run, so
    // a drift of the machine shows up as a difference between them instead of passing for an effect.
    log("slow: baseline run without the slow client");
    BroadcastRun base = run_broadcasts(pool, http, o, 0, expected);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));

    std::optional<bench::Rss> rss_before;
    if (o.server_pid) rss_before = bench::read_rss(o.server_pid);
    std::optional<bench::RssSampler> sampler;
    if (o.server_pid) sampler.emplace(o.server_pid, 10);
    SlowClient sc;
    open_slow_client(sc, o);
    log("slow: slow client connected from port " + std::to_string(sc.local_port) + ", SO_RCVBUF " +
        std::to_string(sc.rcvbuf));
    OJson fill = OJson{{"requested_bytes", 0}};
    if (o.slow_fill_mb > 0) {
        fill = fill_slow_client(sc, o.slow_fill_mb);
        log("slow: fill " + fill.dump());
    }
    const std::int64_t fill_end = bench::now_ns();
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    std::optional<bench::Rss> rss_filled;
    if (o.server_pid) rss_filled = bench::read_rss(o.server_pid);

    log("slow: run with the slow client");
    const int per_phase = o.warmup_broadcasts + o.broadcasts;
    BroadcastRun slow = run_broadcasts(pool, http, o, per_phase, expected);
    // A server may take a while to drop the connection (hydra waits ws.close_timeout_ms for the close handshake):
    // poll its side of the connection for up to --slow-wait seconds.
    std::uint16_t server_port = ntohs(bench::parse_ipv4(o.ws).sin_port);
    OJson state = slow_client_state(sc, server_port);
    const std::int64_t wait_until = bench::now_ns() + static_cast<std::int64_t>(o.slow_wait_s * 1e9);
    while (!state["disconnected"].get<bool>() && bench::now_ns() < wait_until) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        state = slow_client_state(sc, server_port);
    }
    state["seen_after_fill_s"] = round_to(static_cast<double>(bench::now_ns() - fill_end) / 1e9, 3);
    std::optional<bench::Rss> rss_after;
    if (o.server_pid) rss_after = bench::read_rss(o.server_pid);
    std::optional<bench::Rss> peak;
    if (sampler) {
        peak = sampler->peak();
        sampler.reset();
    }
    ::close(sc.fd);
    sc.fd = -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    log("slow: baseline run after the slow client left");
    BroadcastRun after = run_broadcasts(pool, http, o, 2 * per_phase, expected);

    result["baseline"] = base.json;
    result["with_slow_client"] = slow.json;
    result["baseline_after"] = after.json;
    auto ratio = [](double with, double a, double b) -> OJson {
        double base_mean = (a + b) / 2;
        return base_mean > 0 ? OJson(round_to(with / base_mean, 3)) : OJson(nullptr);
    };
    auto spread = [](double a, double b) -> OJson {
        return a + b > 0 ? OJson(round_to(std::abs(a - b) / ((a + b) / 2), 3)) : OJson(nullptr);
    };
    // with / mean of the two baselines; the spread of the baselines is the noise floor of that ratio.
    result["delivery_p99_ratio"] = ratio(slow.delivery_p99_ms, base.delivery_p99_ms, after.delivery_p99_ms);
    result["completion_p99_ratio"] = ratio(slow.completion_p99_ms, base.completion_p99_ms, after.completion_p99_ms);
    // The same for the median broadcast: a moment of lost CPU (steal) moves a p99 by tens of percent, the median
    // of 200 broadcasts hardly.
    result["completion_p50_ratio"] = ratio(slow.completion_p50_ms, base.completion_p50_ms, after.completion_p50_ms);
    result["baseline_completion_p50_spread"] = spread(base.completion_p50_ms, after.completion_p50_ms);
    result["baseline_delivery_p99_spread"] = spread(base.delivery_p99_ms, after.delivery_p99_ms);
    result["baseline_completion_p99_spread"] = spread(base.completion_p99_ms, after.completion_p99_ms);
    OJson slow_json{
        {"rcvbuf_requested", o.slow_rcvbuf}, {"rcvbuf_actual", sc.rcvbuf}, {"path", o.path}, {"fill", fill}};
    for (auto& [k, v] : state.items()) slow_json[k] = v;
    result["slow_client"] = slow_json;
    if (o.server_pid) {
        OJson srv{{"pid", o.server_pid},
                  {"before_slow_client", rss_json(rss_before)},
                  {"after_fill", rss_json(rss_filled)},
                  {"peak", rss_json(peak)},
                  {"end", rss_json(rss_after)}};
        if (rss_before && peak) {
            srv["growth_peak_kb"] = OJson{{"vm_rss_kb", peak->vm_rss_kb - rss_before->vm_rss_kb},
                                          {"rss_anon_kb", peak->rss_anon_kb - rss_before->rss_anon_kb}};
        }
        result["server"] = srv;
    }
    return result;
}

}  // namespace

int run_queue_bench(const std::vector<std::string>& args);   // queue_bench.cpp
int run_floor_server(const std::vector<std::string>& args);  // floor_server.cpp

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    // `hydra-bench queue ...`: the queue backends, in-process (no server).
    if (argc > 1 && std::string(argv[1]) == "queue") return run_queue_bench({argv + 2, argv + argc});
    // `hydra-bench floor ...`: the floor peer, a server (floor_server.cpp).
    if (argc > 1 && std::string(argv[1]) == "floor") return run_floor_server({argv + 2, argv + argc});
    // `hydra-bench kafka-mock`: a mock Kafka cluster driven from stdin (soak_bench.cpp).
    if (argc > 1 && std::string(argv[1]) == "kafka-mock") return bench::run_kafka_mock();
    Options o;
    try {
        o = parse_args(argc, argv);
    } catch (const std::exception& e) {
        std::cerr << "hydra-bench: " << e.what() << "\n\n" << kUsage;
        return 2;
    }
    long nofile = bench::raise_nofile_limit();
    if (nofile > 0 && nofile < o.connections + 64)
        log("warning: open files limited to " + std::to_string(nofile) + ", fewer than the connections asked for");

    OJson result{{"scenario", o.scenario},
                 {"label", o.label},
                 {"ws", o.ws},
                 {"api", o.api.empty() ? OJson(nullptr) : OJson(o.api)},
                 {"admin", o.admin.empty() ? OJson(nullptr) : OJson(o.admin)},
                 {"connections_requested", o.connections},
                 {"client_threads", o.threads},
                 {"started_at", iso_now()}};
    try {
        OJson body;
        if (o.scenario == "idle")
            body = run_idle(o);
        else if (o.scenario == "echo")
            body = run_echo(o);
        else if (o.scenario == "broadcast")
            body = run_broadcast(o);
        else if (o.scenario == "send")
            body = run_send(o);
        else if (o.scenario == "churn")
            body = run_churn(o);
        else if (o.scenario == "soak")
            body = run_soak(o);
        else if (o.scenario == "stream")
            body = run_stream(o);
        else if (o.scenario == "mailbox")
            body = run_mailbox(o);
        else
            body = run_slow(o);
        for (auto& [k, v] : body.items()) result[k] = v;
    } catch (const std::exception& e) {
        result["error"] = e.what();
        log(std::string("error: ") + e.what());
    }
    std::string text = result.dump(2);
    std::cout << text << std::endl;
    if (!o.out.empty()) {
        std::ofstream f(o.out);
        f << text << '\n';
        if (!f) {
            log("cannot write " + o.out);
            return 1;
        }
    }
    return result.contains("error") ? 1 : 0;
}
