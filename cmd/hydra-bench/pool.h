// A pool of non-blocking WebSocket client connections spread over a few epoll threads. Each thread owns its
// connections (no locking on the hot path); statistics are per thread, read by the main thread under a mutex that
// the thread holds only while it processes one batch of events. A driven pool (PoolConfig::driven) has no thread:
// its one epoll is polled by the caller's event loop (event_fd(), drive()). With PoolConfig::tls the connections speak
// TLS (wss://) with OpenSSL on the same non-blocking sockets.
#pragma once

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "util.h"

using SSL_CTX = struct ssl_ctx_st;

namespace bench {

enum class Mode : std::uint8_t { idle, echo, broadcast, deliver };

struct PoolConfig {
    sockaddr_in target{};
    std::string host;  // Host header, "127.0.0.1:PORT"
    std::string path = "/echo";
    int connections = 1000;
    int threads = 1;
    // No thread of its own: one set of connections whose epoll (event_fd()) the caller watches and serves with
    // drive(), so a load generator on one core wakes once for its publishers' answers and the deliveries they
    // cause instead of once per thread.
    bool driven = false;
    int connect_concurrency = 256;  // handshakes in progress at once, all threads together
    std::int64_t handshake_timeout_ns = 10'000'000'000;
    Mode mode = Mode::idle;
    int echo_window = 1;           // echo: messages in flight per connection
    std::size_t echo_bytes = 32;   // echo: text message size (>= 16: the send time in hex, then filler)
    int broadcast_slots = 0;       // broadcast: number of distinct seq values (0 .. slots-1)
    int broadcast_group_size = 1;  // broadcast: delivery latencies are kept per group of seq values (seq / size)
    int broadcast_skip = 0;        // broadcast: seq % group_size below this (warmup) is left out of the latencies
    bool bind_ports = true;        // choose local ports ourselves (see Pool::bind_local_port); loopback targets only
    bool tls = false;              // wss://: a TLS handshake after connect(), then the upgrade and frames over TLS
    // Per-connection ids: when id_prefix is set, connection i (0 .. connections-1, across all threads) sends
    // `X-Request-Id: <id_prefix><i>` with its upgrade and, with id_in_path, connects to path + "<id_prefix><i>"
    // (nchan's /sub/<channel>).
    std::string id_prefix;
    bool id_in_path = false;
    // Deliver: messages carry "ts=<ns>" (when the message was due, CLOCK_MONOTONIC) and optionally "seq=<k>"; with
    // a seq below deliver_capacity, arrivals are counted per message (missing, duplicates) and message k is
    // expected on connection k % connections.
    std::size_t deliver_capacity = 0;
};

// Per-thread counters and histograms. Values are sums over the thread's connections.
struct Stats {
    Histogram connect_latency;         // socket() to the 101 answer
    std::uint64_t closed_by_peer = 0;  // open connections the server closed (EOF, RST or Close frame)
    std::uint64_t protocol_errors = 0;
    std::uint64_t unexpected_messages = 0;
    std::uint64_t pings = 0;

    // Echo
    Histogram echo_latency;  // round trips completed inside the measurement window
    std::uint64_t echo_in_window = 0;
    std::uint64_t echo_total = 0;
    std::uint64_t echo_bad = 0;
    std::uint64_t inflight = 0;

    // Broadcast
    std::vector<Histogram> delivery_latency;            // per group: arrival - the "ts" in the message (send time)
    std::vector<Histogram> delivery_latency_scheduled;  // per group: arrival - set_scheduled() time, when set
    std::vector<std::int64_t> last_arrival;             // per seq: latest arrival on this thread (0 = none)
    std::uint64_t deliveries = 0;
    std::uint64_t out_of_order = 0;  // a seq that is not the previous one + 1 on the same connection
    std::uint64_t bad_messages = 0;  // not a notify frame with ts and seq
    std::size_t min_payload = 0;
    std::size_t max_payload = 0;

    // Deliver (bad_messages: no "ts=<digits>" in it)
    Histogram deliver_latency;                  // arrival - ts, for messages due inside the window
    std::uint64_t delivered = 0;                // every message with a ts, duplicates included
    std::uint64_t delivered_in_window = 0;      // arrival inside the window
    std::uint64_t delivered_due_in_window = 0;  // due inside the window (= deliver_latency's count)
    std::uint64_t duplicates = 0;               // a seq seen before (on any connection)
    std::uint64_t misrouted = 0;                // seq % connections is not this connection's index
    std::uint64_t without_seq = 0;              // messages with a ts but no seq (not tracked one by one)
    // Deliver, messages carrying "bc=<k>" (broadcasts of the soak scenario): counted apart, latency from their ts
    std::uint64_t broadcast_deliveries = 0;
    Histogram broadcast_latency;
};

class Pool {
  public:
    explicit Pool(PoolConfig config);
    ~Pool();  // closes every connection and joins the threads
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    struct ConnectResult {
        int open = 0;
        int failed = 0;
        std::int64_t started_ns = 0;
        std::int64_t finished_ns = 0;
        std::vector<std::string> errors;  // first few distinct failure reasons
    };
    // Opens all connections (at most connect_concurrency handshakes at once); returns once every one is open or
    // has failed.
    ConnectResult connect_all();

    // Driven pool: the epoll descriptor that becomes readable when a connection has something to handle, and one
    // pass over what is ready (waiting up to timeout_ms for it).
    int event_fd() const;
    void drive(int timeout_ms);

    // Connections open right now (handshake done, not closed since).
    int open_connections() const { return open_.load(); }

    // Echo: every open connection sends `echo_window` messages and then one more per echo received, until
    // echo_stop(). Round trips whose echo arrives within [from, to] are counted and their latency recorded.
    void echo_start(std::int64_t from_ns, std::int64_t to_ns);
    void echo_stop();

    // Broadcast: how many connections received seq so far.
    std::uint32_t received(int seq) const { return received_[static_cast<std::size_t>(seq)].load(); }
    // Broadcast: when seq was meant to be posted (paced mode). Set before posting it; latencies are then also
    // measured from this time, which keeps a server that delays the poster from hiding its queueing.
    void set_scheduled(int seq, std::int64_t ns) { scheduled_[static_cast<std::size_t>(seq)].store(ns); }

    // Deliver: messages due in [from, to) go into deliver_latency; arrivals in [from, to) count as
    // delivered_in_window. Set before the first message is due.
    void deliver_window(std::int64_t from_ns, std::int64_t to_ns) {
        window_from_.store(from_ns);
        window_to_.store(to_ns);
    }
    // Deliver: how many times message seq arrived (saturates at 255); 0 for seq >= deliver_capacity.
    std::uint8_t arrivals(std::size_t seq) const {
        return seq < config_.deliver_capacity ? arrivals_[seq].load(std::memory_order_relaxed) : 0;
    }

    // With tls: the protocol version and cipher of the first connection that finished its TLS handshake
    // ("TLSv1.3 TLS_AES_256_GCM_SHA384"); "" before that or without tls.
    std::string tls_description() const;

    // Runs fn on each thread's stats while holding that thread's lock.
    void with_stats(const std::function<void(const Stats&)>& fn) const;
    // All threads' stats merged (histograms added, per-seq arrivals maxed, counters summed).
    Stats merged_stats() const;

  private:
    struct Worker;
    friend struct Worker;

    PoolConfig config_;
    SSL_CTX* tls_ctx_ = nullptr;  // with config_.tls; shared by the workers (SSL_new is thread-safe)
    std::vector<std::unique_ptr<Worker>> workers_;
    std::atomic<bool> connecting_{false};
    std::atomic<bool> quit_{false};
    std::atomic<int> open_{0};
    std::atomic<int> done_{0};  // connections open or failed during connect_all
    std::atomic<int> failed_{0};
    std::atomic<bool> echo_sending_{false};
    std::atomic<int> echo_generation_{0};
    std::atomic<std::int64_t> echo_from_{0};
    std::atomic<std::int64_t> echo_to_{0};
    std::unique_ptr<std::atomic<std::uint32_t>[]> received_;
    std::unique_ptr<std::atomic<std::int64_t>[]> scheduled_;
    std::unique_ptr<std::atomic<std::uint8_t>[]> arrivals_;  // deliver: per seq
    std::atomic<std::int64_t> window_from_{0};
    std::atomic<std::int64_t> window_to_{0};
    int port_lo_ = 0;
    int port_hi_ = 0;
    std::atomic<int> next_port_{0};

    void bind_local_port(int fd);
};

}  // namespace bench
