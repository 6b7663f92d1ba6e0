#include "api/http_server.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstring>
#include <ctime>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include <hydra/log.h>

#include "http/chunked.h"
#include "http/head.h"
#include "http/target.h"
#include "net/event_loop.h"
#include "net/socket.h"
#include "net/worker_pool.h"

namespace hydra::http {

namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kMaxBuffered = 256 * 1024;  // unread pipelined bytes held while a request is handled
constexpr int kLingerMs = 2000;                   // after our last response: wait this long for the client to close
constexpr int kTickMs = 250;
constexpr std::uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP;

// "Sun, 22 Nov 2026 03:11:57 GMT" for the Date header, recomputed at most once per second per loop.
class DateCache {
  public:
    const std::string& get() {
        std::time_t now = std::time(nullptr);
        if (now != last_) {
            last_ = now;
            std::tm tm{};
            gmtime_r(&now, &tm);
            char buf[64];
            std::size_t n = std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
            value_.assign(buf, n);
        }
        return value_;
    }

  private:
    std::time_t last_ = 0;
    std::string value_;
};

struct Refusal {
    int status = 0;
    std::string reason;
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// Connection: owned by one loop, touched only by that loop's thread.

struct Server::Connection : EventLoop::Handler {
    // head: waiting for (more of) a request head; body/chunked: reading its body; handling: a worker has it;
    // closing: our last response is out, waiting for the client's EOF (lingering close).
    enum class State : std::uint8_t { head, body, chunked, handling, closing };

    Connection(Loop& l, std::uint64_t i, int f) : loop(l), id(i), fd(f) {}
    void on_events(std::uint32_t events) override;

    Loop& loop;
    std::uint64_t id;
    int fd;
    State state = State::head;
    bool writing = false;                 // EPOLLOUT registered
    bool reading_paused = false;          // EPOLLIN removed: too much pipelined input while handling
    bool output_paused = false;           // EPOLLIN removed, nothing parsed: over max_pending_output unsent
    bool keep_alive = true;               // of the current request
    bool head_only = false;               // HEAD: no body in the response
    int minor_version = 1;                // of the current request: HTTP/1.0 keep-alive must be confirmed
    std::int64_t request_started_ms = 0;  // first byte of the current request (0: idle)
    std::int64_t last_activity_ms = 0;
    std::int64_t write_stalled_ms = 0;  // when the socket last refused bytes (0: not stalled)
    std::int64_t linger_deadline_ms = 0;
    std::int64_t accepted_ms = 0;

    std::unique_ptr<TlsSession> tls;  // null: plain TCP
    std::string in;                   // received, not yet parsed
    std::string out;                  // serialized responses not yet written
    std::size_t out_offset = 0;
    Request request;
    std::uint64_t body_left = 0;
    std::optional<ChunkedDecoder> chunked;   // while reading a chunked body
    ClientLimits::Client* client = nullptr;  // its address's limits (null when none are on)
    ClientKey peer{};                        // its address as handlers see it (Context::peer_address)
};

// ---------------------------------------------------------------------------------------------------------------
// Loop: an EventLoop plus the connections it owns.

struct Server::Loop : EventLoop::Handler, std::enable_shared_from_this<Server::Loop> {
    Loop(Server& s, int index)
        : server(s), loop(s.settings_.name, index, kTickMs, [this] { on_tick(); }), index(index) {}

    // Listening socket readable.
    void on_events(std::uint32_t) override { accept_all(); }

    void accept_all();
    void on_tick();
    void on_readable(Connection& c);
    void handshake(Connection& c);
    void process(Connection& c);
    bool parse_head(Connection& c);
    bool read_body(Connection& c);
    bool read_chunked(Connection& c);
    void dispatch(Connection& c);
    void on_response(std::uint64_t id, Response response);
    // Runs `task` on this loop's thread: deferred when called from it, else posted.
    void run(std::function<void()> task);
    void refuse(Connection& c, int status, const std::string& reason);
    void send_response(Connection& c, Response response);
    void flush(Connection& c);
    void resume_if_drained(Connection& c);
    void finish_request(Connection& c);
    void start_linger(Connection& c);
    void destroy(Connection& c);
    void update_events(Connection& c);
    void stop_accepting();
    void reject(int fd, const std::string& reason);
    std::size_t pending_output(const Connection& c) const { return c.out.size() - c.out_offset; }
    Connection* find(std::uint64_t id) {
        auto it = connections.find(id);
        return it == connections.end() ? nullptr : it->second.get();
    }

    Server& server;
    EventLoop loop;
    int index;
    std::uint64_t next_id = 1;
    bool accepting = true;
    bool listening = false;
    bool draining = false;  // stopping: close each connection after its current request
    std::unordered_map<std::uint64_t, std::unique_ptr<Connection>> connections;
    std::vector<std::unique_ptr<Connection>> graveyard;  // freed at the end of the iteration
    std::vector<char> read_buffer;
    DateCache date;
    std::int64_t next_sweep_ms = 0;
};

void Server::Connection::on_events(std::uint32_t events) {
    try {
        if (events & EPOLLERR) {
            loop.destroy(*this);
            return;
        }
        if (tls && !tls->established()) {
            loop.handshake(*this);
            return;
        }
        // (TLS: reading may wait for the socket to take bytes, e.g. a key update's answer.)
        const bool readable = (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) || (tls && tls->wants_write());
        if (events & EPOLLOUT) {
            loop.flush(*this);
            if (fd < 0) return;
        }
        if (readable) loop.on_readable(*this);
    } catch (const std::exception& e) {
        // (e.g. bad_alloc building a response): this connection ends, the others go on.
        Logger().error(std::string("api: closing a connection after an error: ") + e.what());
        loop.destroy(*this);
    }
}

void Server::Loop::accept_all() {
    for (int i = 0; i < 64 && accepting; ++i) {
        sockaddr_storage peer{};
        socklen_t peer_len = sizeof peer;
        int fd =
            accept4(server.listen_fd_, reinterpret_cast<sockaddr*>(&peer), &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                // Out of descriptors: stop accepting on this loop until the next tick instead of spinning.
                Logger().warn(std::string("api: accept: ") + strerror(errno) + "; pausing accepts");
                loop.remove(server.listen_fd_);
                listening = false;
            }
            return;  // EAGAIN: another loop took it, or the queue is empty
        }
        if (server.open_connections_.load() >= server.settings_.max_connections) {
            reject(fd, "too many connections");
            continue;
        }
        const ClientKey key = client_key(peer);
        ClientLimits::Client* client = nullptr;
        if (server.limits_) {
            client = server.limits_->open(key);
            if (client == nullptr) {
                reject(fd, "too many connections from this address");
                continue;
            }
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        std::uint64_t id = (static_cast<std::uint64_t>(index) << 48) | next_id++;
        auto conn = std::make_unique<Connection>(*this, id, fd);
        conn->client = client;
        conn->peer = key;
        conn->last_activity_ms = conn->accepted_ms = loop.now_ms();
        if (server.settings_.tls) conn->tls = server.settings_.tls->accept(fd);
        loop.add(fd, kReadEvents, conn.get());
        connections.emplace(id, std::move(conn));
        server.open_connections_.fetch_add(1);
    }
}

// A connection refused at accept: 503 (best effort, never blocking) and close. (Over TLS: closed without an answer,
// which would take a handshake.)
void Server::Loop::reject(int fd, const std::string& reason) {
    if (server.settings_.tls) {
        Logger().debug("api: refusing a connection: " + reason);
        ::close(fd);
        return;
    }
    try {
        Response r = server.error_page_(503, reason);
        std::string bytes = "HTTP/1.1 503 Service Unavailable\r\n";
        append_headers(bytes, r.headers);
        bytes += "Connection: close\r\nContent-Length: " + std::to_string(r.body.size()) + "\r\n\r\n" + r.body;
        [[maybe_unused]] ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    } catch (const std::exception& e) {
        Logger().error(std::string("api: refusing a connection: ") + e.what());
    }
    ::close(fd);
}

void Server::Loop::stop_accepting() {
    accepting = false;
    if (listening) loop.remove(server.listen_fd_);
    listening = false;
}

void Server::Loop::on_tick() {
    const Settings& s = server.settings_;
    const std::int64_t now = loop.now_ms();
    if (!listening && accepting && server.listen_fd_ >= 0) {
        loop.add(server.listen_fd_, EPOLLIN | EPOLLEXCLUSIVE, this);
        listening = true;
    }
    if (server.limits_ && index == 0 && now >= next_sweep_ms) {
        server.limits_->sweep(now * 1000);
        next_sweep_ms = now + 1000;
    }
    std::vector<Connection*> timed_out, head_timed_out, idle, stalled, lingered, tls_timed_out;
    for (auto& [id, conn] : connections) {
        Connection& c = *conn;
        if (c.tls && !c.tls->established()) {
            if (now - c.accepted_ms > s.tls->settings().handshake_timeout_ms) tls_timed_out.push_back(&c);
            continue;
        }
        if (c.tls && now - c.last_activity_ms > kTlsIdleReleaseMs) c.tls->release_buffers();
        if (c.write_stalled_ms > 0 && now - c.write_stalled_ms > s.request_timeout_ms) {
            stalled.push_back(&c);
        } else if (c.state == Connection::State::closing) {
            if (now > c.linger_deadline_ms) lingered.push_back(&c);
        } else if (c.state != Connection::State::handling && !c.output_paused) {
            // (A connection held back by its unread responses is not waited for: the stall timeout covers it.)
            if (c.request_started_ms > 0 && c.state == Connection::State::head &&
                now - c.request_started_ms > s.header_timeout_ms)
                head_timed_out.push_back(&c);
            else if (c.request_started_ms > 0 && now - c.request_started_ms > s.request_timeout_ms)
                timed_out.push_back(&c);
            else if (c.request_started_ms == 0 && c.out.empty() &&
                     (draining || now - c.last_activity_ms > s.keep_alive_timeout_ms))
                idle.push_back(&c);
        }
    }
    for (Connection* c : stalled) {
        Logger().debug("api: client did not read its response within " + std::to_string(s.request_timeout_ms) +
                       " ms; closing");
        destroy(*c);
    }
    for (Connection* c : tls_timed_out) {
        Logger().debug("api: TLS handshake with " + client_key_text(c->peer) + " not done within " +
                       std::to_string(s.tls->settings().handshake_timeout_ms) + " ms; closing");
        destroy(*c);
    }
    for (Connection* c : lingered) destroy(*c);
    for (Connection* c : idle) destroy(*c);
    for (Connection* c : timed_out)
        if (c->fd >= 0) refuse(*c, 408, "request not received within " + std::to_string(s.request_timeout_ms) + " ms");
    for (Connection* c : head_timed_out)
        if (c->fd >= 0)
            refuse(*c, 408, "request head not received within " + std::to_string(s.header_timeout_ms) + " ms");
}

void Server::Loop::on_readable(Connection& c) {
    if (read_buffer.empty()) read_buffer.resize(kReadChunk);
    while (c.fd >= 0 && !c.reading_paused && !c.output_paused) {
        ssize_t n = stream_read(c.fd, c.tls.get(), read_buffer.data(), read_buffer.size());
        if (n > 0) {
            c.last_activity_ms = loop.now_ms();
            if (c.state == Connection::State::closing) continue;  // lingering: discard until EOF
            if (c.request_started_ms == 0) c.request_started_ms = c.last_activity_ms;
            c.in.append(read_buffer.data(), static_cast<std::size_t>(n));
            process(c);
            // A short read drained the socket (epoll is level-triggered: anything later is reported again) unless
            // TLS holds bytes the socket will not report again.
            if (static_cast<std::size_t>(n) < read_buffer.size() && !(c.fd >= 0 && c.tls && c.tls->pending())) return;
            continue;
        }
        if (n == 0) {
            // EOF. A request being handled still gets its answer written if the client only half-closed; anything
            // else (idle, partial request, lingering) ends here.
            if (c.state == Connection::State::handling) {
                c.keep_alive = false;
                c.reading_paused = true;
                update_events(c);
            } else {
                destroy(c);
            }
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
        if (c.tls) Logger().debug("api: TLS read from " + client_key_text(c.peer) + " failed: " + strerror(errno));
        destroy(c);
        return;
    }
}

// Drives the TLS handshake of a new connection; once done, the connection reads like any other.
void Server::Loop::handshake(Connection& c) {
    std::string error;
    switch (c.tls->handshake(error)) {
        case TlsSession::Handshake::done:
            c.writing = false;
            update_events(c);
            on_readable(c);  // the first request may have come with the handshake's last flight
            return;
        case TlsSession::Handshake::want_read:
        case TlsSession::Handshake::want_write:
            if (c.writing != c.tls->wants_write()) {
                c.writing = c.tls->wants_write();
                update_events(c);
            }
            return;
        case TlsSession::Handshake::failed:
            Logger().info("api: TLS handshake with " + client_key_text(c.peer) + " failed: " + error);
            destroy(c);
            return;
    }
}

// Parses and dispatches as much of c.in as the connection's state allows.
void Server::Loop::process(Connection& c) {
    while (c.fd >= 0) {
        // Backpressure: a client that does not read its responses gets no more of them (pipelined requests wait,
        // unread, in the socket) until it has taken most of what is pending.
        if (pending_output(c) > server.settings_.max_pending_output && c.state != Connection::State::closing) {
            if (!c.output_paused) {
                c.output_paused = true;
                update_events(c);
            }
            return;
        }
        switch (c.state) {
            case Connection::State::head:
                if (c.in.empty() || !parse_head(c)) return;
                break;
            case Connection::State::body:
                if (!read_body(c)) return;
                break;
            case Connection::State::chunked:
                if (!read_chunked(c)) return;
                break;
            case Connection::State::handling:
                // Pipelined bytes wait; too many of them and we stop reading until this request is answered.
                if (c.in.size() > kMaxBuffered && !c.reading_paused) {
                    c.reading_paused = true;
                    update_events(c);
                }
                return;
            case Connection::State::closing:
                return;
        }
    }
}

// True when a head was taken off c.in (the state moved on).
bool Server::Loop::parse_head(Connection& c) {
    const Settings& s = server.settings_;
    Head head = http::parse_head(c.in, s.max_head);
    if (head.status == ParseStatus::NeedMore) return false;
    if (head.too_large) {
        refuse(c, 431, "request header exceeds " + std::to_string(s.max_head) + " bytes");
        return false;
    }
    if (head.status == ParseStatus::Error) {
        refuse(c, 400, head.error);
        return false;
    }

    // Request line: method SP target SP version.
    const std::string_view line = head.start_line;
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
        refuse(c, 400, "malformed request line");
        return false;
    }
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const auto [major, minor] = http_version(line.substr(sp2 + 1));
    bool upper = !method.empty() && method.size() <= 16 &&
                 std::all_of(method.begin(), method.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; });
    if (!upper || target.empty() || major < 0) {
        refuse(c, 400, "malformed request line");
        return false;
    }
    if (major != 1) {
        refuse(c, 505, "HTTP version not supported");
        return false;
    }
    // Absolute form (a proxy's "http://host/path"): the path is what follows the authority.
    if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0) {
        const std::size_t slash = target.find('/', target.find("//") + 2);
        target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    if (target.front() != '/') {
        refuse(c, 400, "invalid request target");
        return false;
    }
    if (minor >= 1 && count_headers(head.headers, "Host") != 1) {
        refuse(c, 400, "missing or repeated Host");
        return false;
    }

    Request& req = c.request;
    req = Request{};
    req.peer = c.peer;
    req.method = std::string(method);
    req.target = std::string(target);
    req.minor_version = minor;
    const std::size_t q = target.find('?');
    if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));
    if (!percent_decode(target.substr(0, q), req.path, false)) {
        refuse(c, 400, "malformed request target: bad percent-encoding");
        return false;
    }

    // Framing (RFC 9112 section 6): chunked, or Content-Length, or no body.
    std::optional<std::string_view> te = find_header(head.headers, "Transfer-Encoding");
    std::optional<std::string_view> cl = find_header(head.headers, "Content-Length");
    bool chunked = false;
    std::uint64_t length = 0;
    if (te) {
        if (minor == 0) {  // RFC 9112 section 6.1: the framing of such a message is faulty
            refuse(c, 400, "Transfer-Encoding in an HTTP/1.0 request");
            return false;
        }
        if (cl) {
            refuse(c, 400, "both Transfer-Encoding and Content-Length");
            return false;
        }
        if (count_headers(head.headers, "Transfer-Encoding") != 1 || !iequals(trim(*te), "chunked")) {
            refuse(c, 501, "unsupported Transfer-Encoding: " + std::string(*te));
            return false;
        }
        chunked = true;
    } else if (cl) {
        for (const auto& [n, v] : head.headers)
            if (iequals(n, "Content-Length") && v != *cl) {
                refuse(c, 400, "conflicting Content-Length headers");
                return false;
            }
        auto r = std::from_chars(cl->data(), cl->data() + cl->size(), length);
        if (cl->empty() || r.ec != std::errc() || r.ptr != cl->data() + cl->size()) {
            refuse(c, 400, "malformed Content-Length");
            return false;
        }
        if (length > s.max_body) {
            refuse(c, 413, "request body exceeds " + std::to_string(s.max_body) + " bytes");
            return false;
        }
    }

    std::optional<std::string_view> connection = find_header(head.headers, "Connection");
    c.keep_alive = s.keep_alive && !draining &&
                   (minor >= 1 ? !(connection && has_token(*connection, "close"))
                               : (connection && has_token(*connection, "keep-alive")));
    c.head_only = req.method == "HEAD";
    c.minor_version = minor;
    const bool expect_continue =
        minor >= 1 && (chunked || length > 0) && any_has_token(head.headers, "Expect", "100-continue");
    req.headers = std::move(head.headers);
    c.in.erase(0, head.consumed);

    if (chunked) {
        c.state = Connection::State::chunked;
        c.chunked.emplace(s.max_body);
    } else if (length > 0) {
        c.state = Connection::State::body;
        c.body_left = length;  // the body grows as it comes: a declared length reserves nothing
    } else {
        dispatch(c);
        return true;
    }
    // The client waits for our go-ahead before sending the body (curl does for bodies over 1 KB).
    if (expect_continue && c.in.empty()) {
        c.out += "HTTP/1.1 100 Continue\r\n\r\n";
        flush(c);
    }
    return true;
}

bool Server::Loop::read_body(Connection& c) {
    std::size_t take = static_cast<std::size_t>(std::min<std::uint64_t>(c.body_left, c.in.size()));
    if (take == 0) return false;
    c.request.body.append(c.in, 0, take);
    c.in.erase(0, take);
    c.body_left -= take;
    if (c.body_left > 0) return false;
    dispatch(c);
    return true;
}

// True once the whole body was read.
bool Server::Loop::read_chunked(Connection& c) {
    ChunkedDecoder::Result r = c.chunked->feed(c.in, c.request.body);
    c.in.erase(0, r.consumed);
    if (r.status == ParseStatus::Error) {
        refuse(c, r.error_status, r.error);
        return false;
    }
    if (r.status == ParseStatus::NeedMore) return false;
    c.chunked.reset();
    dispatch(c);
    return true;
}

void Server::Loop::dispatch(Connection& c) {
    c.state = Connection::State::handling;
    // Probes (GET/HEAD of the probe paths, answered on the loop) pass the rate limit and the busy answer; any other
    // method on those paths is an ordinary request.
    const bool probe = (c.request.method == "GET" || c.request.method == "HEAD") &&
                       std::find(server.settings_.probe_paths.begin(), server.settings_.probe_paths.end(),
                                 c.request.path) != server.settings_.probe_paths.end();
    if (c.client != nullptr && !probe && server.limits_->rate_limited()) {
        if (int wait_s = server.limits_->admit(*c.client, loop.now_ms() * 1000); wait_s > 0) {
            Response r = server.error_page_(429, "too many requests from this address (over " +
                                                     std::to_string(server.limits_->requests_per_s()) + " per second)");
            r.headers.emplace_back("Retry-After", std::to_string(wait_s));
            c.request = Request{};
            send_response(c, std::move(r));
            return;
        }
    }
    if (!probe && server.in_flight_.load() >= server.settings_.max_queued + server.settings_.workers) {
        // Every worker is busy and the waiting line is full: answer at once rather than queue without bound.
        Response r = server.error_page_(503, "server busy: too many requests waiting");
        send_response(c, std::move(r));
        return;
    }
    server.in_flight_.fetch_add(1);
    std::weak_ptr<Loop> self = weak_from_this();
    std::uint64_t id = c.id;
    if (server.loop_handler_) {
        bool taken = false;
        try {
            taken = server.loop_handler_(c.request, Responder(self, id));
        } catch (const std::exception& e) {
            Logger().error(std::string("api: request failed: ") + e.what());
        }
        if (taken) {
            c.request = Request{};
            return;
        }
    }
    server.on_workers_->fetch_add(1);
    // The task holds what it calls: after a shutdown timeout it may run (or start) when the server is gone.
    server.workers_->post([self = std::move(self), calls = server.calls_, busy = server.on_workers_, id,
                           req = std::move(c.request)]() mutable {
        Response response;
        try {
            response = calls->handler(req);
        } catch (const std::exception& e) {
            Logger().error(std::string("api: request failed: ") + e.what());
            response = calls->error_page(500, "internal server error");
        }
        Responder(self, id)(std::move(response));
        busy->fetch_sub(1);  // not through srv: after a shutdown timeout the server may be gone by now
    });
    c.request = Request{};
}

void Server::Responder::operator()(Response response) const {
    if (std::shared_ptr<Loop> loop = loop_.lock())
        loop->run([l = loop.get(), id = id_, response = std::move(response)]() mutable {
            l->on_response(id, std::move(response));
        });
    // else: the server is gone; so is the client
}

void Server::Responder::compose(std::function<Response()> make) const {
    if (std::shared_ptr<Loop> loop = loop_.lock())
        loop->run([l = loop.get(), id = id_, make = std::move(make)] {
            Response response;
            try {
                response = make();
            } catch (const std::exception& e) {
                Logger().error(std::string("api: building a response failed: ") + e.what());
                response = l->server.error_page_(500, "internal server error");
            }
            l->on_response(id, std::move(response));
        });
}

void Server::Loop::run(std::function<void()> task) {
    // From the loop itself (a handler that answered at once): after the current iteration, no wake-up.
    if (loop.in_loop_thread())
        loop.defer(std::move(task));
    else
        loop.post(std::move(task));
}

void Server::Loop::on_response(std::uint64_t id, Response response) {
    server.in_flight_.fetch_sub(1);
    Connection* c = find(id);
    if (c == nullptr || c->fd < 0) return;  // the client went away
    try {
        send_response(*c, std::move(response));
        // Pipelined requests that arrived meanwhile.
        if (c->fd >= 0 && c->state == Connection::State::head && !c->in.empty()) process(*c);
    } catch (const std::exception& e) {
        Logger().error(std::string("api: closing a connection after an error: ") + e.what());
        destroy(*c);
    }
}

// A request the server answers itself; the connection cannot be trusted to frame the next one, so it closes.
void Server::Loop::refuse(Connection& c, int status, const std::string& reason) {
    Response r = server.error_page_(status, reason);
    r.close = true;
    c.keep_alive = false;
    c.in.clear();
    send_response(c, std::move(r));
}

void Server::Loop::send_response(Connection& c, Response response) {
    const Settings& s = server.settings_;
    const bool close = response.close || !c.keep_alive || draining;
    std::string& out = c.out;
    out += "HTTP/1.1 ";
    out += std::to_string(response.status);
    out += ' ';
    out += http_status_text(response.status);
    out += "\r\nServer: ";
    out += s.software;
    out += "\r\nDate: ";
    out += date.get();
    out += "\r\n";
    append_headers(out, response.headers);
    const bool no_body = response.status == 204 || response.status == 304 || response.status < 200;
    if (!no_body) {
        out += "Content-Length: ";
        out += std::to_string(response.body.size());
        out += "\r\n";
    }
    if (close)
        out += "Connection: close\r\n";
    else if (c.minor_version == 0)
        out += "Connection: keep-alive\r\n";
    out += "\r\n";
    if (!no_body && !c.head_only) out += response.body;
    if (close) {
        start_linger(c);
    } else {
        finish_request(c);
    }
    flush(c);
}

void Server::Loop::finish_request(Connection& c) {
    c.state = Connection::State::head;
    c.request_started_ms = c.in.empty() ? 0 : loop.now_ms();
    c.last_activity_ms = loop.now_ms();
    c.head_only = false;
    if (c.reading_paused) {
        c.reading_paused = false;
        update_events(c);
    }
}

// Our last response: once it is written we half-close and discard input until the client closes (or the linger
// deadline), so that unread request bytes do not make the kernel reset the connection before the client has read
// the response.
void Server::Loop::start_linger(Connection& c) {
    c.state = Connection::State::closing;
    c.in.clear();
    std::string().swap(c.in);
    c.linger_deadline_ms = loop.now_ms() + kLingerMs;
    if (c.reading_paused) {
        c.reading_paused = false;
        update_events(c);
    }
}

void Server::Loop::flush(Connection& c) {
    if (c.fd < 0) return;
    while (c.out_offset < c.out.size()) {
        ssize_t n = stream_write(c.fd, c.tls.get(), c.out.data() + c.out_offset, c.out.size() - c.out_offset);
        if (n > 0) {
            c.out_offset += static_cast<std::size_t>(n);
            c.write_stalled_ms = 0;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c.write_stalled_ms == 0) c.write_stalled_ms = loop.now_ms();
            if (!c.writing) {
                c.writing = true;
                update_events(c);
            }
            resume_if_drained(c);
            return;
        }
        destroy(c);  // EPIPE, ECONNRESET: the client is gone
        return;
    }
    c.out.clear();
    c.out_offset = 0;
    if (c.out.capacity() > kReadChunk) std::string().swap(c.out);
    c.write_stalled_ms = 0;
    if (c.writing) {
        c.writing = false;
        update_events(c);
    }
    if (c.state == Connection::State::closing) {
        if (c.tls) c.tls->shutdown();
        ::shutdown(c.fd, SHUT_WR);
    }
    resume_if_drained(c);
}

// A connection held back by its unsent output reads and parses again once half of the limit is left (not at once
// below it: that would flip on every write).
void Server::Loop::resume_if_drained(Connection& c) {
    if (!c.output_paused || pending_output(c) > server.settings_.max_pending_output / 2) return;
    c.output_paused = false;
    if (c.request_started_ms > 0) c.request_started_ms = loop.now_ms();  // the head timeout starts over
    update_events(c);
    // After this iteration (flush may be called from inside process): the requests already read.
    loop.defer([this, id = c.id] {
        Connection* conn = find(id);
        if (conn != nullptr && conn->fd >= 0 && conn->state == Connection::State::head && !conn->in.empty())
            process(*conn);
    });
}

void Server::Loop::update_events(Connection& c) {
    if (c.fd < 0) return;
    std::uint32_t ev = c.reading_paused || c.output_paused ? 0 : kReadEvents;
    if (c.writing) ev |= EPOLLOUT;
    loop.modify(c.fd, ev, &c);
    // Reading again: what TLS already holds is not reported by the socket.
    if ((ev & EPOLLIN) && c.tls && c.tls->established() && c.tls->pending())
        loop.defer([this, id = c.id] {
            if (Connection* conn = find(id); conn != nullptr && conn->fd >= 0) on_readable(*conn);
        });
}

void Server::Loop::destroy(Connection& c) {
    if (c.fd < 0) return;
    loop.remove(c.fd);
    if (c.tls && c.state != Connection::State::closing) c.tls->shutdown();  // (closing: close_notify went already)
    ::close(c.fd);
    c.fd = -1;
    server.open_connections_.fetch_sub(1);
    if (c.client != nullptr) server.limits_->close(c.client, loop.now_ms() * 1000);
    c.client = nullptr;
    auto it = connections.find(c.id);
    if (it == connections.end()) return;
    // Freed at the end of the iteration: the caller may still hold a reference.
    graveyard.push_back(std::move(it->second));
    connections.erase(it);
    if (graveyard.size() == 1) loop.defer([this] { graveyard.clear(); });
}

// ---------------------------------------------------------------------------------------------------------------
// Server

Server::Server(Settings settings, Handler handler, ErrorPage error_page, LoopHandler loop_handler)
    : settings_(std::move(settings)),
      handler_(std::move(handler)),
      error_page_(std::move(error_page)),
      loop_handler_(std::move(loop_handler)),
      calls_(std::make_shared<const Calls>(Calls{handler_, error_page_})) {}

Server::~Server() { stop(std::chrono::milliseconds(0)); }

void Server::start() {
    std::signal(SIGPIPE, SIG_IGN);
    ListenSocket l = listen_tcp(settings_.address, 4096);
    listen_fd_ = l.fd;
    bound_ = l.bound;
    ClientLimits::Settings ls{settings_.max_connections_per_ip, settings_.requests_per_s, settings_.burst};
    if (ClientLimits(ls).enabled()) limits_ = std::make_unique<ClientLimits>(ls);
    workers_ = std::make_unique<WorkerPool>(static_cast<std::size_t>(std::max(1, settings_.workers)), "api-worker");
    for (int i = 0; i < std::max(1, settings_.io_threads); ++i) loops_.push_back(std::make_shared<Loop>(*this, i));
    for (auto& lp : loops_) {
        lp->loop.add(listen_fd_, EPOLLIN | EPOLLEXCLUSIVE, lp.get());
        lp->listening = true;
        lp->loop.start();
    }
    started_ = true;
}

bool Server::set_rate(int requests_per_s, int burst) {
    if (!limits_) return false;
    limits_->set_rate(requests_per_s, burst);
    return true;
}

Heartbeats Server::heartbeats() const {
    Heartbeats beats;
    for (const auto& lp : loops_) beats.emplace_back(lp->loop.thread_name(), lp->loop.heartbeat());
    return beats;
}

void Server::wind_down() {
    if (!started_) return;
    for (auto& lp : loops_) {
        Loop* l = lp.get();
        l->loop.post([l] {
            l->stop_accepting();
            l->draining = true;
            std::vector<Connection*> idle;
            for (auto& [id, c] : l->connections)
                if (c->state == Connection::State::head && c->request_started_ms == 0 && c->out.empty())
                    idle.push_back(c.get());
            for (Connection* c : idle) l->destroy(*c);
        });
    }
    if (listen_fd_ >= 0) {
        // Refuse new connections right away (closing the socket only after the loops no longer watch it).
        ::shutdown(listen_fd_, SHUT_RD);
    }
}

void Server::stop(std::chrono::milliseconds grace) {
    if (!started_) return;
    // 1. Stop accepting; idle connections close at once, busy ones after their current response.
    wind_down();
    started_ = false;
    // 2. Requests in flight finish and are answered (bounded).
    auto deadline = std::chrono::steady_clock::now() + grace;
    while ((in_flight_.load() > 0 || open_connections_.load() > 0) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    if (in_flight_.load() > 0)
        Logger().warn("api: " + std::to_string(in_flight_.load()) +
                      " request(s) still running after the shutdown timeout; their clients are disconnected");
    // 3. Stop the loops and close what is left.
    for (auto& lp : loops_) lp->loop.stop();
    for (auto& lp : loops_) {
        std::vector<Connection*> all;
        for (auto& [id, c] : lp->connections) all.push_back(c.get());
        for (Connection* c : all) lp->destroy(*c);
        lp->graveyard.clear();
    }
    if (listen_fd_ >= 0) ::close(listen_fd_);
    listen_fd_ = -1;
    if (on_workers_->load() > 0) {
        // A handler thread still runs a handler: leak the pool rather than wait for it (or destroy it under it).
        (void)workers_.release();
    } else {
        workers_->stop();
    }
    // An answer still to come (a handler thread's, an async reply) finds its loop gone and is dropped.
    loops_.clear();
}

}  // namespace hydra::http
