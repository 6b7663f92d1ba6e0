#include "ws/ws_server.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <stdexcept>
#include <thread>

#include "net/socket.h"
#include "ws/loop.h"
#include "ws/resume.h"

namespace hydra::ws {

WsServer::Settings WsServer::Settings::from(const Config& config) {
    Settings s;
    s.address = config.str("ws.address");
    s.io_threads = static_cast<int>(config.integer("ws.io_threads"));
    s.io_uring = config.boolean("ws.io_uring");
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
                                    std::shared_ptr<const Headers> headers, std::string request_id,
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
    // 2. Wait for the peers to answer, or for the loops to give up on them. Bounded: a loop ends a connection at
    // its close deadline, and the margin covers a loop's tick; past it we stop waiting for a loop that is stuck.
    {
        std::unique_lock lock(closed_mutex_);
        all_closed_.wait_for(lock, std::chrono::milliseconds(settings_.close_timeout_ms + 500),
                             [this] { return open_connections_.load() == 0; });
    }
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

void WsServer::connection_closed() {
    if (open_connections_.fetch_sub(1) != 1) return;
    // The last one: stop() may be waiting. (The lock orders this notify after the waiter's check.)
    std::lock_guard lock(closed_mutex_);
    all_closed_.notify_all();
}

WsServer::Loop& WsServer::loop_of(std::uint64_t conn_id) { return *loops_[conn_id >> 48]; }

void WsServer::deliver(std::uint64_t conn_id, Frame frame) {
    if (loops_.empty()) return;
    Loop* l = &loop_of(conn_id);
    l->loop.post([l, conn_id, frame = std::move(frame)]() mutable {
        if (Connection* c = l->find(conn_id); c && !c->close_sent) c->enqueue(std::move(frame));
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
            c->enqueue_confirmed(std::move(frame), std::move(written));
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
                if (Connection* c = l->find(id); c && !c->close_sent) c->enqueue(frame);
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
                if (Connection* c = l->find(id); c && !c->close_sent) c->enqueue(frame);
        });
    }
}

std::size_t WsServer::deliver_all(Frame frame) {
    for (auto& lp : loops_) {
        Loop* l = lp.get();
        l->loop.post([l, frame] {
            for (auto& [id, c] : l->connections)
                if (c->state == Connection::State::open && !c->close_sent) c->enqueue(frame);
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
            c->start_close(sent, reason);
        }
    });
}

}  // namespace hydra::ws
