// hydra-bench send: the end-to-end push path. N WebSocket clients with chosen ids; M keep-alive HTTP publisher
// connections post messages, each addressed to one client (message k to client k % N), paced at a fixed rate
// (open loop) or as fast as the connections allow (closed loop); every message carries the time it was due, and
// the clients measure delivery latency from that schedule. Works against any server: the request path and body
// are templates ({id}, {ts}, {seq}).
#pragma once

#include <netinet/in.h>
#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "pool.h"
#include "util.h"

namespace bench {

struct SendConfig {
    PoolConfig pool;  // the clients: Mode::deliver, id_prefix set (deliver_capacity is filled in by run_send)
    sockaddr_in api{};
    std::string api_host;                                               // Host header of the posts, "127.0.0.1:PORT"
    std::string post_path = "/msg/send";                                // template
    std::string body = R"({"uuid":"{id}","msg":"ts={ts} seq={seq}"})";  // template
    std::string content_type = "application/json";
    int publishers = 16;  // keep-alive HTTP connections
    int pipeline = 1;     // requests in flight per publisher connection
    double rate = 10000;  // messages per second; 0 = closed loop (as fast as publishers x pipeline allow)
    double warmup_s = 2;  // sent at the same rate before the measured window
    double duration_s = 10;
    double drain_s = 5;    // after the last post: wait until no delivery arrived for this long
    double settle_s = 1;   // pause between the last connection and the first post
    double max_lag_s = 5;  // paced: a message that cannot be sent within this of its due time is skipped
    double tick_us = 100;  // the publisher sleeps at least this long between batches (paced)
    pid_t server_pid = 0;  // CPU, per-thread CPU and RSS of this process
    std::vector<std::pair<std::string, pid_t>> extra_pids;  // more processes whose CPU is reported (name, pid)
};

// Connects the clients, runs the posts, waits for the deliveries; the result as JSON. Throws on setup errors.
OJson run_send(SendConfig config);

}  // namespace bench
