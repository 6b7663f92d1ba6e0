// hydra-bench soak, stream and mailbox: the long and the fault runs (tests/soak/soak.sh, tests/faults/*.sh), one
// file each (soak_bench.cpp, stream_bench.cpp, mailbox_bench.cpp), and the Kafka mock they use (kafka_mock.cpp).
//   soak     hold N clients; POST /msg/send at R/s (message k to client k % N), broadcasts at B/s, C extra
//            connect/disconnect cycles per second; every interval a CSV row with the server's RSS, open files, CPU,
//            queue depth (from its /metrics) and the interval's delivery p99; at the end every acknowledged message
//            is checked one by one and the pass criteria are printed.
//   stream   POST a templated body at R/s for S seconds, no clients: records which posts were acknowledged (2xx),
//            per second statuses and answer times; survives a server that dies and comes back (reconnects).
//   mailbox  log in as a user over WebSocket, read the mailbox until it stays quiet, and compare the "seq=" of
//            what arrived with the acknowledged seqs the stream wrote: lost, duplicates, extra.
#pragma once

#include <netinet/in.h>
#include <sys/types.h>

#include <string>

#include "pool.h"
#include "util.h"

namespace bench {

struct SoakConfig {
    PoolConfig pool;  // the held clients: Mode::deliver, id_prefix set (deliver_capacity is filled in)
    sockaddr_in api{};
    std::string api_host;
    sockaddr_in admin{};     // where GET /metrics is read ("" host: /proc only)
    std::string admin_host;  // "" = no metrics endpoint
    pid_t server_pid = 0;    // /proc fallback for RSS, open files and CPU
    double duration_s = 600;
    double rate = 1000;          // /msg/send per second
    double broadcast_rate = 10;  // /msg/broadcast per second
    double churn_rate = 50;      // connect + disconnect cycles per second on extra connections
    std::string churn_path = "/echo";
    int publishers = 16;
    double interval_s = 5;  // one CSV row per interval
    double warmup_s = 120;  // RSS drift is measured from here
    double grace_s = 30;    // after the last post: how long acknowledged messages may still arrive
    double max_rss_drift = 0.05;
    double max_p99_ratio = 2;  // last quarter's median p99 over the second quarter's
    std::string csv;           // interval rows
};

// Runs the soak; the result as JSON (pass criteria under "pass"). Throws on setup errors.
OJson run_soak(SoakConfig config);

struct StreamConfig {
    sockaddr_in api{};
    std::string api_host;
    std::string post_path = "/msg/send";
    std::string body = R"({"uname":"alice","msg":"seq={seq}"})";  // template: {seq}, {ts}, {id} (= "s<seq>")
    double rate = 200;
    double duration_s = 60;
    int publishers = 8;
    std::string acked_file;   // one acknowledged seq per line
    std::string seconds_csv;  // per second: statuses and answer times
};
OJson run_stream(const StreamConfig& config);

struct MailboxConfig {
    std::string ws_host;
    int ws_port = 0;
    std::string uname = "alice";
    std::string pwd = "alice-pw";
    std::string acked_file;  // written by stream
    double quiet_s = 10;     // stop reading after this long without a message
    double max_s = 600;
};
OJson run_mailbox(const MailboxConfig& config);

// A librdkafka mock cluster with one broker in this process: prints "bootstrap <host:port>", then reads commands
// on stdin: "down" (the broker refuses connections, keeps its data and port), "up", "quit" (or EOF).
int run_kafka_mock();

}  // namespace bench
