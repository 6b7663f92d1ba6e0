// hydra-bench: a load generator for any server speaking hydra's WebSocket protocol (hydra itself, or the node `ws`
// peer in tests/bench/node_peer.js; the send scenario also nginx + Nchan), plus the floor peer and in-process queue
// and Kafka-mock tools. `hydra-bench help` lists the scenarios (scenario.cpp); results as JSON on stdout and --out.
#include <netinet/in.h>

#include <csignal>
#include <fstream>
#include <iostream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "scenario.h"
#include "send_bench.h"
#include "soak_bench.h"

namespace bench::scenario {
namespace {

// What the send, soak and stream configs share: the API they post to, with how many connections, at what rate, for
// how long.
template <class Config>
void set_posting(Config& c, const Options& o) {
    c.api = bench::parse_ipv4(o.api);
    c.api_host = o.api;
    c.publishers = o.publishers;
    c.rate = o.rate;
    c.duration_s = o.duration_s;
}

// The clients of send and soak: each with its own id, counting what is delivered to it.
bench::PoolConfig deliver_pool(const Options& o) {
    bench::PoolConfig c = pool_config(o, bench::Mode::deliver);
    c.id_prefix = o.id_prefix;
    return c;
}

// ---- send (send_bench.cpp) ----

OJson run_send(const Options& o) {
    bench::SendConfig c;
    c.pool = deliver_pool(o);
    c.pool.id_in_path = o.id_in_path;
    set_posting(c, o);
    c.post_path = o.post_path;
    c.body = o.body;
    c.content_type = o.content_type;
    c.pipeline = o.pipeline;
    c.warmup_s = o.warmup_s;
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

// ---- soak, stream, mailbox (soak_bench.cpp, stream_bench.cpp, mailbox_bench.cpp) ----

OJson run_soak(const Options& o) {
    bench::SoakConfig c;
    c.pool = deliver_pool(o);
    set_posting(c, o);
    if (!o.admin.empty()) {
        c.admin = bench::parse_ipv4(o.admin);
        c.admin_host = o.admin;
    }
    c.server_pid = o.server_pid;
    c.broadcast_rate = o.broadcast_rate;
    c.churn_rate = o.churn_rate;
    c.churn_path = o.churn_path;
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
    set_posting(c, o);
    c.post_path = o.post_path;
    if (o.body != Options{}.body) c.body = o.body;
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

const Scenario kScenarios[] = {
    {"idle", run_idle}, {"echo", run_echo},     {"broadcast", run_broadcast},
    {"slow", run_slow}, {"send", run_send},     {"churn", run_churn},
    {"soak", run_soak}, {"stream", run_stream}, {"mailbox", run_mailbox},
};

}  // namespace

const Scenario* find_scenario(std::string_view name) {
    for (const Scenario& s : kScenarios)
        if (s.name == name) return &s;
    return nullptr;
}

}  // namespace bench::scenario

int run_queue_bench(const std::vector<std::string>& args);   // queue_bench.cpp
int run_floor_server(const std::vector<std::string>& args);  // floor_server.cpp
int run_kafka_relay(const std::vector<std::string>& args);   // kafka_relay.cpp

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    // `hydra-bench queue ...`: the queue backends, in-process (no server).
    if (argc > 1 && std::string(argv[1]) == "queue") return run_queue_bench({argv + 2, argv + argc});
    // `hydra-bench floor ...`: the floor peer, a server (floor_server.cpp).
    if (argc > 1 && std::string(argv[1]) == "floor") return run_floor_server({argv + 2, argv + argc});
    // `hydra-bench kafka-mock`: a mock Kafka cluster driven from stdin (kafka_mock.cpp).
    if (argc > 1 && std::string(argv[1]) == "kafka-mock") return bench::run_kafka_mock();
    // `hydra-bench kafka-relay ...`: the Kafka floor of the two-host push path (kafka_relay.cpp).
    if (argc > 1 && std::string(argv[1]) == "kafka-relay") return run_kafka_relay({argv + 2, argv + argc});
    using namespace bench::scenario;
    using bench::OJson;
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
        OJson body = find_scenario(o.scenario)->run(o);
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
