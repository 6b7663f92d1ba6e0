#include "ws/loop.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <hydra/log.h>

#include "core/context_access.h"

namespace hydra::ws {

WsServer::Metrics::Metrics(metrics::Registry& r, const WsRoutes& routes)
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
      rate_limited(r.counter("hydra_ws_rate_limited_total", "Connections closed 1008 over ws.rate_limit.").with({})),
      upgrades(r.counter("hydra_ws_upgrades_total", "Upgrade requests by the HTTP status answered (101 = accepted).",
                         {"status"})),
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

std::string WsServer::Metrics::code_label(std::uint16_t code) {
    if (code >= 1000 && code <= 1015) return std::to_string(code);
    if (code >= 3000 && code <= 3999) return "3xxx";
    if (code >= 4000 && code <= 4999) return "4xxx";
    return "other";
}

WsServer::Loop::Loop(WsServer& s, int index, int tick_ms)
    : server(s),
      loop("ws", index, tick_ms, [this] { on_tick(); }),
      index(static_cast<std::uint64_t>(index)),
      io(s.settings_.io_uring),
      metrics(s.metrics_.get()) {}

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
        if (server.open_connections_.load() >= settings().max_connections) {
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
        if (settings().tls) conn->tls = settings().tls->accept(fd);
        loop.add(fd, kReadEvents, conn.get());
        connections.emplace(id, std::move(conn));
        server.open_connections_.fetch_add(1);
    }
}

// A connection refused at accept: the HTTP answer (best effort, never blocking; over TLS none, it would take a
// handshake), then closed.
void WsServer::Loop::reject(int fd, const std::string& answer) {
    if (!settings().tls) {
        [[maybe_unused]] ssize_t n = ::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    ::close(fd);
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
            c->start_close(code, reason);
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
            c->start_close(close_code::going_away, "server shutting down");
}

void WsServer::Loop::on_tick() {
    const auto& s = settings();
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
                    c.enqueue_control(kPing);
                }
                break;
            case Connection::State::closing:
                if (now > c.close_deadline_ms) expired.push_back(&c);
                break;
        }
    }
    for (Connection* c : token_expired) c->start_close(close_code::policy_violation, "token expired");
    for (Connection* c : expired) {
        if (c->state == Connection::State::open)
            c->start_close(close_code::going_away, "idle timeout");
        else if (c->state == Connection::State::closing)
            give_up(*c);
        else
            destroy(*c, close_code::abnormal, "handshake timeout");
    }
}

void WsServer::Loop::give_up(Connection& c) {
    // A peer that did not answer our close frame (a client that stopped reading): reset the connection, so that
    // the kernel does not keep the orphaned socket and its unsent bytes for minutes.
    c.unresponsive = c.close_sent && !c.close_received;
    destroy(c, c.close_code, c.close_reason);
}

void WsServer::Loop::schedule_flush(Connection& c) {
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
        std::size_t direct = 0;  // ids[0, direct): TLS, or nothing that may go; flushed after the batch
        for (std::uint64_t id : ids) {
            Connection* c = find(id);
            if (c == nullptr) continue;
            c->dirty = false;
            loop.guarded(*c, [&] {
                if (!c->add_to(io)) ids[direct++] = id;
            });
        }
        // One system call for them all (IoBatch); what a connection has left after its write goes directly.
        io.run([this](std::uint64_t id, ssize_t result) {
            if (Connection* c = find(id)) loop.guarded(*c, [&] { c->batch_sent(result); });
        });
        for (std::size_t i = 0; i < direct; ++i)
            if (Connection* c = find(ids[i]); c != nullptr && !c->dirty) loop.guarded(*c, [&] { c->flush(); });
        graveyard.clear();
    });
}

void WsServer::Loop::report_error(const Connection& c, const std::string& error) {
    Logger(c.uuid).debug("ws: " + c.path + ": " + error);
    if (c.endpoint == nullptr || !c.endpoint->on_error) return;
    Context::Init init = server.context_for(c.path, c.uuid, c.headers, c.uuid, c.ip, c.claims);
    const WsEndpoint* endpoint = c.endpoint;
    server.workers_->post([endpoint, init = std::move(init), error]() mutable {
        Context ctx = detail::ContextAccess::make(std::move(init));
        endpoint->on_error(ctx, error);
    });
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
    if (!c.confirms.empty()) c.settle_confirms(0);
    server.connection_closed();
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
                Context ctx = detail::ContextAccess::make(std::move(init));
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

}  // namespace hydra::ws
