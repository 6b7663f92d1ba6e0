#include "ws/connection.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <hydra/log.h>

#include "ws/loop.h"

namespace hydra::ws {

namespace {

constexpr std::size_t kReadChunk = 64 * 1024;
constexpr std::size_t kMaxReadPerEvent = 256 * 1024;  // fairness between connections of one loop

}  // namespace

void WsServer::Connection::on_events(std::uint32_t events) {
    if (events & (EPOLLERR)) {
        loop.destroy(*this, close_code::abnormal, "socket error");
        return;
    }
    if (tls && !tls->established()) {
        tls_handshake();
        return;
    }
    // (TLS: reading may wait for the socket to take bytes, e.g. a key update's answer.)
    const bool readable = (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP)) || (tls && tls->wants_write());
    if (events & EPOLLOUT) {
        flush();
        if (fd < 0) return;
    }
    if (readable) read();
}

void WsServer::Connection::on_failure() noexcept {
    try {
        loop.destroy(*this, close_code::internal_error, "internal error");
    } catch (...) {  // nothing more to do for this connection
    }
}

// Drives the TLS handshake of a new connection; once done, the connection reads its upgrade request.
void WsServer::Connection::tls_handshake() {
    std::string error;
    const TlsSession::Handshake step = tls_handshake_step(
        *tls, writing, [this] { update_events(); }, error);
    if (step == TlsSession::Handshake::done) {
        read();  // the upgrade request may have come with the handshake's last flight
    } else if (step == TlsSession::Handshake::failed) {
        Logger().info("ws: TLS handshake with " + client_key_text(ip) + " failed: " + error);
        loop.destroy(*this, close_code::abnormal, "TLS handshake failed");
    }
}

void WsServer::Connection::read() {
    std::vector<std::uint8_t>& buffer = loop.read_buffer;
    if (buffer.empty()) buffer.resize(kReadChunk);
    std::size_t total = 0;
    while (fd >= 0 && total < kMaxReadPerEvent && !reading_paused) {
        ssize_t n = stream_read(fd, tls.get(), buffer.data(), buffer.size());
        if (n > 0) {
            total += static_cast<std::size_t>(n);
            last_recv_ms = loop.now_ms();
            if (loop.metrics) loop.metrics->bytes_in.inc(n);
            if (state == State::handshake || state == State::upgrading) {
                if (in.size() + static_cast<std::size_t>(n) > kMaxHandshakeBytes + loop.settings().max_message) {
                    loop.destroy(*this, close_code::abnormal, "handshake too large");
                    return;
                }
                in.append(reinterpret_cast<const char*>(buffer.data()), static_cast<std::size_t>(n));
                if (state == State::handshake) loop.handle_handshake(*this);
            } else if (state == State::open || (state == State::closing && !close_received)) {
                feed(buffer.data(), static_cast<std::size_t>(n));
            }
            // else: closing after the peer's close frame: ignore whatever follows
            // A short read drained the socket: the recv() that would only say EAGAIN is skipped (epoll is
            // level-triggered, so bytes or an EOF arriving later are reported again), unless TLS holds bytes the
            // socket will not report again.
            if (static_cast<std::size_t>(n) < buffer.size() && !(fd >= 0 && tls && tls->pending())) return;
            continue;
        }
        if (n == 0) {
            // Peer closed its side. Before a close handshake that is an abnormal closure (1006).
            if (state == State::closing)
                loop.destroy(*this, close_code, close_reason);
            else
                loop.destroy(*this, close_code::abnormal, "connection dropped");
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (tls && tls->wants_write() && !writing) {
                writing = true;
                update_events();
            }
            return;
        }
        if (errno == EINTR) continue;
        loop.destroy(*this, close_code::abnormal, std::string("read: ") + strerror(errno));
        return;
    }
    // Stopped for fairness with TLS still holding bytes: the socket will not report them, read them next turn.
    if (fd >= 0 && !reading_paused && tls && tls->pending()) read_later();
}

void WsServer::Connection::read_later() {
    Loop* l = &loop;
    loop.loop.post([l, id = id] {
        if (Connection* c = l->find(id); c != nullptr && c->fd >= 0 && !c->reading_paused) c->read();
    });
}

void WsServer::Connection::feed(const std::uint8_t* data, std::size_t len) {
    MessageDecoder& d = *decoder;
    d.feed(data, len);
    Event ev;
    while (fd >= 0 && d.next(ev)) {
        switch (ev.type) {
            case Event::Type::text:
            case Event::Type::binary: {
                if (close_sent) break;  // after our close frame, messages are dropped (RFC 6455 5.5.1)
                if (!take_token()) return;
                if (loop.metrics) loop.metrics->messages_in.inc();
                bool binary = ev.type == Event::Type::binary;
                loop.dispatch(*this, d.take_message(), binary);
                break;
            }
            case Event::Type::ping:
                if (close_sent) break;
                if (!take_token()) return;
                enqueue_control(make_frame(encode_pong(ev.data)));
                break;
            case Event::Type::pong:
                break;
            case Event::Type::close: {
                // Echo the peer's code (1000 when it sent none), then close the TCP connection.
                const std::uint16_t echo = ev.code == close_code::no_status ? close_code::normal : ev.code;
                closing(encode_close(echo), ev.code, std::string(ev.data), true);
                return;
            }
            case Event::Type::error:
                fail(ev.code, std::string(ev.data));
                return;
        }
    }
}

bool WsServer::Connection::take_token() {
    const std::int64_t rate = loop.server.rate_per_s_.load(std::memory_order_relaxed);
    if (rate <= 0) return true;
    // A token bucket in integers: rate tokens per second = rate units per millisecond.
    const std::int64_t now = loop.now_ms();
    const std::int64_t full =
        static_cast<std::int64_t>(loop.server.rate_burst_.load(std::memory_order_relaxed)) * kTokenUnits;
    tokens = std::min(full, tokens + (now - tokens_ms) * rate);
    tokens_ms = now;
    if (tokens < kTokenUnits) {
        if (loop.metrics) loop.metrics->rate_limited.inc();
        fail(close_code::policy_violation, "rate limit");
        return false;
    }
    tokens -= kTokenUnits;
    return true;
}

// ---------------------------------------------------------------------------------------------------------------
// The close state machine.

void WsServer::Connection::closing(std::string last, std::uint16_t code, const std::string& reason, bool peer_done) {
    open_gate(nullptr);  // nothing waits behind the end
    if (!close_sent) {
        state = State::closing;  // first: the close frame is never taken for an overflow
        close_sent = true;
        close_code = code;
        close_reason = reason;
        close_deadline_ms = loop.now_ms() + loop.settings().close_timeout_ms;
        enqueue_raw(std::move(last));
    }
    if (peer_done) close_received = true;
    schedule_flush();
}

void WsServer::Connection::start_close(std::uint16_t code, const std::string& reason) {
    if (state == State::upgrading) {
        loop.destroy(*this, code, reason);
        return;
    }
    if (state != State::open) return;
    closing(encode_close(code, reason), code, reason, false);
}

void WsServer::Connection::fail(std::uint16_t code, const std::string& reason) {
    loop.report_error(*this, "protocol error " + std::to_string(code) + ": " + reason);
    closing(encode_close(code, reason), code, reason, true);
    close_code = code;  // what ended it, also when our close frame had gone out before
    close_reason = reason;
}

void WsServer::Connection::overflow() {
    // A client that does not read: drop what it has not received (keeping a partly written frame so the stream
    // stays well-formed, and over TLS the frames of a record OpenSSL holds half-written), tell it why, and close.
    loop.report_error(*this, "send queue full (" + std::to_string(out_bytes) + " bytes): closing");
    if (loop.metrics) loop.metrics->overflows.inc();
    std::size_t keep = std::max<std::size_t>(out_offset > 0 ? 1 : 0, tls ? tls->unfinished_write() : 0);
    std::size_t kept = 0;
    out_bytes = 0;
    for (; kept < out.size() && out_bytes < keep; ++kept) out_bytes += out[kept]->size() - (kept == 0 ? out_offset : 0);
    out.resize(kept);
    if (!confirms.empty()) settle_confirms(bytes_written + out_bytes);
    pending.clear();
    closing(encode_close(close_code::policy_violation, "send queue full"), close_code::policy_violation,
            "send queue full", false);
}

// ---------------------------------------------------------------------------------------------------------------
// Sending.

bool WsServer::Connection::room_for(std::size_t bytes) {
    if (out_bytes + bytes <= loop.settings().send_queue_bytes || state != State::open) return true;
    overflow();
    return false;
}

bool WsServer::Connection::enqueue(Frame frame) {
    if (fd < 0 || !room_for(frame->size())) return false;
    if (gate != kGateOpen) {
        held += frame->size();
        // A slow handler and much sent to its connection meanwhile: the reply will follow what waited.
        if (state == State::open && held > loop.settings().send_queue_bytes / 2) open_gate(nullptr);
    }
    out_bytes += frame->size();
    out.push_back(std::move(frame));
    schedule_flush();
    ++frames_out;
    if (loop.metrics) loop.metrics->messages_out.inc();
    return true;
}

bool WsServer::Connection::enqueue_control(Frame frame) {
    if (gate == kGateOpen) return enqueue(std::move(frame));
    if (fd < 0 || !room_for(frame->size())) return false;
    insert_at_gate(std::move(frame));
    ++gate;
    ++frames_out;
    if (loop.metrics) loop.metrics->messages_out.inc();
    return true;
}

void WsServer::Connection::reply(Frame frame) {
    if (!frame || close_sent || fd < 0) {
        open_gate(nullptr);
    } else if (gate == kGateOpen) {
        enqueue(std::move(frame));  // the gate opened early: the reply follows what went out meanwhile
    } else if (room_for(frame->size())) {
        ++frames_out;
        if (loop.metrics) loop.metrics->messages_out.inc();
        open_gate(std::move(frame));
    } else {
        open_gate(nullptr);
    }
}

void WsServer::Connection::enqueue_confirmed(Frame frame, std::function<void(bool written)> written) {
    if (close_sent || !enqueue(std::move(frame))) {
        written(false);
        return;
    }
    confirms.push_back({bytes_written + out_bytes, std::move(written)});
}

void WsServer::Connection::open_gate(Frame first) {
    if (gate == kGateOpen) return;
    if (first) insert_at_gate(std::move(first));
    gate = kGateOpen;
    held = 0;
    schedule_flush();
}

void WsServer::Connection::insert_at_gate(Frame frame) {
    const std::size_t at = std::min(gate, out.size());
    if (!confirms.empty() && at < out.size()) {
        // The frames behind the gate end later in the stream by frame's size.
        const std::uint64_t gate_end = bytes_written + out_bytes - held;
        for (auto& k : confirms)
            if (k.end > gate_end) k.end += frame->size();
    }
    out_bytes += frame->size();
    out.insert(out.begin() + static_cast<std::ptrdiff_t>(at), std::move(frame));
    schedule_flush();
}

void WsServer::Connection::settle_confirms(std::uint64_t keep_up_to) {
    // Written frames report true, frames ending past keep_up_to report false, the others keep waiting. Settled
    // entries leave the list before any callback runs.
    std::size_t first = 0;
    while (first < confirms.size() && confirms[first].end <= bytes_written) ++first;
    std::size_t last = first;
    while (last < confirms.size() && confirms[last].end <= keep_up_to) ++last;
    if (first == 0 && last == confirms.size()) return;
    std::vector<Confirm> settled;
    settled.reserve(first + confirms.size() - last);
    for (std::size_t i = 0; i < first; ++i) settled.push_back(std::move(confirms[i]));
    for (std::size_t i = last; i < confirms.size(); ++i) settled.push_back(std::move(confirms[i]));
    confirms.erase(confirms.begin() + static_cast<std::ptrdiff_t>(last), confirms.end());
    confirms.erase(confirms.begin(), confirms.begin() + static_cast<std::ptrdiff_t>(first));
    for (std::size_t i = 0; i < settled.size(); ++i) {
        try {
            settled[i].written(i < first);
        } catch (const std::exception& e) {
            Logger(uuid).error(std::string("ws: notify_confirmed callback failed: ") + e.what());
        }
    }
}

void WsServer::Connection::schedule_flush() {
    if (dirty || writing) return;  // already listed, or EPOLLOUT will flush it
    dirty = true;
    loop.schedule_flush(*this);
}

// What may go now (up to the gate), as buffers for one write; 0 when nothing may.
int WsServer::Connection::gather(iovec* iov) const {
    int n = 0;
    const std::size_t ready = std::min(gate, out.size());
    for (std::size_t i = 0; i < ready && n < IoBatch::kMaxIov; ++i, ++n) {
        const std::string& f = *out[i];
        std::size_t skip = i == 0 ? out_offset : 0;
        iov[n].iov_base = const_cast<char*>(f.data() + skip);
        iov[n].iov_len = f.size() - skip;
    }
    return n;
}

void WsServer::Connection::flush() {
    if (fd < 0) return;
    iovec iov[IoBatch::kMaxIov];
    while (int n = gather(iov)) {
        const ssize_t sent = !tls     ? send_buffers(fd, iov, n)
                             : n == 1 ? tls->write(iov[0].iov_base, iov[0].iov_len)
                                      : tls->writev(iov, n);
        if (sent < 0 && errno == EINTR) continue;
        if (!wrote(sent < 0 ? -errno : sent)) return;
    }
    flushed();
}

bool WsServer::Connection::add_to(IoBatch& batch) {
    if (fd < 0 || tls) return false;
    iovec iov[IoBatch::kMaxIov];
    const int n = gather(iov);
    if (n == 0) return false;
    batch.add_send(fd, iov, n, id);
    return true;
}

void WsServer::Connection::batch_sent(ssize_t result) {
    if (fd < 0) return;
    if (result == -EINTR || wrote(result)) flush();  // the rest, if any, directly
}

bool WsServer::Connection::wrote(ssize_t result) {
    if (result < 0) {
        if (result == -EAGAIN || result == -EWOULDBLOCK) {
            if (!writing) {
                writing = true;
                update_events();
            }
            return false;
        }
        loop.destroy(*this, close_code::abnormal, std::string("write: ") + strerror(static_cast<int>(-result)));
        return false;
    }
    std::size_t left = static_cast<std::size_t>(result);
    if (loop.metrics) loop.metrics->bytes_out.inc(result);
    out_bytes -= left;
    bytes_written += left;
    if (!confirms.empty()) settle_confirms(UINT64_MAX);
    std::size_t done = 0;
    while (done < out.size() && left > 0) {
        std::size_t avail = out[done]->size() - out_offset;
        if (left >= avail) {
            left -= avail;
            out_offset = 0;
            ++done;
        } else {
            out_offset += left;
            left = 0;
        }
    }
    out.erase(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(done));
    if (gate != kGateOpen) gate -= done;
    return fd >= 0;  // (a confirmation's callback may have closed it)
}

void WsServer::Connection::flushed() {
    // Everything that may go is written.
    if (writing) {
        writing = false;
        update_events();
    }
    if (!out.empty()) return;  // the rest waits behind the gate
    if (out.capacity() > 8) out.shrink_to_fit();
    // We closed first: half-close and wait for the peer's close frame or EOF (bounded by the deadline). Not over
    // TLS: the peer's TLS would take the FIN (or a close_notify) for the end of both directions before it answers.
    if (close_received) {
        loop.destroy(*this, close_code, close_reason);
    } else if (close_sent && !close_received && !tls) {
        ::shutdown(fd, SHUT_WR);
    }
}

void WsServer::Connection::update_events() {
    if (fd < 0) return;
    std::uint32_t ev = reading_paused ? 0 : kReadEvents;
    if (writing) ev |= EPOLLOUT;
    loop.loop.modify(fd, ev, this);
    // Reading again: what TLS already holds is not reported by the socket.
    if ((ev & EPOLLIN) && tls && tls->established() && tls->pending()) read_later();
}

}  // namespace hydra::ws
