#include "ws/ws_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <hydra/log.h>

#include "core/request_id.h"
#include "http/target.h"
#include "net/socket.h"
#include "ws/frame.h"
#include "ws/handshake.h"
#include "ws/resume.h"

namespace hydra::ws {

namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kMaxReadPerEvent = 256 * 1024;  // fairness between connections of one loop
constexpr std::size_t kMaxPendingMessages = 16;       // per connection, before we stop reading from it
constexpr int kMaxIov = 64;
constexpr std::uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP;

// Handshake mechanics are not kept with the connection: they are large and of no use to handlers.
bool keep_header(const std::string& lower_name) {
    return lower_name != "upgrade" && lower_name != "connection" && lower_name != "sec-websocket-key" &&
           lower_name != "sec-websocket-version" && lower_name != "sec-websocket-extensions" &&
           lower_name != "x-hydra-resume";
}

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

Frame make_frame(std::string bytes) { return std::make_shared<const std::string>(std::move(bytes)); }

// ws.auth=jwt: the token of an upgrade, from `Authorization: Bearer <t>`, `?token=<t>` or, for browsers that cannot
// set headers, the subprotocol list `Sec-WebSocket-Protocol: bearer, <t>` (`bearer` is echoed, never the token).
// "" when there is none.
// The raw value of the first `name=` pair of a query string (resume and JWT tokens are URL-safe: no decoding).
std::optional<std::string_view> query_value(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        std::string_view pair = query.substr(0, query.find('&'));
        query.remove_prefix(std::min(query.size(), pair.size() + 1));
        if (pair.size() > name.size() && pair.substr(0, name.size()) == name && pair[name.size()] == '=')
            return pair.substr(name.size() + 1);
    }
    return std::nullopt;
}

std::string bearer_token(const UpgradeRequest& req, bool& offered_bearer) {
    offered_bearer = false;
    std::string_view found;
    for (std::size_t i = 0; i < req.protocols.size(); ++i) {
        if (!iequals(req.protocols[i], "bearer")) continue;
        offered_bearer = true;
        if (i + 1 < req.protocols.size()) found = req.protocols[i + 1];
        break;
    }
    if (auto credentials = http::authorization(req.headers, "Bearer")) return std::string(*credentials);
    if (auto token = query_value(req.query, "token")) return std::string(*token);
    return std::string(found);
}

// A rate-limit token is this many units: the bucket refills rate_per_s units per millisecond, integer arithmetic.
constexpr std::int64_t kTokenUnits = 1000;

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Metrics: series resolved once at construction (label values from the routes), except close codes, resolved per
// loop on first use. Codes a client can choose are folded into a bounded set.

struct WsServer::Metrics {
    Metrics(metrics::Registry& r, const WsRoutes& routes)
        : registry(r),
          messages_in(r.counter("hydra_ws_messages_received_total", "Data messages received from clients.").with({})),
          messages_out(r.counter("hydra_ws_frames_sent_total",
                                 "Frames queued to clients: replies, notifications, broadcasts, control frames.")
                           .with({})),
          bytes_in(r.counter("hydra_ws_received_bytes_total", "Bytes read from WebSocket connections.").with({})),
          bytes_out(r.counter("hydra_ws_sent_bytes_total", "Bytes written to WebSocket connections.").with({})),
          overflows(r.counter("hydra_ws_send_queue_overflows_total",
                              "Connections closed 1008 because their send queue was full (a client not reading).")
                        .with({})),
          rate_limited(
              r.counter("hydra_ws_rate_limited_total", "Connections closed 1008 over ws.rate_limit.").with({})),
          upgrades(r.counter("hydra_ws_upgrades_total",
                             "Upgrade requests by the HTTP status answered (101 = accepted).", {"status"})),
          closes(r.counter("hydra_ws_closes_total",
                           "Connections ended, by close code (1006: dropped without a close handshake).", {"code"})),
          handler(r.histogram("hydra_ws_handler_duration_seconds",
                              "Time a WS service or endpoint handler took, middleware included.", {"route"})) {
        auto& open = r.gauge("hydra_ws_connections", "Open WebSocket connections by endpoint path.", {"path"});
        connections[nullptr] = &open.with({"/"});
        for (const auto& [service, h] : routes.services) handlers[service] = &handler.with({service});
        for (const auto& [path, endpoint] : routes.endpoints) {
            connections[&endpoint] = &open.with({path});
            endpoint_handlers[&endpoint] = &handler.with({path});
        }
        accepted = &upgrades.with({"101"});
    }

    // 1000-1015 as they are; application codes by range; anything else "other".
    static std::string code_label(std::uint16_t code) {
        if (code >= 1000 && code <= 1015) return std::to_string(code);
        if (code >= 3000 && code <= 3999) return "3xxx";
        if (code >= 4000 && code <= 4999) return "4xxx";
        return "other";
    }

    metrics::Registry& registry;
    metrics::Counter &messages_in, &messages_out, &bytes_in, &bytes_out, &overflows, &rate_limited;
    metrics::Family<metrics::Counter>& upgrades;
    metrics::Family<metrics::Counter>& closes;
    metrics::Family<metrics::Histogram>& handler;
    metrics::Counter* accepted = nullptr;
    std::unordered_map<const WsEndpoint*, metrics::Gauge*> connections;  // read-only after construction
    std::unordered_map<std::string, metrics::Histogram*> handlers;       // by service
    std::unordered_map<const WsEndpoint*, metrics::Histogram*> endpoint_handlers;
};

// ---------------------------------------------------------------------------------------------------------------
// Connection: owned by one loop, touched only by that loop's thread.

struct WsServer::Connection : EventLoop::Handler {
    enum class State : std::uint8_t { handshake, upgrading, open, closing };

    Connection(Loop& l, std::uint64_t i, int f) : loop(l), id(i), fd(f) {}
    void on_events(std::uint32_t events) override;
    void on_failure() noexcept override;

    Loop& loop;
    std::uint64_t id;
    int fd;
    State state = State::handshake;
    bool writing = false;         // EPOLLOUT registered
    bool reading_paused = false;  // EPOLLIN removed (too many pending messages)
    bool busy = false;            // a message of this connection is on a worker
    bool dirty = false;           // in the loop's flush list
    bool close_sent = false;
    bool close_received = false;
    bool destroy_after_flush = false;
    bool unresponsive = false;  // our close frame went unanswered until the close deadline: reset, do not linger
    bool registered = false;    // uuid is in the exchange
    bool echo_bearer = false;   // the client offered the subprotocol "bearer": the 101 selects it
    std::uint16_t close_code = close_code::abnormal;
    std::string close_reason;
    std::int64_t opened_ms = 0;
    std::int64_t last_recv_ms = 0;
    std::int64_t last_ping_ms = 0;
    std::int64_t close_deadline_ms = 0;
    std::int64_t expires_ms = 0;             // ws.auth=jwt: when the token runs out (loop time); 0 = never
    std::uint32_t seq = 0;                   // messages received, for request ids
    std::uint32_t frames_out = 0;            // frames queued to it (the close line's messages_out)
    std::int64_t tokens = 0;                 // rate limit: tokens (in kTokenUnits) left in the bucket
    std::int64_t tokens_ms = 0;              // when the bucket was last refilled
    ClientKey ip;                            // the client's address (Context::peer_address)
    ClientLimits::Client* client = nullptr;  // its count in the server's per-address table (null: none)

    std::unique_ptr<TlsSession> tls;          // null: plain TCP
    std::string in;                           // handshake bytes, released after the upgrade
    std::string accept;                       // Sec-WebSocket-Accept, until the 101 is queued
    std::unique_ptr<MessageDecoder> decoder;  // after the upgrade
    std::vector<Frame> out;                   // whole frames waiting for the socket
    std::size_t out_offset = 0;               // bytes of out[0] already written
    std::size_t out_bytes = 0;                // unwritten bytes in out
    std::uint64_t bytes_written = 0;          // stream position: bytes handed to the socket so far
    struct Confirm {
        std::uint64_t end;  // stream position at which the frame ends
        std::function<void(bool written)> written;
    };
    std::vector<Confirm> confirms;  // frames whose outcome is awaited, in stream order
    struct Pending {
        std::string data;
        bool binary;
    };
    std::vector<Pending> pending;  // messages waiting for the previous one to be handled

    std::string uuid;
    std::string path;
    const WsEndpoint* endpoint = nullptr;  // nullptr on the service path "/"
    std::shared_ptr<const HeaderMap> headers;
    std::shared_ptr<const Json> claims;  // ws.auth=jwt: the token's claims (replaced by a refresh)
};

// ---------------------------------------------------------------------------------------------------------------
// Loop: an EventLoop plus the connections it owns and the listening socket.

struct WsServer::Loop : EventLoop::Handler {
    Loop(WsServer& s, int index, int tick_ms)
        : server(s),
          loop("ws", index, tick_ms, [this] { on_tick(); }),
          index(static_cast<std::uint64_t>(index)),
          metrics(s.metrics_.get()) {}

    // Listening socket readable.
    void on_events(std::uint32_t) override { accept_all(); }

    void accept_all();
    void on_tick();
    void on_readable(Connection& c);
    void on_writable(Connection& c);
    void tls_handshake(Connection& c);
    void reject(int fd, const std::string& answer);
    void read_later(Connection& c);  // on_readable() again soon (what TLS holds)
    void handle_handshake(Connection& c);
    bool origin_allowed(const UpgradeRequest& req) const;
    // The uuid the request may claim under ws.client_uuid ("" = none): a trusted X-Request-Id or a resume token's.
    std::string claimed_uuid(const UpgradeRequest& req, const HeaderMap& headers) const;
    void register_uuid(Connection& c, const std::string& claimed);
    void accept_upgrade(Connection& c);
    void reject_upgrade(Connection& c, int status, const std::string& reason, const HttpHeaders& extra = {});
    void feed(Connection& c, const std::uint8_t* data, std::size_t len);
    bool take_token(Connection& c);  // false: the connection is over ws.rate_limit
    void dispatch(Connection& c, std::string data, bool binary);
    void on_handled(std::uint64_t id, Frame reply);
    bool enqueue(Connection& c, Frame frame);  // false if the frame was not queued (closed, or queue dropped)
    void enqueue_confirmed(Connection& c, Frame frame, std::function<void(bool written)> written);
    // Reports the frames written so far (true) and those ending after keep_up_to (false: dropped).
    void settle_confirms(Connection& c, std::uint64_t keep_up_to);
    void enqueue_raw(Connection& c, std::string bytes) { enqueue(c, make_frame(std::move(bytes))); }
    void schedule_flush(Connection& c);
    void schedule_end_of_iteration();
    void flush(Connection& c);
    void start_close(Connection& c, std::uint16_t code, const std::string& reason);
    void fail(Connection& c, std::uint16_t code, const std::string& reason);
    void destroy(Connection& c, std::uint16_t code, const std::string& reason);
    void stop_accepting();
    // Close handshake with every connection now (dropped when not upgraded yet).
    void close_all(std::uint16_t code, const std::string& reason);
    // WsServer::drain on this loop: the open connections are closed one after the other over `spread_ms`.
    void begin_drain(std::int64_t spread_ms);
    void drain_due();  // closes those whose turn has come (on_tick)
    void update_events(Connection& c);
    Connection* find(std::uint64_t id) {
        auto it = connections.find(id);
        return it == connections.end() ? nullptr : it->second.get();
    }
    void report_error(const Connection& c, const std::string& error);
    // ws.auth=jwt: checks the upgrade's token; false when it was refused (the 401 is queued).
    bool authenticate(Connection& c, const UpgradeRequest& req);
    // Loop time at which a token with this exp runs out (exp + leeway).
    std::int64_t expiry_ms(double exp) const;
    // The /auth/refresh service (on a worker): the reply, and the new claims handed to this loop.
    std::string refresh(const Json& request, const Context::Init& init, std::uint64_t id);

    WsServer& server;
    EventLoop loop;
    std::uint64_t index;
    std::uint64_t next_id = 1;
    bool accepting = true;
    bool listening = false;
    std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections;
    std::vector<std::unique_ptr<Connection>> graveyard;  // freed at the end of the iteration
    std::vector<std::uint64_t> flush_list;
    bool flush_scheduled = false;
    std::vector<std::uint8_t> read_buffer;
    Metrics* metrics;                                             // null: count nothing
    std::unordered_map<std::uint16_t, metrics::Counter*> closes;  // hydra_ws_closes_total by code, this loop's
    // A drain: the connections open when it began, closed in this order at evenly spread times.
    bool draining = false;
    std::vector<std::uint64_t> drain_order;
    std::size_t drain_next = 0;
    std::int64_t drain_start_ms = 0;
    std::int64_t drain_spread_ms = 0;
};

void WsServer::Connection::on_events(std::uint32_t events) {
    if (events & (EPOLLERR)) {
        loop.destroy(*this, close_code::abnormal, "socket error");
        return;
    }
    if (tls && !tls->established()) {
        loop.tls_handshake(*this);
        return;
    }
    // (TLS: reading may wait for the socket to take bytes, e.g. a key update's answer.)
    const bool readable = (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) || (tls && tls->wants_write());
    if (events & EPOLLOUT) {
        loop.on_writable(*this);
        if (fd < 0) return;
    }
    if (readable) loop.on_readable(*this);
}

void WsServer::Connection::on_failure() noexcept {
    try {
        loop.destroy(*this, close_code::internal_error, "internal error");
    } catch (...) {  // nothing more to do for this connection
    }
}

void WsServer::Loop::accept_all() {
    for (int i = 0; i < 64; ++i) {
        sockaddr_storage peer{};
        socklen_t len = sizeof peer;
        int fd = accept4(server.listen_fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Out of descriptors: stop accepting on this loop until the next tick instead of spinning.
                Logger().warn(std::string("ws: accept: ") + strerror(errno) + "; pausing accepts");
                loop.remove(server.listen_fd_);
                listening = false;
            }
            return;  // EAGAIN: another loop took it, or the queue is empty
        }
        if (server.open_connections_.load() >= server.settings_.max_connections) {
            static const std::string kFull = http_error_response(503, "too many connections");
            reject(fd, kFull);
            continue;
        }
        const ClientKey ip = client_key(peer);
        ClientLimits::Client* client = server.limits_ ? server.limits_->open(ip) : nullptr;
        if (server.limits_ && client == nullptr) {
            static const std::string kFull = http_error_response(503, "too many connections from this address");
            reject(fd, kFull);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        std::uint64_t id = (index << 48) | next_id++;
        auto conn = std::make_unique<Connection>(*this, id, fd);
        conn->ip = ip;
        conn->client = client;
        conn->opened_ms = conn->last_recv_ms = conn->last_ping_ms = loop.now_ms();
        if (server.settings_.tls) conn->tls = server.settings_.tls->accept(fd);
        loop.add(fd, kReadEvents, conn.get());
        connections.emplace(id, std::move(conn));
        server.open_connections_.fetch_add(1);
    }
}

// A connection refused at accept: the HTTP answer (best effort, never blocking; over TLS none, it would take a
// handshake), then closed.
void WsServer::Loop::reject(int fd, const std::string& answer) {
    if (!server.settings_.tls) {
        [[maybe_unused]] ssize_t n = ::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    ::close(fd);
}

// Drives the TLS handshake of a new connection; once done, the connection reads its upgrade request.
void WsServer::Loop::tls_handshake(Connection& c) {
    std::string error;
    switch (c.tls->handshake(error)) {
        case TlsSession::Handshake::done:
            c.writing = false;
            update_events(c);
            on_readable(c);  // the upgrade request may have come with the handshake's last flight
            return;
        case TlsSession::Handshake::want_read:
        case TlsSession::Handshake::want_write:
            if (c.writing != c.tls->wants_write()) {
                c.writing = c.tls->wants_write();
                update_events(c);
            }
            return;
        case TlsSession::Handshake::failed:
            Logger().info("ws: TLS handshake with " + client_key_text(c.ip) + " failed: " + error);
            destroy(c, close_code::abnormal, "TLS handshake failed");
            return;
    }
}

void WsServer::Loop::stop_accepting() {
    accepting = false;
    if (listening) loop.remove(server.listen_fd_);
    listening = false;
}

void WsServer::Loop::close_all(std::uint16_t code, const std::string& reason) {
    draining = false;
    std::vector<Connection*> all;
    for (auto& [id, c] : connections) all.push_back(c.get());
    for (Connection* c : all) {
        if (c->state == Connection::State::open)
            start_close(*c, code, reason);
        else if (c->state != Connection::State::closing)
            destroy(*c, code, reason);
    }
}

void WsServer::Loop::begin_drain(std::int64_t spread_ms) {
    stop_accepting();
    std::vector<Connection*> early;
    drain_order.clear();
    for (auto& [id, c] : connections) {
        if (c->state == Connection::State::open)
            drain_order.push_back(id);
        else if (c->state != Connection::State::closing)
            early.push_back(c.get());
    }
    for (Connection* c : early) destroy(*c, close_code::going_away, "server shutting down");
    draining = true;
    drain_next = 0;
    drain_start_ms = loop.now_ms();
    drain_spread_ms = spread_ms;
    // Tick often enough to close each connection at its time.
    if (!drain_order.empty())
        loop.set_tick_ms(static_cast<int>(
            std::clamp<std::int64_t>(spread_ms / static_cast<std::int64_t>(drain_order.size()), 1, loop.tick_ms())));
    drain_due();
}

void WsServer::Loop::drain_due() {
    const std::int64_t elapsed = loop.now_ms() - drain_start_ms;
    if (elapsed >= drain_spread_ms) {
        // The last turn is over: whatever is left (upgraded since) is closed now.
        close_all(close_code::going_away, "server shutting down");
        return;
    }
    // Connection i's turn comes at i * spread / n: the first at once, the last one turn before the end.
    const auto n = static_cast<std::int64_t>(drain_order.size());
    const auto due = std::min<std::int64_t>(n, elapsed * n / drain_spread_ms + 1);
    for (; static_cast<std::int64_t>(drain_next) < due; ++drain_next)
        if (Connection* c = find(drain_order[drain_next]); c != nullptr && c->state == Connection::State::open)
            start_close(*c, close_code::going_away, "server shutting down");
}

void WsServer::Loop::on_tick() {
    const auto& s = server.settings_;
    std::int64_t now = loop.now_ms();
    if (draining) drain_due();
    if (!listening && accepting && server.listen_fd_ >= 0) {
        loop.add(server.listen_fd_, EPOLLIN | EPOLLEXCLUSIVE, this);
        listening = true;
    }
    std::vector<Connection*> expired;
    std::vector<Connection*> token_expired;
    for (auto& [id, conn] : connections) {
        Connection& c = *conn;
        if (c.tls && c.out.empty() && now - c.last_recv_ms > kTlsIdleReleaseMs) c.tls->release_buffers();
        switch (c.state) {
            case Connection::State::handshake:
            case Connection::State::upgrading:
                if (now - c.opened_ms > s.handshake_timeout_ms ||
                    (c.tls && !c.tls->established() && now - c.opened_ms > s.tls->settings().handshake_timeout_ms))
                    expired.push_back(&c);
                break;
            case Connection::State::open:
                if (c.expires_ms > 0 && now >= c.expires_ms) {
                    token_expired.push_back(&c);
                } else if (s.idle_timeout_ms > 0 && now - c.last_recv_ms > s.idle_timeout_ms) {
                    expired.push_back(&c);
                } else if (s.ping_interval_ms > 0 && now - c.last_ping_ms >= s.ping_interval_ms &&
                           now - c.last_recv_ms >= s.ping_interval_ms) {
                    c.last_ping_ms = now;
                    static const Frame kPing = make_frame(encode_ping());
                    enqueue(c, kPing);
                }
                break;
            case Connection::State::closing:
                if (now > c.close_deadline_ms) expired.push_back(&c);
                break;
        }
    }
    for (Connection* c : token_expired) start_close(*c, close_code::policy_violation, "token expired");
    for (Connection* c : expired) {
        if (c->state == Connection::State::open)
            start_close(*c, close_code::going_away, "idle timeout");
        else if (c->state == Connection::State::closing) {
            // The peer did not answer our close frame in time (a client that stopped reading): reset the
            // connection, so that the kernel does not keep the orphaned socket and its unsent bytes for minutes.
            c->unresponsive = c->close_sent && !c->close_received;
            destroy(*c, c->close_code, c->close_reason);
        } else {
            destroy(*c, close_code::abnormal, "handshake timeout");
        }
    }
}

void WsServer::Loop::on_readable(Connection& c) {
    if (read_buffer.empty()) read_buffer.resize(kReadChunk);
    std::size_t total = 0;
    while (c.fd >= 0 && total < kMaxReadPerEvent && !c.reading_paused) {
        ssize_t n = stream_read(c.fd, c.tls.get(), read_buffer.data(), read_buffer.size());
        if (n > 0) {
            total += static_cast<std::size_t>(n);
            c.last_recv_ms = loop.now_ms();
            if (metrics) metrics->bytes_in.inc(n);
            if (c.state == Connection::State::handshake || c.state == Connection::State::upgrading) {
                if (c.in.size() + static_cast<std::size_t>(n) > kMaxHandshakeBytes + server.settings_.max_message) {
                    destroy(c, close_code::abnormal, "handshake too large");
                    return;
                }
                c.in.append(reinterpret_cast<const char*>(read_buffer.data()), static_cast<std::size_t>(n));
                if (c.state == Connection::State::handshake) handle_handshake(c);
            } else if (c.state == Connection::State::open ||
                       (c.state == Connection::State::closing && !c.close_received)) {
                feed(c, read_buffer.data(), static_cast<std::size_t>(n));
            }
            // else: closing after the peer's close frame: ignore whatever follows
            // A short read drained the socket: the recv() that would only say EAGAIN is skipped (epoll is
            // level-triggered, so bytes or an EOF arriving later are reported again), unless TLS holds bytes the
            // socket will not report again.
            if (static_cast<std::size_t>(n) < read_buffer.size() && !(c.fd >= 0 && c.tls && c.tls->pending())) return;
            continue;
        }
        if (n == 0) {
            // Peer closed its side. Before a close handshake that is an abnormal closure (1006).
            if (c.state == Connection::State::closing)
                destroy(c, c.close_code, c.close_reason);
            else
                destroy(c, close_code::abnormal, "connection dropped");
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (c.tls && c.tls->wants_write() && !c.writing) {
                c.writing = true;
                update_events(c);
            }
            return;
        }
        if (errno == EINTR) continue;
        destroy(c, close_code::abnormal, std::string("read: ") + strerror(errno));
        return;
    }
    // Stopped for fairness with TLS still holding bytes: the socket will not report them, read them next turn.
    if (c.fd >= 0 && !c.reading_paused && c.tls && c.tls->pending()) read_later(c);
}

void WsServer::Loop::read_later(Connection& c) {
    loop.post([this, id = c.id] {
        if (Connection* conn = find(id); conn != nullptr && conn->fd >= 0 && !conn->reading_paused) on_readable(*conn);
    });
}

// ws.allowed_origins: an upgrade without Origin is not a browser's and passes; one Origin must be allowed; two are not.
bool WsServer::Loop::origin_allowed(const UpgradeRequest& req) const {
    const std::shared_ptr<const Live> live = server.live();
    const OriginPolicy& policy = live->allowed_origins;
    if (policy.allows_any()) return true;
    std::optional<std::string_view> origin;
    for (const auto& [name, value] : req.headers) {
        if (!iequals(name, "origin")) continue;
        if (origin) return false;
        origin = value;
    }
    return !origin || policy.allows(*origin);
}

void WsServer::Loop::handle_handshake(Connection& c) {
    UpgradeParse p = parse_upgrade_request(c.in);
    if (p.status == ParseStatus::NeedMore) return;
    if (p.status == ParseStatus::Error) {
        reject_upgrade(c, p.http_status, p.reason, p.response_headers);
        return;
    }
    const UpgradeRequest& req = p.request;
    if (!origin_allowed(req)) {
        reject_upgrade(c, 403, "origin not allowed");
        return;
    }
    const WsRoutes& routes = server.routes_;
    std::string path = http::normalize_path(req.path);
    const WsEndpoint* endpoint = nullptr;
    if (auto it = routes.endpoints.find(path); it != routes.endpoints.end()) {
        endpoint = &it->second;
    } else if (!(path == "/" && routes.serves_services())) {
        reject_upgrade(c, 404, "no WebSocket endpoint at " + path);
        return;
    }
    c.path = path;
    c.endpoint = endpoint;
    const bool jwt = server.settings_.auth_jwt;
    if (jwt && !authenticate(c, req)) return;
    c.in.erase(0, p.consumed);  // what is left are the first frames

    auto kept = std::make_shared<HeaderMap>();
    HeaderMap all;
    for (const auto& [name, value] : req.headers) {
        std::string key = lower(name);
        // The token is not kept: ctx.claims() has what it said.
        if (keep_header(key) && !(jwt && (key == "authorization" || key == "sec-websocket-protocol")))
            (*kept)[key] = value;
        all[key] = value;
    }
    c.headers = kept;
    c.accept = accept_key(req.key);
    // The uuid is chosen now so on_open can already use the exchange (set values, subscribe).
    register_uuid(c, claimed_uuid(req, all));
    // A token's connection is its user's from the start: notify_user reaches it, on_open sees it bound.
    if (c.claims) server.exchange_.bind(c.claims->value("sub", std::string()), c.uuid);  // verify() requires a sub

    bool needs_worker = !routes.connection_middleware.empty() || (endpoint && endpoint->on_open);
    if (!needs_worker) {
        accept_upgrade(c);
        return;
    }

    // Connection middleware and on_open may block (auth calls): run them on a worker, then come back.
    c.state = Connection::State::upgrading;
    const std::string& uuid = c.uuid;
    Json params = Json::object();
    try {
        http::parse_urlencoded(req.query, params);
    } catch (const Error&) {
        // a malformed query string is not worth refusing the connection for
    }
    Context::Init init;
    init.kind = ServerKind::ws;
    init.method = "GET";
    init.path = path;
    init.route = path;
    init.params = std::move(params);
    init.headers = std::make_shared<const HeaderMap>(std::move(all));
    init.request_id = uuid;
    init.uuid = uuid;
    init.queue = server.queue_;
    init.exchange = server.handler_exchange_;
    init.claims = c.claims;
    WsServer* srv = &server;
    std::uint64_t id = c.id;
    server.workers_->post([srv, id, endpoint, init = std::move(init), loop_index = index]() mutable {
        Context ctx(std::move(init));
        Result result;
        try {
            hydra::Handler final =
                endpoint && endpoint->on_open ? endpoint->on_open : hydra::Handler([](Context&) { return Result(); });
            result = run_chain(srv->routes_.connection_middleware, ctx, final);
        } catch (const Error& e) {
            result = Result(e);
        } catch (const std::exception& e) {
            ctx.log().error(std::string("ws: connection middleware failed: ") + e.what());
            result = Result(Error(500, "internal server error"));
        }
        Loop& l = *srv->loops_[loop_index];
        l.loop.post([&l, id, result = std::move(result)] {
            Connection* c = l.find(id);
            if (c == nullptr || c->state != Connection::State::upgrading) return;
            if (result.is_error())
                l.reject_upgrade(*c, http_status_for(result.error_code()), result.text());
            else
                l.accept_upgrade(*c);
        });
    });
}

std::string WsServer::Loop::claimed_uuid(const UpgradeRequest& req, const HeaderMap& headers) const {
    using ClientUuid = Settings::ClientUuid;
    const Settings& s = server.settings_;
    if (s.client_uuid == ClientUuid::request_id) {
        auto it = headers.find("x-request-id");
        return it != headers.end() && valid_request_id(it->second) ? it->second : std::string();
    }
    if (s.client_uuid != ClientUuid::resume) return {};
    // The token of an earlier 101, in the header or as ?resume=<token> (browsers cannot set headers).
    std::string_view token;
    if (auto it = headers.find("x-hydra-resume"); it != headers.end()) {
        token = it->second;
    } else if (auto value = query_value(req.query, "resume")) {
        token = *value;
    }
    if (token.empty()) return {};
    return resume_uuid(s.resume_secret, token).value_or(std::string());
}

void WsServer::Loop::register_uuid(Connection& c, const std::string& claimed) {
    std::string uuid = claimed.empty() ? generate_uuid() : claimed;
    if (!server.exchange_.add(uuid, c.id)) {  // in use by an open connection: never taken over
        uuid = generate_uuid();
        server.exchange_.add(uuid, c.id);
    }
    c.uuid = std::move(uuid);
    c.registered = true;
}

bool WsServer::Loop::authenticate(Connection& c, const UpgradeRequest& req) {
    // On the loop: an HMAC or one public-key verification of a token of at most 8 KiB, no I/O.
    bool offered_bearer = false;
    const std::string token = bearer_token(req, offered_bearer);
    if (token.empty()) {
        reject_upgrade(c, 401, "missing token", {{"WWW-Authenticate", "Bearer"}});
        return false;
    }
    JwtOutcome outcome = server.live()->jwt->verify(token);
    if (!outcome) {
        Logger(c.uuid).debug("ws: " + c.path + ": token refused: " + outcome.error);
        reject_upgrade(c, 401, "invalid token: " + outcome.error,
                       {{"WWW-Authenticate", "Bearer error=\"invalid_token\""}});
        return false;
    }
    c.claims = std::make_shared<const Json>(std::move(outcome.claims));
    c.expires_ms = expiry_ms(outcome.exp);
    c.echo_bearer = offered_bearer;
    return true;
}

std::int64_t WsServer::Loop::expiry_ms(double exp) const {
    const double deadline_unix_ms = (exp + server.live()->jwt->leeway_s()) * 1000.0;
    const double now_unix_ms =
        std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
    const double left = std::clamp(deadline_unix_ms - now_unix_ms, 0.0, 1e15);
    return std::max<std::int64_t>(1, loop.now_ms() + static_cast<std::int64_t>(left));
}

std::string WsServer::Loop::refresh(const Json& request, const Context::Init& init, std::uint64_t id) {
    auto token = request.find("token");
    if (token == request.end() || !token->is_string())
        return envelope(kRefreshService, 400, "err", "missing parameter token");
    JwtOutcome outcome = server.live()->jwt->verify(token->get_ref<const std::string&>());
    if (!outcome) return envelope(kRefreshService, 401, "err", "invalid token: " + outcome.error);
    const std::string current = init.claims ? init.claims->value("sub", std::string()) : std::string();
    if (outcome.sub != current) return envelope(kRefreshService, 403, "err", "the token is for another user");
    auto claims = std::make_shared<const Json>(std::move(outcome.claims));
    const double exp = outcome.exp;
    // Posted before the reply: the client's next message already sees the new claims.
    loop.post([this, id, claims, exp] {
        if (Connection* c = find(id); c && c->state == Connection::State::open) {
            c->claims = claims;
            c->expires_ms = expiry_ms(exp);
        }
    });
    return envelope(kRefreshService, 200, "data", Json{{"exp", claims->at("exp")}});
}

void WsServer::Loop::accept_upgrade(Connection& c) {
    c.state = Connection::State::open;
    c.decoder = std::make_unique<MessageDecoder>(server.settings_.max_message, Role::Server);
    c.last_recv_ms = c.last_ping_ms = c.tokens_ms = loop.now_ms();
    c.tokens = static_cast<std::int64_t>(server.rate_burst_.load(std::memory_order_relaxed)) * kTokenUnits;
    // Frames queued while upgrading (by on_open) must follow the 101.
    HttpHeaders extra{{"X-Request-Id", c.uuid}};
    if (server.settings_.client_uuid == Settings::ClientUuid::resume)
        extra.emplace_back(kResumeHeader, resume_token(server.settings_.resume_secret, c.uuid));
    if (c.echo_bearer) extra.emplace_back("Sec-WebSocket-Protocol", "bearer");
    c.out.insert(c.out.begin(), make_frame(handshake_response(c.accept, extra)));
    c.out_bytes += c.out.front()->size();
    for (auto& k : c.confirms) k.end += c.out.front()->size();
    c.accept = std::string();
    schedule_flush(c);
    if (metrics) {
        metrics->accepted->inc();
        metrics->connections.at(c.endpoint)->add();
    }
    std::string rest = std::move(c.in);
    c.in = std::string();
    if (!rest.empty()) feed(c, reinterpret_cast<const std::uint8_t*>(rest.data()), rest.size());
}

void WsServer::Loop::reject_upgrade(Connection& c, int status, const std::string& reason, const HttpHeaders& extra) {
    if (metrics) metrics->upgrades.local({std::to_string(status)}).inc();
    if (c.registered) {
        server.exchange_.remove(c.uuid);
        c.registered = false;
    }
    c.out.clear();
    c.out_offset = 0;
    c.out_bytes = 0;
    settle_confirms(c, 0);
    c.state = Connection::State::closing;  // nothing more is read or sent but this answer
    c.close_received = true;
    c.close_deadline_ms = loop.now_ms() + server.settings_.close_timeout_ms;
    c.in = std::string();
    enqueue_raw(c, http_error_response(status, reason, extra));
    c.destroy_after_flush = true;
    c.close_code = close_code::abnormal;
    c.close_reason = "upgrade rejected: " + std::to_string(status);
}

void WsServer::Loop::feed(Connection& c, const std::uint8_t* data, std::size_t len) {
    MessageDecoder& d = *c.decoder;
    d.feed(data, len);
    Event ev;
    while (c.fd >= 0 && d.next(ev)) {
        switch (ev.type) {
            case Event::Type::Text:
            case Event::Type::Binary: {
                if (c.close_sent) break;  // after our close frame, messages are dropped (RFC 6455 5.5.1)
                if (!take_token(c)) return;
                if (metrics) metrics->messages_in.inc();
                bool binary = ev.type == Event::Type::Binary;
                dispatch(c, d.take_message(), binary);
                break;
            }
            case Event::Type::Ping:
                if (c.close_sent) break;
                if (!take_token(c)) return;
                enqueue_raw(c, encode_pong(ev.data));
                break;
            case Event::Type::Pong:
                break;
            case Event::Type::Close: {
                c.close_received = true;
                std::uint16_t code = ev.code;
                std::string reason(ev.data);
                if (!c.close_sent) {
                    // Echo the peer's code (1000 when it sent none), then close the TCP connection.
                    std::uint16_t echo = code == close_code::no_status ? close_code::normal : code;
                    enqueue_raw(c, encode_close(echo));
                    c.close_sent = true;
                    c.close_code = code;
                    c.close_reason = reason;
                    c.state = Connection::State::closing;
                    c.close_deadline_ms = loop.now_ms() + server.settings_.close_timeout_ms;
                }
                c.destroy_after_flush = true;
                schedule_flush(c);
                return;
            }
            case Event::Type::Error:
                fail(c, ev.code, std::string(ev.data));
                return;
        }
    }
}

bool WsServer::Loop::take_token(Connection& c) {
    const std::int64_t rate = server.rate_per_s_.load(std::memory_order_relaxed);
    if (rate <= 0) return true;
    // A token bucket in integers: rate tokens per second = rate units per millisecond.
    const std::int64_t now = loop.now_ms();
    const std::int64_t full =
        static_cast<std::int64_t>(server.rate_burst_.load(std::memory_order_relaxed)) * kTokenUnits;
    c.tokens = std::min(full, c.tokens + (now - c.tokens_ms) * rate);
    c.tokens_ms = now;
    if (c.tokens < kTokenUnits) {
        if (metrics) metrics->rate_limited.inc();
        fail(c, close_code::policy_violation, "rate limit");
        return false;
    }
    c.tokens -= kTokenUnits;
    return true;
}

void WsServer::Loop::fail(Connection& c, std::uint16_t code, const std::string& reason) {
    report_error(c, "protocol error " + std::to_string(code) + ": " + reason);
    if (!c.close_sent) {
        enqueue_raw(c, encode_close(code, reason));
        c.close_sent = true;
    }
    c.close_code = code;
    c.close_reason = reason;
    c.state = Connection::State::closing;
    c.close_received = true;  // we will not read further
    c.close_deadline_ms = loop.now_ms() + server.settings_.close_timeout_ms;
    c.destroy_after_flush = true;
    schedule_flush(c);
}

void WsServer::Loop::start_close(Connection& c, std::uint16_t code, const std::string& reason) {
    if (c.state != Connection::State::open && c.state != Connection::State::upgrading) return;
    if (c.state == Connection::State::upgrading) {
        destroy(c, code, reason);
        return;
    }
    enqueue_raw(c, encode_close(code, reason));
    c.close_sent = true;
    c.close_code = code;
    c.close_reason = reason;
    c.state = Connection::State::closing;
    c.close_deadline_ms = loop.now_ms() + server.settings_.close_timeout_ms;
    schedule_flush(c);
}

void WsServer::Loop::report_error(const Connection& c, const std::string& error) {
    Logger(c.uuid).debug("ws: " + c.path + ": " + error);
    if (c.endpoint == nullptr || !c.endpoint->on_error) return;
    Context::Init init = server.context_for(c.path, c.uuid, c.headers, c.uuid, c.ip, c.claims);
    const WsEndpoint* endpoint = c.endpoint;
    server.workers_->post([endpoint, init = std::move(init), error]() mutable {
        Context ctx(std::move(init));
        endpoint->on_error(ctx, error);
    });
}

// A reply to send back: text unless `binary`.
struct Reply {
    Reply(std::string d, bool b = false) : data(std::move(d)), binary(b) {}
    std::string data;
    bool binary;
};

static Frame reply_frame(const Reply& reply) {
    return make_frame(reply.binary ? encode_binary(reply.data) : encode_text(reply.data));
}

// On a raw endpoint under ws.auth=jwt: the message if it is hydra's {"service":"/auth/refresh",...} (taken before the
// endpoint's handler). A cheap scan first: most messages are not.
static std::optional<Json> refresh_request(const Context::Init& init) {
    const std::string& body = init.body;
    if (init.binary || body.empty() || body.front() != '{' || body.find(WsServer::kRefreshService) == std::string::npos)
        return std::nullopt;
    try {
        Json doc = parse_json(body);
        auto svc = doc.find("service");
        if (svc != doc.end() && *svc == WsServer::kRefreshService) return doc;
    } catch (const std::exception&) {  // not JSON: the endpoint's message
    }
    return std::nullopt;
}

// The whole life of one message on a worker: context, packet middleware, handler, and the reply as an encoded
// frame (encoding here keeps that work off the I/O loop).
// `loop` (the connection's, with its id) answers /auth/refresh under ws.auth=jwt; null otherwise.
static std::optional<Reply> handle_message(const WsRoutes& routes, const WsEndpoint* endpoint, Context::Init init,
                                           const std::function<void(const std::string&)>& on_error,
                                           const WsServer::Metrics* metrics, WsServer::Loop* loop = nullptr,
                                           std::uint64_t id = 0) {
    std::string service;
    Handler handler;
    if (endpoint == nullptr) {
        Json doc;
        try {
            doc = parse_json(init.body);
        } catch (const Json::parse_error& e) {
            std::string what = e.what();
            if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
            return envelope("init", 406, "err", "invalid JSON: " + what);
        } catch (const JsonTooDeep& e) {
            return envelope("init", 400, "err", e.what());
        }
        auto svc = doc.is_object() ? doc.find("service") : doc.end();
        if (!doc.is_object() || svc == doc.end() || !svc->is_string())
            return envelope("init", 406, "err", "a message is a JSON object with a \"service\" field");
        service = svc->get<std::string>();
        if (loop != nullptr && service == WsServer::kRefreshService) return loop->refresh(doc, init, id);
        doc.erase(svc);
        auto h = routes.services.find(service);
        if (h == routes.services.end()) return envelope(service, 404, "err", "service not found: " + service);
        handler = h->second;
        init.path = service;
        init.route = service;
        init.params = std::move(doc);
    } else {
        if (loop != nullptr)
            if (auto doc = refresh_request(init)) return loop->refresh(*doc, init, id);
        handler = endpoint->on_message;
        if (!handler) return std::nullopt;
    }

    Context ctx(std::move(init));
    Result result;
    const auto started = metrics ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    try {
        result = run_chain(routes.packet_middleware, ctx, handler);
    } catch (const Error& e) {
        result = Result(e);
    } catch (const std::exception& e) {
        ctx.log().error("ws: handler " + (endpoint ? ctx.route() : service) + " failed: " + e.what());
        on_error(std::string("handler failed: ") + e.what());
        result = Result(Error(500, "internal server error"));
    }
    if (metrics) {
        if (endpoint != nullptr)
            metrics->endpoint_handlers.at(endpoint)->observe_since(started);
        else if (auto timer = metrics->handlers.find(service); timer != metrics->handlers.end())
            timer->second->observe_since(started);
    }
    switch (result.kind()) {
        case Result::Kind::empty:
            return std::nullopt;
        case Result::Kind::error:
            if (endpoint == nullptr) return envelope(service, result.error_code(), "err", result.text());
            return dump(Json{{"code", result.error_code()}, {"msg", result.text()}});
        case Result::Kind::json:
            if (endpoint == nullptr) return envelope(service, result.status().value_or(200), "data", result.value());
            return dump(result.value());
        case Result::Kind::text:
        case Result::Kind::binary:
            if (endpoint == nullptr) return envelope(service, result.status().value_or(200), "data", result.text());
            if (result.kind() == Result::Kind::binary) return Reply{result.text(), true};
            return result.text();
    }
    return std::nullopt;
}

void WsServer::Loop::dispatch(Connection& c, std::string data, bool binary) {
    if (c.busy) {
        c.pending.push_back({std::move(data), binary});
        if (c.pending.size() >= kMaxPendingMessages && !c.reading_paused) {
            c.reading_paused = true;  // backpressure: the client waits in its own send buffer
            update_events(c);
        }
        return;
    }
    c.busy = true;
    std::string request_id;  // <uuid>.<n>: one allocation
    request_id.reserve(c.uuid.size() + 21);
    request_id.append(c.uuid).append(".").append(std::to_string(++c.seq));
    Context::Init init = server.context_for(c.path, c.uuid, c.headers, std::move(request_id), c.ip, c.claims);
    init.body = std::move(data);
    init.binary = binary;
    WsServer* srv = &server;
    const WsEndpoint* endpoint = c.endpoint;
    std::uint64_t id = c.id;
    Loop* self = this;
    if (endpoint != nullptr && endpoint->run_on_loop) {
        // A handler declared non-blocking runs right here: no hand-off to a worker and back.
        std::optional<Reply> reply = handle_message(
            srv->routes_, endpoint, std::move(init), [&](const std::string& e) { report_error(c, e); }, metrics,
            srv->settings_.auth_jwt ? this : nullptr, id);
        c.busy = false;
        if (reply && !c.close_sent) enqueue(c, reply_frame(*reply));
        return;
    }
    server.workers_->post([srv, self, endpoint, id, init = std::move(init)]() mutable {
        auto on_error = [&](const std::string& error) {
            if (endpoint == nullptr || !endpoint->on_error) return;
            Context ctx(srv->context_for(init.path, init.uuid, nullptr, init.request_id));
            endpoint->on_error(ctx, error);
        };
        WsServer::Loop* auth = srv->settings_.auth_jwt ? self : nullptr;
        std::optional<Reply> reply =
            handle_message(srv->routes_, endpoint, std::move(init), on_error, srv->metrics_.get(), auth, id);
        Frame frame;
        if (reply) frame = reply_frame(*reply);
        self->loop.post([self, id, frame = std::move(frame)]() mutable { self->on_handled(id, std::move(frame)); });
    });
}

void WsServer::Loop::on_handled(std::uint64_t id, Frame reply) {
    Connection* c = find(id);
    if (c == nullptr) return;
    if (reply && !c->close_sent) enqueue(*c, std::move(reply));
    c->busy = false;
    if (!c->pending.empty() && !c->close_sent) {
        Connection::Pending next = std::move(c->pending.front());
        c->pending.erase(c->pending.begin());
        dispatch(*c, std::move(next.data), next.binary);
        if (c->pending.empty()) c->pending.shrink_to_fit();
    }
    if (c->reading_paused && c->pending.size() < kMaxPendingMessages / 2) {
        c->reading_paused = false;
        update_events(*c);
        on_readable(*c);  // data may have arrived while paused (edge cases of level-triggered re-arm)
    }
}

bool WsServer::Loop::enqueue(Connection& c, Frame frame) {
    if (c.fd < 0) return false;
    if (c.out_bytes + frame->size() > server.settings_.send_queue_bytes && c.state == Connection::State::open) {
        // A client that does not read: drop what it has not received (keeping a partly written frame so the
        // stream stays well-formed, and over TLS the frames of a record OpenSSL holds half-written), tell it why,
        // and close.
        report_error(c, "send queue full (" + std::to_string(c.out_bytes) + " bytes): closing");
        if (metrics) metrics->overflows.inc();
        std::size_t keep = std::max<std::size_t>(c.out_offset > 0 ? 1 : 0, c.tls ? c.tls->unfinished_write() : 0);
        std::size_t kept = 0;
        c.out_bytes = 0;
        for (; kept < c.out.size() && c.out_bytes < keep; ++kept)
            c.out_bytes += c.out[kept]->size() - (kept == 0 ? c.out_offset : 0);
        c.out.resize(kept);
        if (!c.confirms.empty()) settle_confirms(c, c.bytes_written + c.out_bytes);
        c.pending.clear();
        enqueue_raw(c, encode_close(close_code::policy_violation, "send queue full"));
        c.close_sent = true;
        c.close_code = close_code::policy_violation;
        c.close_reason = "send queue full";
        c.state = Connection::State::closing;
        c.close_deadline_ms = loop.now_ms() + server.settings_.close_timeout_ms;
        c.destroy_after_flush = true;
        schedule_flush(c);
        return false;
    }
    c.out_bytes += frame->size();
    c.out.push_back(std::move(frame));
    schedule_flush(c);
    ++c.frames_out;
    if (metrics) metrics->messages_out.inc();
    return true;
}

void WsServer::Loop::enqueue_confirmed(Connection& c, Frame frame, std::function<void(bool written)> written) {
    if (c.close_sent || !enqueue(c, std::move(frame))) {
        written(false);
        return;
    }
    c.confirms.push_back({c.bytes_written + c.out_bytes, std::move(written)});
}

void WsServer::Loop::settle_confirms(Connection& c, std::uint64_t keep_up_to) {
    // Written frames report true, frames ending past keep_up_to report false, the others keep waiting. Settled
    // entries leave the list before any callback runs.
    std::size_t first = 0;
    while (first < c.confirms.size() && c.confirms[first].end <= c.bytes_written) ++first;
    std::size_t last = first;
    while (last < c.confirms.size() && c.confirms[last].end <= keep_up_to) ++last;
    if (first == 0 && last == c.confirms.size()) return;
    std::vector<Connection::Confirm> settled;
    settled.reserve(first + c.confirms.size() - last);
    for (std::size_t i = 0; i < first; ++i) settled.push_back(std::move(c.confirms[i]));
    for (std::size_t i = last; i < c.confirms.size(); ++i) settled.push_back(std::move(c.confirms[i]));
    c.confirms.erase(c.confirms.begin() + static_cast<std::ptrdiff_t>(last), c.confirms.end());
    c.confirms.erase(c.confirms.begin(), c.confirms.begin() + static_cast<std::ptrdiff_t>(first));
    for (std::size_t i = 0; i < settled.size(); ++i) {
        try {
            settled[i].written(i < first);
        } catch (const std::exception& e) {
            Logger(c.uuid).error(std::string("ws: notify_confirmed callback failed: ") + e.what());
        }
    }
}

void WsServer::Loop::schedule_flush(Connection& c) {
    if (c.dirty || c.writing) return;  // already listed, or EPOLLOUT will flush it
    c.dirty = true;
    flush_list.push_back(c.id);
    schedule_end_of_iteration();
}

void WsServer::Loop::schedule_end_of_iteration() {
    if (flush_scheduled) return;
    flush_scheduled = true;
    // After all events and tasks of this iteration: write what was queued, free what was closed.
    loop.defer([this] {
        flush_scheduled = false;
        auto ids = std::move(flush_list);
        flush_list.clear();
        for (std::uint64_t id : ids) {
            Connection* c = find(id);
            if (c == nullptr) continue;
            c->dirty = false;
            flush(*c);
        }
        graveyard.clear();
    });
}

void WsServer::Loop::on_writable(Connection& c) { flush(c); }

void WsServer::Loop::flush(Connection& c) {
    if (c.fd < 0 || c.state == Connection::State::upgrading) return;
    while (!c.out.empty()) {
        iovec iov[kMaxIov];
        int n = 0;
        for (std::size_t i = 0; i < c.out.size() && n < kMaxIov; ++i, ++n) {
            const std::string& f = *c.out[i];
            std::size_t skip = i == 0 ? c.out_offset : 0;
            iov[n].iov_base = const_cast<char*>(f.data() + skip);
            iov[n].iov_len = f.size() - skip;
        }
        ssize_t sent;
        if (c.tls) {
            sent = n == 1 ? c.tls->write(iov[0].iov_base, iov[0].iov_len) : c.tls->writev(iov, n);
        } else if (n == 1) {
            // The common case (an echo, one broadcast): send() spares the kernel copying a msghdr and an iovec.
            sent = ::send(c.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
        } else {
            msghdr msg{};
            msg.msg_iov = iov;
            msg.msg_iovlen = static_cast<std::size_t>(n);
            sent = ::sendmsg(c.fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        }
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!c.writing) {
                    c.writing = true;
                    update_events(c);
                }
                return;
            }
            destroy(c, close_code::abnormal, std::string("write: ") + strerror(errno));
            return;
        }
        std::size_t left = static_cast<std::size_t>(sent);
        if (metrics) metrics->bytes_out.inc(sent);
        c.out_bytes -= left;
        c.bytes_written += left;
        if (!c.confirms.empty()) settle_confirms(c, UINT64_MAX);
        std::size_t done = 0;
        while (done < c.out.size() && left > 0) {
            std::size_t avail = c.out[done]->size() - c.out_offset;
            if (left >= avail) {
                left -= avail;
                c.out_offset = 0;
                ++done;
            } else {
                c.out_offset += left;
                left = 0;
            }
        }
        c.out.erase(c.out.begin(), c.out.begin() + static_cast<std::ptrdiff_t>(done));
    }
    // Everything written.
    if (c.out.capacity() > 8) c.out.shrink_to_fit();
    if (c.writing) {
        c.writing = false;
        update_events(c);
    }
    // We closed first: half-close and wait for the peer's close frame or EOF (bounded by the deadline). Not over
    // TLS: the peer's TLS would take the FIN (or a close_notify) for the end of both directions before it answers.
    if (c.destroy_after_flush) {
        if (c.close_received) {
            destroy(c, c.close_code, c.close_reason);
        } else if (!c.tls) {
            ::shutdown(c.fd, SHUT_WR);
        }
    } else if (c.close_sent && !c.close_received && !c.tls) {
        ::shutdown(c.fd, SHUT_WR);
    }
}

void WsServer::Loop::update_events(Connection& c) {
    if (c.fd < 0) return;
    std::uint32_t ev = c.reading_paused ? 0 : kReadEvents;
    if (c.writing) ev |= EPOLLOUT;
    loop.modify(c.fd, ev, &c);
    // Reading again: what TLS already holds is not reported by the socket.
    if ((ev & EPOLLIN) && c.tls && c.tls->established() && c.tls->pending()) read_later(c);
}

void WsServer::Loop::destroy(Connection& c, std::uint16_t code, const std::string& reason) {
    if (c.fd < 0) return;
    loop.remove(c.fd);
    if (c.out_bytes > 0 || c.unresponsive) {
        // We give up on bytes the peer never took (a client that stopped reading), or on a peer that never answered
        // our close frame: reset the connection so the kernel drops its send buffer now, instead of keeping an
        // orphaned socket and its buffer for minutes. (Not on every close without the peer's close frame: a peer
        // that half-closed may still be reading what we sent.)
        linger abort{1, 0};
        setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &abort, sizeof abort);
    } else if (c.tls) {
        c.tls->shutdown();
    }
    ::close(c.fd);
    c.fd = -1;
    if (c.client != nullptr) server.limits_->close(c.client, loop.now_ms() * 1000);
    c.client = nullptr;
    if (!c.confirms.empty()) settle_confirms(c, 0);
    server.open_connections_.fetch_sub(1);
    bool was_open = c.decoder != nullptr;
    if (was_open && Logger::enabled(LogLevel::info)) {
        // The access line of a WebSocket connection: one when it ends.
        Logger(c.uuid).info("ws closed", {{"logger", "ws"},
                                          {"uuid", c.uuid},
                                          {"path", c.path},
                                          {"code", std::to_string(code)},
                                          {"reason", reason},
                                          {"duration_ms", std::to_string(loop.now_ms() - c.opened_ms)},
                                          {"messages_in", std::to_string(c.seq)},
                                          {"messages_out", std::to_string(c.frames_out)}});
    }
    if (metrics && was_open) {
        metrics->connections.at(c.endpoint)->sub();
        metrics::Counter*& closed = closes[code];
        if (closed == nullptr) closed = &metrics->closes.with({Metrics::code_label(code)});
        closed->inc();
    }
    if (c.registered) {
        const WsEndpoint* endpoint = c.endpoint;
        if (was_open && endpoint != nullptr && endpoint->on_close) {
            // on_close may still read the connection's exchange values: unregister after it ran.
            Context::Init init = server.context_for(c.path, c.uuid, c.headers, c.uuid, c.ip, c.claims);
            WsServer* srv = &server;
            server.workers_->post([srv, endpoint, init = std::move(init), code, reason]() mutable {
                std::string uuid = init.uuid;
                Context ctx(std::move(init));
                try {
                    endpoint->on_close(ctx, code, reason);
                } catch (const std::exception& e) {
                    ctx.log().error(std::string("ws: on_close failed: ") + e.what());
                }
                srv->exchange_.remove(uuid);
            });
        } else {
            server.exchange_.remove(c.uuid);
        }
        c.registered = false;
    }
    auto it = connections.find(c.id);
    if (it != connections.end()) {
        graveyard.push_back(std::move(it->second));
        connections.erase(it);
        schedule_end_of_iteration();
    }
}

// ---------------------------------------------------------------------------------------------------------------
// WsServer

WsServer::Settings WsServer::Settings::from(const Config& config) {
    Settings s;
    s.address = config.str("ws.address");
    s.io_threads = static_cast<int>(config.integer("ws.io_threads"));
    s.workers = static_cast<int>(config.integer("ws.workers"));
    s.max_message = static_cast<std::size_t>(config.integer("ws.max_message"));
    s.max_connections = static_cast<int>(config.integer("ws.max_connections"));
    s.max_connections_per_ip = static_cast<int>(config.integer("ws.max_connections_per_ip"));
    s.rate_per_s = static_cast<int>(config.integer("ws.rate_limit.messages_per_s"));
    s.rate_burst = static_cast<int>(config.integer("ws.rate_limit.burst"));
    s.send_queue_bytes = static_cast<std::size_t>(config.integer("ws.send_queue_bytes"));
    s.ping_interval_ms = static_cast<int>(config.integer("ws.ping_interval_ms"));
    s.idle_timeout_ms = static_cast<int>(config.integer("ws.idle_timeout_ms"));
    s.handshake_timeout_ms = static_cast<int>(config.integer("ws.handshake_timeout_ms"));
    const std::string policy = config.str("ws.client_uuid");
    s.client_uuid = policy == "resume"       ? ClientUuid::resume
                    : policy == "request_id" ? ClientUuid::request_id
                                             : ClientUuid::generate;
    s.resume_secret = config.str("ws.resume_secret");
    std::vector<std::string> origins;
    for (const auto& o : config.at("ws.allowed_origins")) origins.push_back(o.get<std::string>());
    try {
        s.allowed_origins = OriginPolicy(origins);
    } catch (const std::invalid_argument& e) {
        throw ConfigError(config.source() + ": ws.allowed_origins: " + e.what());
    }
    s.auth_jwt = config.str("ws.auth") == "jwt";
    return s;
}

Context::Init WsServer::context_for(const std::string& path, const std::string& uuid,
                                    std::shared_ptr<const HeaderMap> headers, std::string request_id,
                                    std::optional<ClientKey> peer, std::shared_ptr<const Json> claims) const {
    Context::Init init;
    init.kind = ServerKind::ws;
    init.path = path;
    init.route = path;
    init.headers = std::move(headers);
    init.request_id = std::move(request_id);
    init.uuid = uuid;
    init.peer = peer;
    init.queue = queue_;
    init.exchange = handler_exchange_;
    init.claims = std::move(claims);
    return init;
}

WsServer::WsServer(Settings settings, const WsRoutes& routes, Queue* queue)
    : settings_(std::move(settings)), routes_(routes), queue_(queue), exchange_(*this) {
    if (settings_.auth_jwt && !settings_.jwt)
        throw ConfigError("ws.auth=jwt needs auth.jwt.secret or auth.jwt.public_key_file");
    if (settings_.client_uuid == Settings::ClientUuid::resume && settings_.resume_secret.empty())
        settings_.resume_secret = random_resume_secret();
    if (settings_.max_connections_per_ip > 0)
        limits_ = std::make_unique<ClientLimits>(
            ClientLimits::Settings{.max_connections_per_ip = settings_.max_connections_per_ip});
    if (settings_.metrics) metrics_ = std::make_unique<Metrics>(*settings_.metrics, routes_);
    reload(settings_.allowed_origins, settings_.jwt, settings_.rate_per_s, settings_.rate_burst);
}

void WsServer::reload(OriginPolicy allowed_origins, std::shared_ptr<const JwtVerifier> jwt, int rate_per_s,
                      int rate_burst) {
    if (settings_.auth_jwt && !jwt)
        jwt = live_.load() ? live_.load()->jwt : settings_.jwt;  // never none under ws.auth=jwt
    live_.store(std::make_shared<const Live>(Live{std::move(allowed_origins), std::move(jwt)}));
    rate_burst_.store(rate_burst, std::memory_order_relaxed);
    rate_per_s_.store(rate_per_s, std::memory_order_relaxed);
}

WsServer::~WsServer() { stop(); }

void WsServer::start() {
    std::signal(SIGPIPE, SIG_IGN);
    try {
        ListenSocket l = listen_tcp(settings_.address, 4096);
        listen_fd_ = l.fd;
        bound_ = l.bound;
    } catch (const std::exception& e) {
        throw std::runtime_error("ws: cannot listen on " + settings_.address + ": " + e.what());
    }

    int threads = settings_.io_threads > 0 ? settings_.io_threads
                                           : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    int shortest = settings_.handshake_timeout_ms;
    for (int t : {settings_.ping_interval_ms, settings_.idle_timeout_ms})
        if (t > 0) shortest = std::min(shortest, t);
    int tick_ms = std::clamp(shortest / 4, 10, 1000);

    workers_ = std::make_unique<WorkerPool>(static_cast<std::size_t>(settings_.workers), "ws-worker");
    for (int i = 0; i < threads; ++i) loops_.push_back(std::make_unique<Loop>(*this, i, tick_ms));
    for (auto& l : loops_) {
        l->loop.add(listen_fd_, EPOLLIN | EPOLLEXCLUSIVE, l.get());
        l->listening = true;
        l->loop.start();
    }
    started_ = true;
}

void WsServer::stop() {
    if (!started_) return;
    started_ = false;
    // 1. Stop accepting and start the close handshake everywhere.
    for (auto& l : loops_) {
        Loop* lp = l.get();
        lp->loop.post([lp] {
            lp->stop_accepting();
            lp->close_all(close_code::going_away, "server shutting down");
        });
    }
    // 2. Wait (bounded) for the peers to answer.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(settings_.close_timeout_ms + 500);
    while (open_connections_.load() > 0 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    // 3. Stop the loops, drop what is left, finish the workers (on_close callbacks).
    for (auto& l : loops_) l->loop.stop();
    for (auto& l : loops_) {
        std::vector<Connection*> all;
        for (auto& [id, c] : l->connections) all.push_back(c.get());
        for (Connection* c : all) {
            c->unresponsive = c->close_sent && !c->close_received;  // as at the close deadline
            l->destroy(*c, close_code::going_away, "server shutting down");
        }
        l->graveyard.clear();
    }
    workers_->stop();
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    loops_.clear();
}

void WsServer::drain(std::chrono::milliseconds spread) {
    if (!started_) return;
    for (auto& l : loops_) {
        Loop* lp = l.get();
        lp->loop.post([lp, spread] { lp->begin_drain(spread.count()); });
    }
    // Refuse new connections right away (the socket is closed once the loops no longer watch it, in stop()).
    if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RD);
}

void WsServer::hurry() {
    if (!started_) return;
    for (auto& l : loops_) {
        Loop* lp = l.get();
        lp->loop.post([lp] { lp->close_all(close_code::going_away, "server shutting down"); });
    }
}

Heartbeats WsServer::heartbeats() const {
    Heartbeats beats;
    for (const auto& l : loops_) beats.emplace_back(l->loop.thread_name(), l->loop.heartbeat());
    return beats;
}

WsServer::Loop& WsServer::loop_of(std::uint64_t conn_id) { return *loops_[conn_id >> 48]; }

void WsServer::deliver(std::uint64_t conn_id, Frame frame) {
    if (loops_.empty()) return;
    Loop* l = &loop_of(conn_id);
    l->loop.post([l, conn_id, frame = std::move(frame)]() mutable {
        if (Connection* c = l->find(conn_id); c && !c->close_sent) l->enqueue(*c, std::move(frame));
    });
}

void WsServer::deliver_confirmed(std::uint64_t conn_id, Frame frame, std::function<void(bool written)> written) {
    if (loops_.empty()) {
        written(false);
        return;
    }
    Loop* l = &loop_of(conn_id);
    l->loop.post([l, conn_id, frame = std::move(frame), written = std::move(written)]() mutable {
        if (Connection* c = l->find(conn_id))
            l->enqueue_confirmed(*c, std::move(frame), std::move(written));
        else
            written(false);
    });
}

void WsServer::deliver_many(std::vector<std::uint64_t> conn_ids, Frame frame) {
    if (loops_.empty()) return;
    if (loops_.size() == 1) {
        Loop* l = loops_[0].get();
        l->loop.post([l, ids = std::move(conn_ids), frame = std::move(frame)] {
            for (std::uint64_t id : ids)
                if (Connection* c = l->find(id); c && !c->close_sent) l->enqueue(*c, frame);
        });
        return;
    }
    std::vector<std::vector<std::uint64_t>> per_loop(loops_.size());
    for (std::uint64_t id : conn_ids) per_loop[id >> 48].push_back(id);
    for (std::size_t i = 0; i < loops_.size(); ++i) {
        if (per_loop[i].empty()) continue;
        Loop* l = loops_[i].get();
        l->loop.post([l, ids = std::move(per_loop[i]), frame] {
            for (std::uint64_t id : ids)
                if (Connection* c = l->find(id); c && !c->close_sent) l->enqueue(*c, frame);
        });
    }
}

std::size_t WsServer::deliver_all(Frame frame) {
    for (auto& lp : loops_) {
        Loop* l = lp.get();
        l->loop.post([l, frame] {
            for (auto& [id, c] : l->connections)
                if (c->state == Connection::State::open && !c->close_sent) l->enqueue(*c, frame);
        });
    }
    return exchange_.connections();
}

void WsServer::close(std::uint64_t conn_id, int code, std::string reason) {
    if (loops_.empty()) return;
    Loop* l = &loop_of(conn_id);
    l->loop.post([l, conn_id, code, reason = std::move(reason)] {
        if (Connection* c = l->find(conn_id)) {
            std::uint16_t sent = is_valid_close_code(static_cast<std::uint16_t>(code))
                                     ? static_cast<std::uint16_t>(code)
                                     : close_code::policy_violation;
            l->start_close(*c, sent, reason);
        }
    });
}

}  // namespace hydra::ws
