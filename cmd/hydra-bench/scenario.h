// What the load scenarios share: the command line (Options) and connecting a pool of clients and reporting on it.
// One file per scenario: idle_bench.cpp, echo_bench.cpp, broadcast_bench.cpp (broadcast), slow_bench.cpp,
// churn_bench.cpp; send_bench.cpp, soak_bench.cpp, stream_bench.cpp and mailbox_bench.cpp take their own config
// structs (send_bench.h, soak_bench.h), filled from Options in main.cpp.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pool.h"
#include "util.h"

namespace bench::scenario {

extern const char* const kUsage;

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

// The options of `hydra-bench SCENARIO ...`; throws std::invalid_argument naming what is wrong.
Options parse_args(int argc, char** argv);

// A load scenario: its name on the command line and what runs it (the fields of the result).
struct Scenario {
    std::string_view name;
    OJson (*run)(const Options& o);
};
// The scenario called `name` (the table is in main.cpp); nullptr if there is none.
const Scenario* find_scenario(std::string_view name);

void log(const std::string& msg);
std::string iso_now();
OJson rss_json(const std::optional<Rss>& r);
PoolConfig pool_config(const Options& o, Mode mode);
// Server CPU time per message (µs): the meter's server seconds over `messages`; null without a server PID.
OJson cpu_us_per_msg(const OJson& cpu, std::uint64_t messages);
OJson connect_json(const Pool::ConnectResult& r, const Pool& pool);
// Connects every client of `pool` (logging the outcome); throws when none could connect.
Pool::ConnectResult connect_pool(Pool& pool, const Options& o);

// The scenarios: the fields of the result.
OJson run_idle(const Options& o);
OJson run_echo(const Options& o);
OJson run_broadcast(const Options& o);
OJson run_slow(const Options& o);
OJson run_churn(const Options& o);

}  // namespace bench::scenario
