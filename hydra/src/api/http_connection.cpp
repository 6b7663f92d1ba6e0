#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <hydra/log.h>

#include "api/http_loop.h"
#include "http/head.h"
#include "http/request.h"
#include "net/worker_pool.h"

namespace hydra::http {

void Server::Loop::read_soon(Connection& c) {
    if (c.tls || !io.uses_io_uring()) {
        on_readable(c);  // TLS reads through OpenSSL; without io_uring, batching would save nothing
        return;
    }
    if (c.read_listed) return;
    if (read_slots.empty()) read_slots.resize(kReadSlots * kReadSlot);  // (may throw: then nothing is listed)
    c.read_listed = true;
    read_list.push_back(c.id);
    if (read_scheduled) return;
    read_scheduled = true;
    loop.defer([this] { read_listed_connections(); });
}

// After the events of an iteration: one read of every readable connection, kReadSlots of them per system call
// (IoBatch), each into its own slot. A read that fills its slot may have left more: the connection goes on reading
// directly, as do TLS connections.
void Server::Loop::read_listed_connections() {
    read_scheduled = false;
    std::vector<std::uint64_t> ids;
    ids.swap(read_list);
    std::uint64_t slot_ids[kReadSlots];
    for (std::size_t next = 0; next < ids.size();) {
        std::size_t slots = 0;
        for (; next < ids.size() && slots < kReadSlots; ++next) {
            Connection* c = find(ids[next]);
            if (c == nullptr || c->fd < 0) continue;
            c->read_listed = false;
            if (c->reading_paused || c->output_paused) continue;  // (paused meanwhile: read again when resumed)
            loop.guarded(*c, [&] {
                io.add_recv(c->fd, read_slots.data() + slots * kReadSlot, kReadSlot, slots);
                slot_ids[slots++] = c->id;
            });
        }
        io.run([&](std::uint64_t slot, ssize_t n) {
            Connection* c = find(slot_ids[slot]);
            if (c == nullptr || c->fd < 0) return;
            loop.guarded(*c, [&] {
                const bool lingering = c->state == Connection::State::closing;
                if (took(*c, read_slots.data() + slot * kReadSlot, n) &&
                    (lingering || n == static_cast<ssize_t>(kReadSlot)))
                    on_readable(*c);
            });
        });
    }
    ids.clear();
    if (read_list.empty()) read_list.swap(ids);  // keeps the capacity
}

void Server::Loop::on_readable(Connection& c) {
    if (read_buffer.empty()) read_buffer.resize(kReadChunk);
    while (c.fd >= 0 && !c.reading_paused && !c.output_paused) {
        const bool lingering = c.state == Connection::State::closing;
        ssize_t n = stream_read(c.fd, c.tls.get(), read_buffer.data(), read_buffer.size());
        if (n < 0) n = -errno;
        if (!took(c, read_buffer.data(), n)) return;
        // A short read drained the socket (epoll is level-triggered: anything later is reported again) unless
        // TLS holds bytes the socket will not report again. Lingering: discard until EOF.
        if (!lingering && n > 0 && static_cast<std::size_t>(n) < read_buffer.size() &&
            !(c.fd >= 0 && c.tls && c.tls->pending()))
            return;
    }
}

bool Server::Loop::took(Connection& c, const char* data, ssize_t n) {
    if (n > 0) {
        c.last_activity_ms = loop.now_ms();
        if (c.state == Connection::State::closing) return true;  // lingering: discarded
        if (c.request_started_ms == 0) c.request_started_ms = c.last_activity_ms;
        c.in.append(data, static_cast<std::size_t>(n));
        process(c);
        return true;
    }
    if (n == 0) {
        // EOF. A request being handled still gets its answer written if the client only half-closed; anything
        // else (idle, partial request, lingering) ends here, once what is written already went out (a refusal
        // is written at the end of the iteration that read its request: the client may have half-closed since).
        if (c.listed && !c.writing) flush(c);
        if (c.fd < 0) return false;
        if (c.state == Connection::State::handling) {
            c.keep_alive = false;
            c.reading_paused = true;
            update_events(c);
        } else {
            destroy(c);
        }
        return false;
    }
    if (n == -EAGAIN || n == -EWOULDBLOCK) {
        if (c.tls && c.tls->wants_write() && !c.writing) {
            c.writing = true;
            update_events(c);
        }
        return false;
    }
    if (n == -EINTR) return true;
    if (c.tls)
        Logger().debug("api: TLS read from " + client_key_text(c.peer) + " failed: " + strerror(static_cast<int>(-n)));
    destroy(c);
    return false;
}

// Drives the TLS handshake of a new connection; once done, the connection reads like any other.
void Server::Loop::handshake(Connection& c) {
    std::string error;
    const TlsSession::Handshake step = tls_handshake_step(
        *c.tls, c.writing, [&] { update_events(c); }, error);
    if (step == TlsSession::Handshake::done) {
        on_readable(c);  // the first request may have come with the handshake's last flight
    } else if (step == TlsSession::Handshake::failed) {
        Logger().info("api: TLS handshake with " + client_key_text(c.peer) + " failed: " + error);
        destroy(c);
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
    if (head.status == ParseStatus::need_more) return false;
    if (head.too_large) {
        refuse(c, 431, "request header exceeds " + std::to_string(s.max_head) + " bytes");
        return false;
    }
    if (head.status == ParseStatus::error) {
        refuse(c, 400, head.error);
        return false;
    }
    RequestHead r = parse_request(head, s.max_body);
    if (r.error_status != 0) {
        refuse(c, r.error_status, r.error);
        return false;
    }

    Request& req = c.request;
    req = Request{};
    req.peer = c.peer;
    req.method = std::move(r.method);
    req.target = std::move(r.target);
    req.path = std::move(r.path);
    req.query = std::move(r.query);
    req.minor_version = r.minor_version;
    req.headers = std::move(head.headers);
    c.keep_alive = s.keep_alive && !draining && r.keep_alive;
    c.head_only = req.method == "HEAD";
    c.minor_version = r.minor_version;
    c.in.erase(0, head.consumed);

    switch (r.framing) {
        case RequestHead::Framing::chunked:
            c.state = Connection::State::chunked;
            c.chunked.emplace(s.max_body);
            break;
        case RequestHead::Framing::length:
            c.state = Connection::State::body;
            c.body_left = r.content_length;  // the body grows as it comes: a declared length reserves nothing
            break;
        case RequestHead::Framing::none:
            dispatch(c);
            return true;
    }
    // The client waits for our go-ahead before sending the body (curl does for bodies over 1 KB).
    if (r.expect_continue && c.in.empty()) {
        c.out += "HTTP/1.1 100 Continue\r\n\r\n";
        schedule_flush(c);
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
    if (r.status == ParseStatus::error) {
        refuse(c, r.error_status, r.error);
        return false;
    }
    if (r.status == ParseStatus::need_more) return false;
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
    // The task holds what it calls: after a shutdown timeout it may run (or start) when the server is gone.
    server.workers_->post([self = std::move(self), calls = server.calls_, id, req = std::move(c.request)]() mutable {
        Response response;
        try {
            response = calls->handler(req);
        } catch (const std::exception& e) {
            Logger().error(std::string("api: request failed: ") + e.what());
            response = calls->error_page(500, "internal server error");
        }
        Responder(self, id)(std::move(response));
    });
    c.request = Request{};
}

void Server::Loop::on_response(std::uint64_t id, Response response) {
    server.in_flight_.fetch_sub(1);
    if (draining) server.notify_if_idle();
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
    schedule_flush(c);
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

void Server::Loop::schedule_flush(Connection& c) {
    if (c.listed || c.writing) return;  // listed already, or EPOLLOUT will flush it
    c.listed = true;
    flush_list.push_back(c.id);
    if (flush_scheduled) return;
    flush_scheduled = true;
    loop.defer([this] { write_listed(); });
}

// After all events and tasks of an iteration: the first write of every listed connection in one system call
// (IoBatch); what a connection has left after it (rare: a full socket buffer) goes directly.
void Server::Loop::write_listed() {
    flush_scheduled = false;
    std::vector<std::uint64_t> ids;
    ids.swap(flush_list);
    std::size_t direct = 0;  // ids[0, direct): TLS, or nothing to write; flushed after the batch
    for (std::uint64_t id : ids) {
        Connection* c = find(id);
        if (c == nullptr || c->fd < 0) continue;
        c->listed = false;
        if (c->writing) continue;  // blocked meanwhile: EPOLLOUT will flush it
        if (c->tls || pending_output(*c) == 0) {
            ids[direct++] = id;
            continue;
        }
        loop.guarded(*c, [&] {
            iovec v{c->out.data() + c->out_offset, pending_output(*c)};
            io.add_send(c->fd, &v, 1, id);
        });
    }
    io.run([this](std::uint64_t id, ssize_t result) {
        Connection* c = find(id);
        if (c == nullptr || c->fd < 0) return;
        loop.guarded(*c, [&] {
            if (result > 0) {
                c->out_offset += static_cast<std::size_t>(result);
                c->write_stalled_ms = 0;
                flush(*c);  // the rest, if any; else what ends a flush
            } else if (result == -EAGAIN || result == -EWOULDBLOCK) {
                blocked(*c);
            } else if (result == -EINTR || result == 0) {
                flush(*c);
            } else {
                destroy(*c);  // EPIPE, ECONNRESET: the client is gone
            }
        });
    });
    // TLS writes through OpenSSL; with nothing to write, a flush ends what a flush ends (the half-close of a
    // closing connection).
    for (std::size_t i = 0; i < direct; ++i)
        if (Connection* c = find(ids[i]); c != nullptr && c->fd >= 0 && !c->listed)
            loop.guarded(*c, [&] { flush(*c); });
    ids.clear();
    if (flush_list.empty()) flush_list.swap(ids);  // keeps the capacity
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
            blocked(c);
            return;
        }
        destroy(c);  // EPIPE, ECONNRESET: the client is gone
        return;
    }
    flushed(c);
}

void Server::Loop::blocked(Connection& c) {
    if (c.write_stalled_ms == 0) c.write_stalled_ms = loop.now_ms();
    if (!c.writing) {
        c.writing = true;
        update_events(c);
    }
    resume_if_drained(c);
}

void Server::Loop::flushed(Connection& c) {
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
    if (draining) server.notify_if_idle();
    if (c.client != nullptr) server.limits_->close(c.client, loop.now_ms() * 1000);
    c.client = nullptr;
    auto it = connections.find(c.id);
    if (it == connections.end()) return;
    // Freed at the end of the iteration: the caller may still hold a reference.
    graveyard.push_back(std::move(it->second));
    connections.erase(it);
    if (graveyard.size() == 1) loop.defer([this] { graveyard.clear(); });
}

}  // namespace hydra::http
