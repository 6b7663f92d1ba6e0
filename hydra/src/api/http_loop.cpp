#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <hydra/log.h>

#include "api/http_loop.h"

namespace hydra::http {

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
        if (readable) loop.read_soon(*this);
    } catch (const std::exception& e) {
        // (e.g. bad_alloc building a response): this connection ends, the others go on.
        Logger().error(std::string("api: closing a connection after an error: ") + e.what());
        loop.destroy(*this);
    }
}

void Server::Connection::on_failure() noexcept {
    try {
        loop.destroy(*this);
    } catch (...) {  // nothing more to do for this connection
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
    read_pending();  // what arrived counts before any timeout
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

void Server::Loop::run(std::function<void()> task) {
    // From the loop itself (a handler that answered at once): after the current iteration, no wake-up.
    if (loop.in_loop_thread())
        loop.defer(std::move(task));
    else
        loop.post(std::move(task));
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

}  // namespace hydra::http
