#include "pool.h"

#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include "ws/frame.h"
#include "ws/handshake.h"

namespace bench {

namespace ws = hydra::ws;

namespace {

constexpr std::size_t kReadBuffer = 64 * 1024;
constexpr std::size_t kMaxReadPerEvent = 256 * 1024;
constexpr int kMaxEvents = 512;
constexpr std::size_t kMaxMessage = 1 << 20;

// "ts" and "seq" of a notify frame: {"service":"notify","code":200,"data":{"ts":N,"seq":K,"pad":"..."}} in any key
// order.
bool find_int(std::string_view s, std::string_view key, std::int64_t& out) {
    auto p = s.find(key);
    if (p == std::string_view::npos) return false;
    const char* first = s.data() + p + key.size();
    auto r = std::from_chars(first, s.data() + s.size(), out);
    return r.ec == std::errc() && r.ptr != first;
}

bool parse_hex16(std::string_view s, std::int64_t& out) {
    if (s.size() < 16) return false;
    std::uint64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + 16, v, 16);
    if (r.ec != std::errc() || r.ptr != s.data() + 16) return false;
    out = static_cast<std::int64_t>(v);
    return true;
}

// OpenSSL's reason for the last failure on this thread, or `fallback`; clears the error queue.
std::string tls_error(const char* fallback) {
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e == 0) return fallback;
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

}  // namespace

struct Conn {
    enum class State : std::uint8_t { idle, connecting, tls_handshaking, handshaking, open, closed };

    int fd = -1;
    // With PoolConfig::tls, from connect() on: OpenSSL between memory BIOs; the pool does the socket I/O itself.
    SSL* ssl = nullptr;
    std::string tls_out;  // records not yet sent (`out` holds the frames before they are encrypted)
    State state = State::idle;
    bool want_out = false;  // EPOLLOUT registered
    std::uint32_t inflight = 0;
    std::int32_t last_seq = -1;
    std::int64_t started_ns = 0;
    std::string key;  // Sec-WebSocket-Key until the 101 is checked
    std::string in;   // handshake answer bytes
    std::string out;  // unsent bytes
    std::optional<ws::MessageDecoder> decoder;
};

struct Pool::Worker {
    Worker(Pool& p, int idx, int count, int concurrency, int first)
        : pool(p), index(idx), first_id(first), conns(static_cast<std::size_t>(count)) {
        max_inflight_connects = std::max(1, concurrency);
        epfd = epoll_create1(EPOLL_CLOEXEC);
        read_buffer.resize(kReadBuffer);
        rng ^= static_cast<std::uint64_t>(idx + 1) * 0x9E3779B97F4A7C15ULL ^ static_cast<std::uint64_t>(now_ns());
        const auto& cfg = pool.config_;
        stats.delivery_latency.resize(
            cfg.broadcast_slots > 0 ? static_cast<std::size_t>((cfg.broadcast_slots + cfg.broadcast_group_size - 1) /
                                                               std::max(1, cfg.broadcast_group_size))
                                    : 0);
        stats.delivery_latency_scheduled.resize(stats.delivery_latency.size());
        stats.last_arrival.assign(static_cast<std::size_t>(std::max(0, cfg.broadcast_slots)), 0);
        if (!cfg.driven) thread = std::thread([this] { run(); });
    }
    ~Worker() {
        if (thread.joinable()) thread.join();
        // Abortive close (RST): no TIME_WAIT left behind on the client side. Tens of thousands of TIME_WAIT sockets
        // from earlier runs make connect() slow to find a free ephemeral port and skew the next connect rate.
        linger abort{1, 0};
        for (auto& c : conns) {
            if (c.ssl) SSL_free(c.ssl);  // no close_notify: the socket is reset right after
            if (c.fd < 0) continue;
            setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
            ::close(c.fd);
        }
        if (epfd >= 0) ::close(epfd);
    }

    void run();
    void poll_once(int timeout_ms);
    void start_connects(std::int64_t now);
    void check_timeouts(std::int64_t now);
    void on_event(std::uint32_t index, std::uint32_t events);
    void on_connected(Conn& c);
    void send_upgrade(Conn& c);
    void tls_handshake(Conn& c);
    void on_readable(Conn& c);
    void on_readable_tls(Conn& c);
    template <class Consume>
    bool read_socket(Conn& c, Consume&& consume);
    bool tls_read(Conn& c);
    // Inlined: the plaintext path stays what it was before TLS was added, bar one pointer check.
    [[gnu::always_inline]] void on_bytes(Conn& c, const std::uint8_t* data, std::size_t len, std::int64_t now);
    void on_handshake_bytes(Conn& c, std::int64_t now);
    void on_frames(Conn& c, const std::uint8_t* data, std::size_t len, std::int64_t now);
    void on_message(Conn& c, std::string_view msg, std::int64_t now);
    void on_delivery(Conn& c, std::string_view msg, std::int64_t now);
    void send_echo(Conn& c, std::int64_t now);
    void flush(Conn& c);
    void flush_tls(Conn& c);
    [[gnu::always_inline]] void send_buffer(Conn& c, std::string& buf);
    void set_events(Conn& c, bool want_out);
    void fail(Conn& c, const std::string& why);
    void close_conn(Conn& c, bool by_peer);
    // The connection broke: an open one is closed (by_peer: counted as closed by the server), one still connecting
    // failed with `why`.
    void lose(Conn& c, bool by_peer, const std::string& why) {
        if (c.state == Conn::State::open)
            close_conn(c, by_peer);
        else
            fail(c, why);
    }
    // A cheap per-thread mask key (xorshift) instead of random_mask_key()'s random_device: the load generator is not
    // a browser, and the servers do not care how keys are chosen.
    ws::MaskKey next_mask() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        const auto word = static_cast<std::uint32_t>(rng);
        ws::MaskKey key;
        std::memcpy(key.data(), &word, key.size());
        return key;
    }

    Pool& pool;
    int index;
    int first_id;  // the pool-wide index of conns[0] (per-connection ids)
    std::vector<Conn> conns;
    int epfd = -1;
    std::thread thread;
    std::vector<std::uint8_t> read_buffer;
    std::uint64_t rng = 0x2545F4914F6CDD1DULL;

    std::size_t next_connect = 0;
    int connects_in_progress = 0;
    int max_inflight_connects = 1;
    int echo_generation = 0;
    std::int64_t next_timeout_check = 0;

    mutable std::mutex mutex;  // guards stats, errors and tls_description
    Stats stats;
    std::set<std::string> errors;
    std::string tls_description;
};

void Pool::Worker::run() {
    while (!pool.quit_.load(std::memory_order_relaxed)) poll_once(2);
}

void Pool::Worker::poll_once(int timeout_ms) {
    epoll_event events[kMaxEvents];
    int n = epoll_wait(epfd, events, kMaxEvents, timeout_ms);
    std::lock_guard lock(mutex);
    std::int64_t now = now_ns();
    for (int i = 0; i < n; ++i) on_event(events[i].data.u32, events[i].events);
    if (pool.connecting_.load(std::memory_order_relaxed)) {
        start_connects(now);
        if (now >= next_timeout_check) {
            check_timeouts(now);
            next_timeout_check = now + 100'000'000;
        }
    }
    int gen = pool.echo_generation_.load(std::memory_order_acquire);
    if (gen != echo_generation) {
        echo_generation = gen;
        if (pool.echo_sending_.load()) {
            for (auto& c : conns) {
                if (c.state != Conn::State::open) continue;
                for (int k = 0; k < pool.config_.echo_window; ++k) send_echo(c, now_ns());
                flush(c);
            }
        }
    }
}

void Pool::Worker::start_connects(std::int64_t now) {
    while (connects_in_progress < max_inflight_connects && next_connect < conns.size()) {
        Conn& c = conns[next_connect];
        auto idx = static_cast<std::uint32_t>(next_connect++);
        c.started_ns = now;
        c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (c.fd < 0) {
            c.state = Conn::State::connecting;
            ++connects_in_progress;
            fail(c, std::string("socket: ") + strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c.state = Conn::State::connecting;
        ++connects_in_progress;
        pool.bind_local_port(c.fd);
        int rc = ::connect(c.fd, reinterpret_cast<const sockaddr*>(&pool.config_.target), sizeof(sockaddr_in));
        if (rc != 0 && errno != EINPROGRESS) {
            fail(c, std::string("connect: ") + strerror(errno));
            continue;
        }
        epoll_event ev{};
        ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
        ev.data.u32 = idx;
        c.want_out = true;
        epoll_ctl(epfd, EPOLL_CTL_ADD, c.fd, &ev);
        if (rc == 0) on_connected(c);
    }
}

void Pool::Worker::check_timeouts(std::int64_t now) {
    if (connects_in_progress == 0) return;
    for (auto& c : conns) {
        if ((c.state == Conn::State::connecting || c.state == Conn::State::tls_handshaking ||
             c.state == Conn::State::handshaking) &&
            now - c.started_ns > pool.config_.handshake_timeout_ns)
            fail(c, "handshake timeout");
    }
}

void Pool::Worker::on_event(std::uint32_t idx, std::uint32_t events) {
    Conn& c = conns[idx];
    if (c.fd < 0) return;
    if (c.state == Conn::State::connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            fail(c, std::string("connect: ") + strerror(err));
            return;
        }
        if (events & (EPOLLOUT | EPOLLIN)) on_connected(c);
        return;
    }
    if (events & EPOLLOUT) {
        flush(c);
        if (c.fd < 0) return;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP | EPOLLERR)) on_readable(c);
}

void Pool::Worker::on_connected(Conn& c) {
    if (pool.tls_ctx_ == nullptr) {
        send_upgrade(c);
        return;
    }
    c.ssl = SSL_new(pool.tls_ctx_);
    BIO* rbio = BIO_new(BIO_s_mem());
    BIO* wbio = BIO_new(BIO_s_mem());
    if (c.ssl == nullptr || rbio == nullptr || wbio == nullptr) {
        BIO_free(rbio);
        BIO_free(wbio);
        fail(c, "tls: " + tls_error("out of memory"));
        return;
    }
    BIO_set_mem_eof_return(rbio, -1);  // empty = "want read", not the end of the stream
    SSL_set_bio(c.ssl, rbio, wbio);
    SSL_set_connect_state(c.ssl);
    c.state = Conn::State::tls_handshaking;
    tls_handshake(c);
}

// Drives the handshake: what it writes goes out through flush(); its input comes from on_readable_tls.
void Pool::Worker::tls_handshake(Conn& c) {
    int rc = SSL_do_handshake(c.ssl);
    if (rc == 1) {
        if (tls_description.empty())
            tls_description = std::string(SSL_get_version(c.ssl)) + " " + SSL_get_cipher_name(c.ssl);
        send_upgrade(c);  // flushes the handshake's last flight with the upgrade request
        return;
    }
    if (SSL_get_error(c.ssl, rc) != SSL_ERROR_WANT_READ) {
        fail(c, "tls handshake: " + tls_error("failed"));
        return;
    }
    flush(c);
}

void Pool::Worker::send_upgrade(Conn& c) {
    const PoolConfig& cfg = pool.config_;
    hydra::HeaderFields headers;
    std::string path = cfg.path;
    if (!cfg.id_prefix.empty()) {
        std::string id = cfg.id_prefix + std::to_string(first_id + (&c - conns.data()));
        if (cfg.id_in_path) path += id;
        headers.emplace_back("X-Request-Id", std::move(id));
    }
    auto up = ws::make_upgrade_request(cfg.host, path, headers);
    c.key = std::move(up.key);
    c.out = std::move(up.request);
    c.state = Conn::State::handshaking;
    flush(c);
}

void Pool::Worker::set_events(Conn& c, bool want_out) {
    if (c.fd < 0 || c.want_out == want_out) return;
    c.want_out = want_out;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0u);
    ev.data.u32 = static_cast<std::uint32_t>(&c - conns.data());
    epoll_ctl(epfd, EPOLL_CTL_MOD, c.fd, &ev);
}

void Pool::Worker::flush(Conn& c) {
    if (c.ssl) {
        flush_tls(c);
        return;
    }
    send_buffer(c, c.out);
}

// Sends buf (the connection's frames, or with TLS its records) as far as the socket takes it; EPOLLOUT while some
// is left.
inline void Pool::Worker::send_buffer(Conn& c, std::string& buf) {
    std::size_t off = 0;
    while (off < buf.size()) {
        ssize_t n = ::send(c.fd, buf.data() + off, buf.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
            off += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        lose(c, true, std::string("send: ") + strerror(errno));
        return;
    }
    if (off == buf.size()) {
        buf.clear();
        if (buf.capacity() > 4096) std::string().swap(buf);
    } else {
        buf.erase(0, off);
    }
    set_events(c, !buf.empty());
}

// Encrypts the queued frames (once the handshake is done) into the write BIO, which takes everything, moves the
// records from there to tls_out, and sends that: per flush one SSL_write and the same send() as without TLS.
void Pool::Worker::flush_tls(Conn& c) {
    if (!c.out.empty() && c.state != Conn::State::tls_handshaking) {
        if (SSL_write(c.ssl, c.out.data(), static_cast<int>(c.out.size())) <= 0) {
            lose(c, false, "tls write: " + tls_error("failed"));
            return;
        }
        c.out.clear();
        if (c.out.capacity() > 4096) std::string().swap(c.out);
    }
    BIO* wbio = SSL_get_wbio(c.ssl);
    if (const std::size_t pending = BIO_ctrl_pending(wbio); pending > 0) {
        const std::size_t base = c.tls_out.size();
        c.tls_out.resize(base + pending);
        const int n = BIO_read(wbio, c.tls_out.data() + base, static_cast<int>(pending));
        c.tls_out.resize(base + static_cast<std::size_t>(std::max(n, 0)));
    }
    send_buffer(c, c.tls_out);
}

inline void Pool::Worker::on_bytes(Conn& c, const std::uint8_t* data, std::size_t len, std::int64_t now) {
    if (c.state == Conn::State::handshaking) {
        c.in.append(reinterpret_cast<const char*>(data), len);
        on_handshake_bytes(c, now);
    } else if (c.state == Conn::State::open) {
        on_frames(c, data, len, now);
    }
}

// The recv() loop of a readable connection: at most kMaxReadPerEvent bytes, each read into read_buffer and handed
// to consume(bytes), which returns false once the connection is gone. A short read drained the socket: the recv()
// that would only say EAGAIN is skipped (epoll is level-triggered, so anything arriving later is reported again).
// The end of the stream or an error closes an open connection and fails one still connecting. False once it is gone.
template <class Consume>
inline bool Pool::Worker::read_socket(Conn& c, Consume&& consume) {
    std::size_t total = 0;
    while (total < kMaxReadPerEvent) {
        ssize_t n = ::recv(c.fd, read_buffer.data(), read_buffer.size(), 0);
        if (n > 0) {
            total += static_cast<std::size_t>(n);
            if (!consume(static_cast<std::size_t>(n))) return false;
            if (static_cast<std::size_t>(n) < read_buffer.size()) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        lose(c, true, n == 0 ? "closed during handshake" : std::string("recv: ") + strerror(errno));
        return false;
    }
    return true;
}

// What arrives goes into the read BIO and comes out decrypted (read_buffer is free again once the BIO has copied it).
void Pool::Worker::on_readable_tls(Conn& c) {
    const bool open = read_socket(c, [&](std::size_t n) {
        BIO_write(SSL_get_rbio(c.ssl), read_buffer.data(), static_cast<int>(n));
        return tls_read(c);
    });
    if (open && (!c.out.empty() || BIO_ctrl_pending(SSL_get_wbio(c.ssl)) > 0)) flush(c);
}

// Feeds what the read BIO holds to the handshake or, after it, decrypts it into read_buffer and passes it on.
// False once the connection is gone.
bool Pool::Worker::tls_read(Conn& c) {
    if (c.state == Conn::State::tls_handshaking) {
        tls_handshake(c);
        if (c.fd < 0) return false;
        if (c.state == Conn::State::tls_handshaking) return true;
    }
    for (;;) {
        const int n = SSL_read(c.ssl, read_buffer.data(), static_cast<int>(read_buffer.size()));
        if (n > 0) {
            on_bytes(c, read_buffer.data(), static_cast<std::size_t>(n), now_ns());
            if (c.fd < 0) return false;
            continue;
        }
        const int err = SSL_get_error(c.ssl, n);
        if (err == SSL_ERROR_WANT_READ) return true;
        const std::string why =
            err == SSL_ERROR_ZERO_RETURN ? "closed (close_notify)" : "tls read: " + tls_error("failed");
        lose(c, err == SSL_ERROR_ZERO_RETURN, why);
        return false;
    }
}

void Pool::Worker::on_readable(Conn& c) {
    if (c.ssl) {
        on_readable_tls(c);
        return;
    }
    const bool open = read_socket(c, [&](std::size_t n) {
        on_bytes(c, read_buffer.data(), n, now_ns());
        return c.fd >= 0;
    });
    if (open && !c.out.empty()) flush(c);
}

void Pool::Worker::on_handshake_bytes(Conn& c, std::int64_t now) {
    auto r = ws::parse_upgrade_response(c.in, c.key);
    if (r.status == ws::ParseStatus::need_more) return;
    if (r.status == ws::ParseStatus::error) {
        fail(c, "handshake: " + (r.http_status ? "HTTP " + std::to_string(r.http_status) + ": " : std::string()) +
                    r.error);
        return;
    }
    c.state = Conn::State::open;
    c.decoder.emplace(kMaxMessage, ws::Role::client);
    std::string().swap(c.key);
    --connects_in_progress;
    stats.connect_latency.record(now - c.started_ns);
    pool.open_.fetch_add(1);
    pool.done_.fetch_add(1);
    std::string rest = c.in.substr(r.consumed);
    std::string().swap(c.in);
    if (!rest.empty()) on_frames(c, reinterpret_cast<const std::uint8_t*>(rest.data()), rest.size(), now);
    // A connection opened while an echo run is on joins it.
    if (c.fd >= 0 && pool.config_.mode == Mode::echo && pool.echo_sending_.load() && c.inflight == 0)
        for (int k = 0; k < pool.config_.echo_window; ++k) send_echo(c, now);
}

void Pool::Worker::on_frames(Conn& c, const std::uint8_t* data, std::size_t len, std::int64_t now) {
    ws::MessageDecoder& d = *c.decoder;
    d.feed(data, len);
    ws::Event ev;
    while (d.next(ev)) {
        switch (ev.type) {
            case ws::Event::Type::text:
            case ws::Event::Type::binary:
                on_message(c, ev.data, now);
                break;
            case ws::Event::Type::ping:
                ++stats.pings;
                ws::append_frame_masked(c.out, hydra::WsOpcode::pong, ev.data, next_mask());
                break;
            case ws::Event::Type::pong:
                break;
            case ws::Event::Type::close:
                ws::append_frame_masked(c.out, hydra::WsOpcode::close, {}, next_mask());
                flush(c);
                if (c.fd >= 0) close_conn(c, true);
                return;
            case ws::Event::Type::error:
                ++stats.protocol_errors;
                close_conn(c, false);
                return;
        }
    }
}

void Pool::Worker::on_message(Conn& c, std::string_view msg, std::int64_t now) {
    const PoolConfig& cfg = pool.config_;
    switch (cfg.mode) {
        case Mode::idle:
            ++stats.unexpected_messages;
            return;
        case Mode::echo: {
            std::int64_t sent = 0;
            if (msg.size() != cfg.echo_bytes || !parse_hex16(msg, sent)) {
                ++stats.echo_bad;
                return;
            }
            ++stats.echo_total;
            if (c.inflight > 0) --c.inflight;
            if (stats.inflight > 0) --stats.inflight;
            if (now >= pool.echo_from_.load(std::memory_order_relaxed) &&
                now <= pool.echo_to_.load(std::memory_order_relaxed)) {
                ++stats.echo_in_window;
                stats.echo_latency.record(now - sent);
            }
            if (pool.echo_sending_.load(std::memory_order_relaxed)) send_echo(c, now);
            return;
        }
        case Mode::broadcast: {
            std::int64_t ts = 0, seq = -1;
            if (msg.find("\"service\":\"notify\"") == std::string_view::npos || !find_int(msg, "\"ts\":", ts) ||
                !find_int(msg, "\"seq\":", seq) || seq < 0 || seq >= cfg.broadcast_slots) {
                ++stats.bad_messages;
                return;
            }
            auto s = static_cast<std::size_t>(seq);
            ++stats.deliveries;
            if (stats.min_payload == 0 || msg.size() < stats.min_payload) stats.min_payload = msg.size();
            stats.max_payload = std::max(stats.max_payload, msg.size());
            if (seq != c.last_seq + 1) ++stats.out_of_order;
            c.last_seq = static_cast<std::int32_t>(seq);
            const auto group_size = static_cast<std::size_t>(cfg.broadcast_group_size);
            if (s % group_size >= static_cast<std::size_t>(cfg.broadcast_skip)) {
                stats.delivery_latency[s / group_size].record(now - ts);
                if (std::int64_t scheduled = pool.scheduled_[s].load(std::memory_order_relaxed); scheduled > 0)
                    stats.delivery_latency_scheduled[s / group_size].record(now - scheduled);
            }
            stats.last_arrival[s] = std::max(stats.last_arrival[s], now);
            pool.received_[s].fetch_add(1, std::memory_order_relaxed);
            return;
        }
        case Mode::deliver:
            on_delivery(c, msg, now);
            return;
    }
}

// A message of the send scenario: "ts=<ns>" (when it was due) and maybe "seq=<k>" anywhere in it, so that the
// same code reads hydra's {"service":"notify",...,"data":{"msg":"ts=.. seq=..",...}} and nchan's raw body.
void Pool::Worker::on_delivery(Conn& c, std::string_view msg, std::int64_t now) {
    const PoolConfig& cfg = pool.config_;
    std::int64_t ts = 0, seq = -1;
    if (!find_int(msg, "ts=", ts)) {
        ++stats.bad_messages;
        return;
    }
    if (std::int64_t bc = 0; find_int(msg, "bc=", bc)) {
        ++stats.broadcast_deliveries;
        stats.broadcast_latency.record(now - ts);
        return;
    }
    ++stats.delivered;
    if (stats.min_payload == 0 || msg.size() < stats.min_payload) stats.min_payload = msg.size();
    stats.max_payload = std::max(stats.max_payload, msg.size());
    const std::int64_t from = pool.window_from_.load(std::memory_order_relaxed);
    const std::int64_t to = pool.window_to_.load(std::memory_order_relaxed);
    if (now >= from && now < to) ++stats.delivered_in_window;
    bool first_arrival = true;
    if (find_int(msg, "seq=", seq) && seq >= 0) {
        const auto k = static_cast<std::size_t>(seq);
        if (k % static_cast<std::size_t>(cfg.connections) != static_cast<std::size_t>(first_id + (&c - conns.data())))
            ++stats.misrouted;
        if (k < cfg.deliver_capacity) {
            // Saturating count: compare-exchange so a 256th duplicate does not wrap to "never arrived".
            auto& slot = pool.arrivals_[k];
            std::uint8_t n = slot.load(std::memory_order_relaxed);
            while (n < 255 && !slot.compare_exchange_weak(n, static_cast<std::uint8_t>(n + 1))) {
            }
            if (n > 0) {
                ++stats.duplicates;
                first_arrival = false;
            }
        }
    } else {
        ++stats.without_seq;
    }
    // Latency of first arrivals only: a duplicate redelivered seconds later says nothing about the path.
    if (first_arrival && ts >= from && ts < to) {
        ++stats.delivered_due_in_window;
        stats.deliver_latency.record(now - ts);
    }
}

void Pool::Worker::send_echo(Conn& c, std::int64_t now) {
    // 16 hex digits of the send time, then filler up to echo_bytes.
    char payload[4096];
    std::size_t size = std::min<std::size_t>(pool.config_.echo_bytes, sizeof payload);
    static const char kHex[] = "0123456789abcdef";
    auto t = static_cast<std::uint64_t>(now);
    for (int i = 15; i >= 0; --i) {
        payload[i] = kHex[t & 0xF];
        t >>= 4;
    }
    for (std::size_t i = 16; i < size; ++i) payload[i] = static_cast<char>('a' + i % 26);
    ws::append_frame_masked(c.out, hydra::WsOpcode::text, std::string_view(payload, size), next_mask());
    ++c.inflight;
    ++stats.inflight;
}

void Pool::Worker::fail(Conn& c, const std::string& why) {
    if (errors.size() < 8) errors.insert(why);
    if (c.ssl) {
        SSL_free(c.ssl);
        c.ssl = nullptr;
    }
    if (c.fd >= 0) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, c.fd, nullptr);
        ::close(c.fd);
    }
    c.fd = -1;
    c.state = Conn::State::closed;
    std::string().swap(c.key);
    std::string().swap(c.in);
    std::string().swap(c.out);
    std::string().swap(c.tls_out);
    --connects_in_progress;
    pool.failed_.fetch_add(1);
    pool.done_.fetch_add(1);
}

void Pool::Worker::close_conn(Conn& c, bool by_peer) {
    if (c.fd < 0) return;
    if (c.ssl) {
        SSL_free(c.ssl);  // no close_notify: the benchmark only ever drops connections at its end
        c.ssl = nullptr;
    }
    epoll_ctl(epfd, EPOLL_CTL_DEL, c.fd, nullptr);
    ::close(c.fd);
    c.fd = -1;
    if (by_peer) ++stats.closed_by_peer;
    if (c.state == Conn::State::open) pool.open_.fetch_sub(1);
    c.state = Conn::State::closed;
    stats.inflight -= std::min<std::uint64_t>(stats.inflight, c.inflight);
    c.inflight = 0;
    std::string().swap(c.out);
    std::string().swap(c.tls_out);
    c.decoder.reset();
}

// ---------------------------------------------------------------------------------------------------------------

// connect() picks ephemeral ports even ones first and scans the whole even half before it tries odd ones, so with
// more than half of ip_local_port_range in use each connect() walks thousands of ports (~0.2 ms per connection at
// 19,000 connections: the client, not the server, would set the connect rate). Binding the ports ourselves, in
// order, costs one bind() each. Ports that are taken are skipped; after a full turn the kernel chooses again.
void Pool::bind_local_port(int fd) {
    if (port_lo_ == 0) return;
    const int span = port_hi_ - port_lo_ + 1;
    sockaddr_in local{};
    local.sin_family = AF_INET;
    local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int tries = 0; tries < span; ++tries) {
        int port = port_lo_ + next_port_.fetch_add(1, std::memory_order_relaxed) % span;
        local.sin_port = htons(static_cast<std::uint16_t>(port));
        if (::bind(fd, reinterpret_cast<const sockaddr*>(&local), sizeof local) == 0) return;
        if (errno != EADDRINUSE) return;
    }
}

Pool::Pool(PoolConfig config) : config_(std::move(config)) {
    if (config_.bind_ports && config_.target.sin_addr.s_addr == htonl(INADDR_LOOPBACK)) {
        std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
        int lo = 0, hi = 0;
        if (range >> lo >> hi && lo > 0 && hi >= lo) {
            port_lo_ = lo;
            port_hi_ = hi;
            next_port_.store(static_cast<int>(now_ns() % (hi - lo + 1)));
        }
    }
    if (config_.tls) {
        tls_ctx_ = SSL_CTX_new(TLS_client_method());
        if (tls_ctx_ == nullptr) throw std::runtime_error("tls: " + tls_error("SSL_CTX_new failed"));
        // Loopback benchmarking against a throwaway self-signed certificate: the server's certificate is not
        // verified (and no SNI is sent). What is measured is the record layer, the same either way.
        SSL_CTX_set_verify(tls_ctx_, SSL_VERIFY_NONE, nullptr);
        SSL_CTX_set_min_proto_version(tls_ctx_, TLS1_2_VERSION);
        // The connections run OpenSSL between memory BIOs and do their own recv()/send(): one of each per read or
        // flush as without TLS (a socket BIO reads a record's header and body with two recv()s, or with
        // read-ahead needs a last recv() to find the socket empty), which keeps the client's cost from limiting
        // the server.
    }
    config_.threads = config_.driven ? 1 : std::max(1, std::min(config_.threads, config_.connections));
    config_.broadcast_group_size = std::max(1, config_.broadcast_group_size);
    const auto slots = static_cast<std::size_t>(std::max(1, config_.broadcast_slots));
    received_ = std::make_unique<std::atomic<std::uint32_t>[]>(slots);
    scheduled_ = std::make_unique<std::atomic<std::int64_t>[]>(slots);
    if (config_.deliver_capacity > 0)
        arrivals_ = std::make_unique<std::atomic<std::uint8_t>[]>(config_.deliver_capacity);  // zeroed (C++20)
    int first = 0;
    for (int i = 0; i < config_.threads; ++i) {
        int count = config_.connections / config_.threads + (i < config_.connections % config_.threads ? 1 : 0);
        int concurrency = config_.connect_concurrency / config_.threads;
        workers_.push_back(std::make_unique<Worker>(*this, i, count, concurrency, first));
        first += count;
    }
}

Pool::~Pool() {
    quit_.store(true);
    workers_.clear();
    if (tls_ctx_) SSL_CTX_free(tls_ctx_);
}

std::string Pool::tls_description() const {
    for (auto& w : workers_) {
        std::lock_guard lock(w->mutex);
        if (!w->tls_description.empty()) return w->tls_description;
    }
    return {};
}

Pool::ConnectResult Pool::connect_all() {
    ConnectResult r;
    r.started_ns = now_ns();
    connecting_.store(true);
    while (done_.load() < config_.connections) {
        if (config_.driven)
            drive(2);
        else
            std::this_thread::sleep_for(std::chrono::microseconds(500));
    }
    r.finished_ns = now_ns();
    connecting_.store(false);
    r.open = config_.connections - failed_.load();
    r.failed = failed_.load();
    std::set<std::string> all;
    for (auto& w : workers_) {
        std::lock_guard lock(w->mutex);
        all.insert(w->errors.begin(), w->errors.end());
    }
    r.errors.assign(all.begin(), all.end());
    return r;
}

int Pool::event_fd() const {
    if (!config_.driven) throw std::logic_error("Pool::event_fd: the pool has threads of its own");
    return workers_.front()->epfd;
}

void Pool::drive(int timeout_ms) {
    if (!config_.driven) throw std::logic_error("Pool::drive: the pool has threads of its own");
    workers_.front()->poll_once(timeout_ms);
}

void Pool::echo_start(std::int64_t from_ns, std::int64_t to_ns) {
    echo_from_.store(from_ns);
    echo_to_.store(to_ns);
    echo_sending_.store(true);
    echo_generation_.fetch_add(1, std::memory_order_release);
}

void Pool::echo_stop() { echo_sending_.store(false); }

void Pool::with_stats(const std::function<void(const Stats&)>& fn) const {
    for (auto& w : workers_) {
        std::lock_guard lock(w->mutex);
        fn(w->stats);
    }
}

Stats Pool::merged_stats() const {
    Stats m;
    with_stats([&m](const Stats& s) {
        m.connect_latency.merge(s.connect_latency);
        m.closed_by_peer += s.closed_by_peer;
        m.protocol_errors += s.protocol_errors;
        m.unexpected_messages += s.unexpected_messages;
        m.pings += s.pings;
        m.echo_latency.merge(s.echo_latency);
        m.echo_in_window += s.echo_in_window;
        m.echo_total += s.echo_total;
        m.echo_bad += s.echo_bad;
        m.inflight += s.inflight;
        if (m.delivery_latency.size() < s.delivery_latency.size()) m.delivery_latency.resize(s.delivery_latency.size());
        for (std::size_t i = 0; i < s.delivery_latency.size(); ++i) m.delivery_latency[i].merge(s.delivery_latency[i]);
        if (m.delivery_latency_scheduled.size() < s.delivery_latency_scheduled.size())
            m.delivery_latency_scheduled.resize(s.delivery_latency_scheduled.size());
        for (std::size_t i = 0; i < s.delivery_latency_scheduled.size(); ++i)
            m.delivery_latency_scheduled[i].merge(s.delivery_latency_scheduled[i]);
        if (m.last_arrival.size() < s.last_arrival.size()) m.last_arrival.resize(s.last_arrival.size(), 0);
        for (std::size_t i = 0; i < s.last_arrival.size(); ++i)
            m.last_arrival[i] = std::max(m.last_arrival[i], s.last_arrival[i]);
        m.deliveries += s.deliveries;
        m.out_of_order += s.out_of_order;
        m.bad_messages += s.bad_messages;
        if (s.min_payload && (m.min_payload == 0 || s.min_payload < m.min_payload)) m.min_payload = s.min_payload;
        m.max_payload = std::max(m.max_payload, s.max_payload);
        m.deliver_latency.merge(s.deliver_latency);
        m.delivered += s.delivered;
        m.delivered_in_window += s.delivered_in_window;
        m.delivered_due_in_window += s.delivered_due_in_window;
        m.duplicates += s.duplicates;
        m.misrouted += s.misrouted;
        m.without_seq += s.without_seq;
        m.broadcast_deliveries += s.broadcast_deliveries;
        m.broadcast_latency.merge(s.broadcast_latency);
    });
    return m;
}

}  // namespace bench
