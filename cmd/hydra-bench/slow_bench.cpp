// slow: broadcasts without, with, and again without one extra client that never reads: whether one slow reader
// slows the others down, and whether the server lets it go.
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <thread>

#include "broadcast_bench.h"
#include "ws/frame.h"
#include "ws/handshake.h"

namespace bench::scenario {

namespace {

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
    if (r.status != hydra::ws::ParseStatus::ok) throw std::runtime_error("slow client: handshake: " + r.error);
}

// Sends echo requests the slow client will never read the answers of, until `bytes` are sent, the server stops
// reading (send blocked for 2 s) or the connection breaks.
OJson fill_slow_client(SlowClient& sc, double megabytes) {
    const std::size_t target = static_cast<std::size_t>(megabytes * 1024 * 1024);
    std::string frame =
        hydra::ws::encode_frame_masked(hydra::WsOpcode::binary, std::string(16384, 's'), hydra::ws::random_mask_key());
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

}  // namespace

OJson run_slow(const Options& o) {
    OJson result;
    bench::Pool pool(broadcast_pool_config(o, 3));
    bench::HttpClient http = connect_for_broadcasts(pool, o, result);
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

}  // namespace bench::scenario
