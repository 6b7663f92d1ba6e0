// hydra-bench helpers: clock, pacing and progress waits, latency histogram, /proc readers, address parsing, a tiny
// blocking HTTP client.
#pragma once

#include <netinet/in.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

namespace bench {

using OJson = nlohmann::ordered_json;

// CLOCK_MONOTONIC in nanoseconds: the same clock for the poster and every client thread.
std::int64_t now_ns();
void sleep_until_ns(std::int64_t deadline);

// Open-loop pacing: message k of a run at `rate` per second starting at t0 (ns) is due at t0 + k / rate.
std::int64_t due_time(std::int64_t t0, double rate, std::uint64_t k);
// due_time() of messages 0 .. count-1.
std::vector<std::int64_t> due_times(std::int64_t t0, double rate, std::size_t count);
// How many of `count` messages are due at `now` (0 before t0).
std::uint64_t due_count(std::int64_t now, std::int64_t t0, double rate, std::uint64_t count);

// Calls fn(k, due) for k = 0, 1, ... at its due_time(), sleeping until then, while that is before `end` and `stop`
// is not set: a load of its own next to the main one (a soak's broadcasts, its connect/disconnect churn).
template <class F>
void run_paced(std::int64_t t0, std::int64_t end, double rate, const std::atomic<bool>& stop, F&& fn) {
    if (rate <= 0) return;
    for (std::uint64_t k = 0; !stop.load(); ++k) {
        const std::int64_t due = due_time(t0, rate, k);
        if (due >= end) return;
        sleep_until_ns(due);
        fn(k, due);
    }
}

// What a wait_for_progress() probe reports: whether the wait is over, and a count that grows while things happen.
struct Progress {
    bool done = false;
    std::uint64_t count = 0;
};
// Calls probe() every `period` until it reports done (true) or its count has not moved for `stall_ns` (false): a
// wait for deliveries that may never all come, bounded by how long nothing happens rather than by a fixed time.
// The counts live in other threads' statistics with nothing to wait on, hence the polling.
template <class Probe>
bool wait_for_progress(Probe&& probe, std::int64_t stall_ns, std::chrono::nanoseconds period) {
    std::uint64_t last = 0;
    std::int64_t last_progress = now_ns();
    for (;;) {
        const Progress p = probe();
        if (p.done) return true;
        const std::int64_t now = now_ns();
        if (p.count != last) {
            last = p.count;
            last_progress = now;
        } else if (now - last_progress > stall_ns) {
            return false;
        }
        std::this_thread::sleep_for(period);
    }
}

// Log-linear histogram of non-negative values (ns): 64 sub-buckets per power of two, so a percentile is exact
// to within 1/64 (~1.6 %). Fixed 32 KB, no allocation while recording.
class Histogram {
  public:
    void record(std::int64_t value);
    void merge(const Histogram& other);
    // What was recorded after `earlier` (a copy of this histogram taken before): min, max and mean from the
    // buckets, so as exact as the buckets.
    Histogram since(const Histogram& earlier) const;
    std::uint64_t count() const { return count_; }
    std::int64_t min() const { return count_ ? min_ : 0; }
    std::int64_t max() const { return max_; }
    double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }
    // Value at quantile q (0..1): the midpoint of the bucket holding that rank, clamped to [min, max].
    std::int64_t percentile(double q) const;
    // {"count", "p50", "p90", "p99", "p999", "max", "mean"} in milliseconds.
    OJson to_json_ms() const;

  private:
    static constexpr int kBuckets = 4096;
    static int index_of(std::uint64_t v);
    static std::uint64_t value_of(int index);

    std::array<std::uint64_t, kBuckets> counts_{};
    std::uint64_t count_ = 0;
    std::int64_t min_ = 0;
    std::int64_t max_ = 0;
    long double sum_ = 0;
};

double ms(std::int64_t ns);
double round_to(double v, int digits);
// `v` with `digits` decimals, as text.
std::string fixed(double v, int digits);
// "hydra-bench: <what>: <msg>" on stderr.
void log(const std::string& what, const std::string& msg);

// The memory lines of /proc/PID/status (kB). nullopt when the process is gone.
struct Rss {
    long vm_rss_kb = 0;
    long rss_anon_kb = 0;
    OJson to_json() const { return OJson{{"vm_rss_kb", vm_rss_kb}, {"rss_anon_kb", rss_anon_kb}}; }
};
std::optional<Rss> read_rss(pid_t pid);

// CPU time (user + system, all threads) of a process from /proc/PID/stat, in seconds; nullopt when it is gone.
std::optional<double> process_cpu_seconds(pid_t pid);

// CPU time per thread name (the `comm` of /proc/PID/task/TID/stat: "hydra-ws-io", ...), summed over the threads of
// that name, in seconds. Empty when the process is gone. Threads that exit in between drop out of a difference.
struct ThreadCpu {
    double seconds = 0;
    int threads = 0;
};
std::map<std::string, ThreadCpu> thread_cpu_seconds(pid_t pid);
// end - start per name, in cores over wall_s seconds: {"name": {"cores": C, "threads": N}}, busiest first.
OJson thread_cpu_json(const std::map<std::string, ThreadCpu>& start, const std::map<std::string, ThreadCpu>& end,
                      double wall_s);

// The machine's busy time from the first line of /proc/stat, in seconds: all but softirq, and softirq.
struct SystemCpu {
    double busy_s = 0;  // user, nice, system, irq
    double softirq_s = 0;
    double steal_s = 0;  // time the hypervisor gave this VM's CPUs to someone else
};
SystemCpu system_cpu_seconds();

// CPU used between construction and to_json(), in cores (1.0 = one core busy all the time): by the server (by PID),
// by this process, in softirq (loopback TCP), and by everything else on the machine ("other", which should be
// near 0: anything else running disturbs the measurement). Also the server's CPU time itself ("server_s", seconds;
// /proc counts it in clock ticks, 10 ms), for CPU per message.
class CpuMeter {
  public:
    explicit CpuMeter(pid_t server_pid);
    OJson to_json() const;

  private:
    pid_t server_pid_;
    std::int64_t start_ns_;
    std::optional<double> server_start_;
    double self_start_;
    SystemCpu system_start_;
};

// Samples a process's RSS every `period_ms` on its own thread and keeps the maximum of each line.
class RssSampler {
  public:
    RssSampler(pid_t pid, int period_ms);
    ~RssSampler();
    Rss peak() const;

  private:
    pid_t pid_;
    int period_ms_;
    std::atomic<bool> stop_{false};
    std::atomic<long> peak_rss_{0};
    std::atomic<long> peak_anon_{0};
    std::thread thread_;
};

// "127.0.0.1:9087" -> sockaddr_in (IPv4 literal only; port 0, "any free port", only if allowed: an address to
// listen on). Throws std::invalid_argument.
sockaddr_in parse_ipv4(const std::string& host_port, bool allow_port_0 = false);

// Open files of a process (entries of /proc/PID/fd); -1 when it is gone.
long open_files(pid_t pid);

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
long raise_nofile_limit();

// Server-side view of one TCP connection, from /proc/net/tcp (local port = server, remote port = client).
struct TcpEntry {
    bool found = false;
    int state = 0;               // TCP_ESTABLISHED = 1, ...
    std::uint64_t tx_queue = 0;  // bytes in the send queue not yet acknowledged
    std::uint64_t rx_queue = 0;
    std::uint64_t inode = 0;  // 0 once no process holds the socket (closed, orphaned)
};
TcpEntry find_tcp_entry(std::uint16_t local_port, std::uint16_t remote_port);
std::string tcp_state_name(int state);

// A blocking HTTP/1.1 client on one keep-alive connection (reconnects when the server closes it).
class HttpClient {
  public:
    HttpClient(sockaddr_in addr, std::string host);
    ~HttpClient();
    HttpClient(const HttpClient&) = delete;
    HttpClient& operator=(const HttpClient&) = delete;

    struct Response {
        int status = 0;
        std::string body;
    };
    // POST `body` (application/json) to `path`. Throws std::runtime_error on I/O errors or a malformed answer.
    Response post(std::string_view path, std::string_view body);
    // Sends the request only; finish with read_response(). Lets the caller take its timestamp right before send().
    void send_post(std::string_view path, std::string_view body);
    Response read_response();
    // GET `path`. Throws like post().
    Response get(std::string_view path);

  private:
    void connect_();
    void close_();
    void send_request(const std::string& req);
    void read_more();

    sockaddr_in addr_;
    std::string host_;
    int fd_ = -1;
    std::string buf_;
};

}  // namespace bench
