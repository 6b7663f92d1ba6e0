// The HTTP publishers of the send, soak and stream scenarios: keep-alive HTTP/1.1 connections on one epoll that post
// templated requests and track what became of each one (by seq), plus the request templates.
#pragma once

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/message.h"
#include "util.h"

namespace bench {

// Where the publishers connect and how many requests each connection carries at once.
struct PublisherConfig {
    sockaddr_in api{};
    int publishers = 16;  // keep-alive HTTP connections
    int pipeline = 1;     // requests in flight per publisher connection
};

// What became of each post, by seq.
enum class PostState : std::uint8_t { not_sent, in_flight, ok, rejected, lost, skipped };

// Request path or body with {id}, {ts} and {seq} placeholders, split once; any other '{' is literal text.
class Template {
  public:
    explicit Template(std::string_view text) {
        static constexpr std::pair<std::string_view, Kind> kFields[] = {
            {"{id}", Kind::id}, {"{ts}", Kind::ts}, {"{seq}", Kind::seq}};
        std::string literal;
        for (std::size_t i = 0; i < text.size();) {
            bool matched = false;
            for (const auto& [name, kind] : kFields) {
                if (text.compare(i, name.size(), name) != 0) continue;
                if (!literal.empty()) parts_.emplace_back(Kind::text, std::move(literal));
                literal.clear();
                parts_.emplace_back(kind, std::string());
                i += name.size();
                matched = true;
                break;
            }
            if (!matched) literal.push_back(text[i++]);
        }
        if (!literal.empty()) parts_.emplace_back(Kind::text, std::move(literal));
    }

    void render(std::string& out, std::string_view id, std::int64_t ts, std::uint64_t seq) const {
        char digits[24];
        for (const auto& [kind, text] : parts_) {
            switch (kind) {
                case Kind::text:
                    out.append(text);
                    break;
                case Kind::id:
                    out.append(id);
                    break;
                case Kind::ts:
                    out.append(digits, std::to_chars(digits, digits + sizeof digits, ts).ptr);
                    break;
                case Kind::seq:
                    out.append(digits, std::to_chars(digits, digits + sizeof digits, seq).ptr);
                    break;
            }
        }
    }

  private:
    enum class Kind : std::uint8_t { text, id, ts, seq };
    std::vector<std::pair<Kind, std::string>> parts_;
};

// `request` := a POST of `body` to `path` (its capacity is reused from one request to the next).
inline void build_post(std::string& request, std::string_view path, std::string_view host,
                       std::string_view content_type, std::string_view body) {
    request.clear();
    request.append("POST ").append(path).append(" HTTP/1.1\r\nHost: ").append(host);
    request.append("\r\nContent-Type: ").append(content_type).append("\r\nContent-Length: ");
    request.append(std::to_string(body.size())).append("\r\n\r\n").append(body);
}

// One complete HTTP response at the start of a buffer.
struct ParsedResponse {
    int status = 0;
    std::size_t length = 0;  // bytes, head and body
    bool close = false;      // the server closes the connection after it
};

// nullopt while the response is incomplete; throws std::runtime_error on a malformed one. Bodies are framed by
// Content-Length or chunked encoding (both servers use one of them for these answers).
inline std::optional<ParsedResponse> parse_response(std::string_view in) {
    const std::size_t head_end = in.find("\r\n\r\n");
    if (head_end == std::string_view::npos) {
        if (in.size() > 64 * 1024) throw std::runtime_error("response header block over 64 KiB");
        return std::nullopt;
    }
    std::string_view head = in.substr(0, head_end);
    if (head.size() < 12 || head.substr(0, 5) != "HTTP/") throw std::runtime_error("bad status line");
    ParsedResponse r;
    auto [p, ec] = std::from_chars(head.data() + 9, head.data() + 12, r.status);
    if (ec != std::errc() || p != head.data() + 12) throw std::runtime_error("bad status line");
    r.close = head.substr(0, 8) == "HTTP/1.0";
    std::size_t content_length = 0;
    bool chunked = false;
    std::size_t pos = head.find("\r\n");
    while (pos != std::string_view::npos) {
        std::size_t next = head.find("\r\n", pos + 2);
        std::string_view line =
            head.substr(pos + 2, next == std::string_view::npos ? std::string_view::npos : next - pos - 2);
        pos = next;
        auto colon = line.find(':');
        if (colon == std::string_view::npos) continue;
        std::string_view name = hydra::http::trim(line.substr(0, colon));
        std::string_view value = hydra::http::trim(line.substr(colon + 1));
        if (hydra::http::iequals(name, "content-length")) {
            std::from_chars(value.data(), value.data() + value.size(), content_length);
        } else if (hydra::http::iequals(name, "transfer-encoding")) {
            chunked = hydra::http::has_token(value, "chunked");
        } else if (hydra::http::iequals(name, "connection")) {
            if (hydra::http::has_token(value, "close")) r.close = true;
            if (hydra::http::has_token(value, "keep-alive")) r.close = false;
        }
    }
    std::size_t body = head_end + 4;
    if (!chunked) {
        if (in.size() < body + content_length) return std::nullopt;
        r.length = body + content_length;
        return r;
    }
    for (;;) {
        std::size_t line_end = in.find("\r\n", body);
        if (line_end == std::string_view::npos) return std::nullopt;
        std::size_t size = 0;
        auto c = std::from_chars(in.data() + body, in.data() + line_end, size, 16);
        if (c.ec != std::errc()) throw std::runtime_error("bad chunk size");
        body = line_end + 2;
        if (size == 0) {
            // Trailers (none expected) up to an empty line.
            std::size_t end = in.substr(body, 2) == "\r\n" ? body + 2 : in.find("\r\n\r\n", body);
            if (end == std::string_view::npos || end > in.size()) return std::nullopt;
            r.length = end == body + 2 ? end : end + 4;
            return r;
        }
        if (in.size() < body + size + 2) return std::nullopt;
        body += size + 2;
    }
}

// The publisher connections: keep-alive HTTP/1.1 on one epoll, non-blocking, up to `pipeline` requests in flight
// each. Runs on the calling thread.
class Publishers {
  public:
    struct Counters {
        std::uint64_t sent = 0;
        std::uint64_t ok = 0;                   // 2xx
        std::map<int, std::uint64_t> rejected;  // other statuses
        std::uint64_t lost = 0;                 // in flight on a connection that broke: fate unknown
        std::uint64_t reconnects = 0;
        std::map<std::string, std::uint64_t> errors;  // connection errors by reason
        Histogram post_latency;                       // write to complete answer, posts due inside the window

        // {"503": n, ...} and {"reason": n, ...}
        OJson rejected_json() const {
            OJson j = OJson::object();
            for (const auto& [status, n] : rejected) j[std::to_string(status)] = n;
            return j;
        }
        OJson errors_json() const {
            OJson j = OJson::object();
            for (const auto& [why, n] : errors) j[why] = n;
            return j;
        }
    };

    // Called for every answer (status) and for every request lost with a broken connection (status 0), with the
    // time it was written and the time its fate became known.
    using AnswerHook = std::function<void(std::uint64_t seq, int status, std::int64_t sent_ns, std::int64_t now_ns)>;

    Publishers(PublisherConfig cfg, std::vector<PostState>& state, const std::vector<std::int64_t>& due_at)
        : cfg_(cfg), state_(state), due_at_(due_at), conns_(static_cast<std::size_t>(cfg.publishers)) {
        epfd_ = epoll_create1(EPOLL_CLOEXEC);
        if (epfd_ < 0) throw std::runtime_error(std::string("epoll_create1: ") + strerror(errno));
    }
    ~Publishers() {
        for (auto& c : conns_)
            if (c.fd >= 0) ::close(c.fd);
        ::close(epfd_);
    }
    Publishers(const Publishers&) = delete;
    Publishers& operator=(const Publishers&) = delete;

    void open_all() {
        for (auto& c : conns_) {
            if (!connect(c)) throw std::runtime_error("publisher cannot connect: " + counters_.errors.begin()->first);
        }
    }

    void set_window(std::int64_t from, std::int64_t to) {
        from_ = from;
        to_ = to;
    }
    bool has_room() const { return free_slots_ > 0; }
    std::uint64_t inflight() const { return inflight_; }
    const Counters& counters() const { return counters_; }
    void on_answer(AnswerHook hook) { on_answer_ = std::move(hook); }
    // Another descriptor to watch in poll() (a driven Pool's epoll): on_ready runs when it is readable.
    void also_watch(int fd, std::function<void()> on_ready) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.u32 = kWatched;
        if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0)
            throw std::runtime_error(std::string("epoll_ctl: ") + strerror(errno));
        on_watched_ = std::move(on_ready);
    }

    // Queues the request of message seq on a connection with room (call has_room() first); flush() sends. A
    // connection takes requests until its pipeline is full, then the next one: with --pipeline > 1 the messages
    // due at once leave in one write (fewer system calls for the load generator); with 1 it is round robin.
    void post(std::uint64_t seq, std::string_view request, std::int64_t now) {
        const std::size_t n = conns_.size();
        for (std::size_t i = 0; i < n; ++i) {
            Conn& c = conns_[(rr_ + i) % n];
            if (c.fd < 0 || c.inflight.size() >= static_cast<std::size_t>(cfg_.pipeline)) continue;
            rr_ = (rr_ + i + (c.inflight.size() + 1 >= static_cast<std::size_t>(cfg_.pipeline) ? 1 : 0)) % n;
            c.out.append(request);
            c.inflight.push_back({seq, now});
            --free_slots_;
            ++inflight_;
            ++counters_.sent;
            state_[seq] = PostState::in_flight;
            return;
        }
    }

    void flush_all() {
        for (auto& c : conns_)
            if (c.fd >= 0 && !c.out.empty() && !c.want_out) flush(c);
    }

    // Waits up to timeout_ns for answers (or writable sockets) and handles them; reconnects broken connections.
    void poll(std::int64_t timeout_ns) {
        epoll_event events[64];
        timespec ts{static_cast<time_t>(timeout_ns / 1'000'000'000), static_cast<long>(timeout_ns % 1'000'000'000)};
        int n = epoll_pwait2(epfd_, events, 64, &ts, nullptr);
        for (int i = 0; i < n; ++i) {
            if (events[i].data.u32 == kWatched) {
                on_watched_();
                continue;
            }
            Conn& c = conns_[events[i].data.u32];
            if (c.fd < 0) continue;
            if (events[i].events & EPOLLOUT) flush(c);
            if (c.fd >= 0 && (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP))) on_readable(c);
        }
        const std::int64_t now = now_ns();
        for (auto& c : conns_)
            if (c.fd < 0 && now >= c.retry_at) connect(c);
    }

  private:
    struct Request {
        std::uint64_t seq;
        std::int64_t sent_ns;
    };
    struct Conn {
        int fd = -1;
        bool want_out = false;
        std::int64_t retry_at = 0;
        std::string out;  // requests not yet written
        std::string in;   // answer bytes not yet parsed
        std::deque<Request> inflight;
    };

    // A blocking connect (loopback: immediate), then non-blocking. False (and retried later) on failure.
    bool connect(Conn& c) {
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&cfg_.api), sizeof cfg_.api) != 0) {
            ++counters_.errors[std::string("connect: ") + strerror(errno)];
            if (fd >= 0) ::close(fd);
            c.retry_at = now_ns() + 100'000'000;
            return false;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c.fd = fd;
        c.want_out = false;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP;
        ev.data.u32 = static_cast<std::uint32_t>(&c - conns_.data());
        epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev);
        free_slots_ += cfg_.pipeline;
        return true;
    }

    // Closes a broken connection: its requests in flight may or may not have been taken by the server.
    void drop(Conn& c, const std::string& why) {
        ++counters_.errors[why];
        ++counters_.reconnects;
        epoll_ctl(epfd_, EPOLL_CTL_DEL, c.fd, nullptr);
        ::close(c.fd);
        c.fd = -1;
        free_slots_ -= cfg_.pipeline - static_cast<int>(c.inflight.size());
        const std::int64_t now = on_answer_ ? now_ns() : 0;
        for (const auto& r : c.inflight) {
            if (on_answer_) on_answer_(r.seq, 0, r.sent_ns, now);
            state_[r.seq] = PostState::lost;
            ++counters_.lost;
            --inflight_;
        }
        c.inflight.clear();
        c.out.clear();
        c.in.clear();
        c.retry_at = 0;  // reconnect at the next poll
    }

    void set_want_out(Conn& c, bool want) {
        if (c.want_out == want) return;
        c.want_out = want;
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLRDHUP | (want ? EPOLLOUT : 0u);
        ev.data.u32 = static_cast<std::uint32_t>(&c - conns_.data());
        epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev);
    }

    void flush(Conn& c) {
        std::size_t off = 0;
        while (off < c.out.size()) {
            ssize_t n = ::send(c.fd, c.out.data() + off, c.out.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                off += static_cast<std::size_t>(n);
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                break;
            } else {
                drop(c, std::string("send: ") + strerror(errno));
                return;
            }
        }
        c.out.erase(0, off);
        set_want_out(c, !c.out.empty());
    }

    void on_readable(Conn& c) {
        char buf[65536];
        for (;;) {
            ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                c.in.append(buf, static_cast<std::size_t>(n));
                if (static_cast<std::size_t>(n) < sizeof buf) break;
                continue;
            }
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            // EOF or error: answers already complete are still handled first.
            parse_answers(c);
            if (c.fd >= 0) drop(c, n == 0 ? "closed by server" : std::string("recv: ") + strerror(errno));
            return;
        }
        parse_answers(c);
    }

    void parse_answers(Conn& c) {
        const std::int64_t now = now_ns();
        std::size_t off = 0;
        while (c.fd >= 0 && off < c.in.size()) {
            std::optional<ParsedResponse> r;
            try {
                r = parse_response(std::string_view(c.in).substr(off));
            } catch (const std::exception& e) {
                drop(c, std::string("bad answer: ") + e.what());
                return;
            }
            if (!r) break;
            off += r->length;
            if (c.inflight.empty()) {
                drop(c, "answer without a request");
                return;
            }
            Request req = c.inflight.front();
            c.inflight.pop_front();
            --inflight_;
            ++free_slots_;
            if (r->status >= 200 && r->status < 300) {
                state_[req.seq] = PostState::ok;
                ++counters_.ok;
            } else {
                state_[req.seq] = PostState::rejected;
                ++counters_.rejected[r->status];
            }
            if (on_answer_) on_answer_(req.seq, r->status, req.sent_ns, now);
            const std::int64_t due = due_at_.empty() ? req.sent_ns : due_at_[req.seq];
            if (due >= from_ && due < to_) counters_.post_latency.record(now - req.sent_ns);
            if (r->close) {
                // Requests pipelined behind this answer were not taken.
                c.in.clear();
                drop(c, "server closed the connection (Connection: close)");
                return;
            }
        }
        if (c.fd >= 0) c.in.erase(0, off);
    }

    PublisherConfig cfg_;
    AnswerHook on_answer_;
    std::vector<PostState>& state_;
    const std::vector<std::int64_t>& due_at_;  // paced: when each message was due (empty: closed loop)
    std::vector<Conn> conns_;
    static constexpr std::uint32_t kWatched = UINT32_MAX;  // the also_watch() descriptor's epoll tag
    int epfd_ = -1;
    std::function<void()> on_watched_;
    std::size_t rr_ = 0;
    int free_slots_ = 0;
    std::uint64_t inflight_ = 0;
    std::int64_t from_ = 0;
    std::int64_t to_ = 0;
    Counters counters_;
};

}  // namespace bench
