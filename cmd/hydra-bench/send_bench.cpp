#include "send_bench.h"

#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <deque>
#include <iostream>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "common/http.h"

namespace bench {

namespace http = hydra::http;

namespace {

void log(const std::string& msg) { std::cerr << "hydra-bench: send: " << msg << std::endl; }

// What became of each post, by seq.
enum class PostState : std::uint8_t { NotSent, InFlight, Ok, Rejected, Lost, Skipped };

// Request path or body with {id}, {ts} and {seq} placeholders, split once; any other '{' is literal text.
class Template {
  public:
    explicit Template(std::string_view text) {
        static constexpr std::pair<std::string_view, Kind> kFields[] = {
            {"{id}", Kind::Id}, {"{ts}", Kind::Ts}, {"{seq}", Kind::Seq}};
        std::string literal;
        for (std::size_t i = 0; i < text.size();) {
            bool matched = false;
            for (const auto& [name, kind] : kFields) {
                if (text.compare(i, name.size(), name) != 0) continue;
                if (!literal.empty()) parts_.emplace_back(Kind::Text, std::move(literal));
                literal.clear();
                parts_.emplace_back(kind, std::string());
                i += name.size();
                matched = true;
                break;
            }
            if (!matched) literal.push_back(text[i++]);
        }
        if (!literal.empty()) parts_.emplace_back(Kind::Text, std::move(literal));
    }

    void render(std::string& out, std::string_view id, std::int64_t ts, std::uint64_t seq) const {
        char digits[24];
        for (const auto& [kind, text] : parts_) {
            switch (kind) {
                case Kind::Text:
                    out.append(text);
                    break;
                case Kind::Id:
                    out.append(id);
                    break;
                case Kind::Ts:
                    out.append(digits, std::to_chars(digits, digits + sizeof digits, ts).ptr);
                    break;
                case Kind::Seq:
                    out.append(digits, std::to_chars(digits, digits + sizeof digits, seq).ptr);
                    break;
            }
        }
    }

  private:
    enum class Kind : std::uint8_t { Text, Id, Ts, Seq };
    std::vector<std::pair<Kind, std::string>> parts_;
};

// One complete HTTP response at the start of a buffer.
struct ParsedResponse {
    int status = 0;
    std::size_t length = 0;  // bytes, head and body
    bool close = false;      // the server closes the connection after it
};

// nullopt while the response is incomplete; throws std::runtime_error on a malformed one. Bodies are framed by
// Content-Length or chunked encoding (both servers use one of them for these answers).
std::optional<ParsedResponse> parse_response(std::string_view in) {
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
        std::string_view name = http::trim(line.substr(0, colon));
        std::string_view value = http::trim(line.substr(colon + 1));
        if (http::iequals(name, "content-length")) {
            std::from_chars(value.data(), value.data() + value.size(), content_length);
        } else if (http::iequals(name, "transfer-encoding")) {
            chunked = http::has_token(value, "chunked");
        } else if (http::iequals(name, "connection")) {
            if (http::has_token(value, "close")) r.close = true;
            if (http::has_token(value, "keep-alive")) r.close = false;
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
    };

    Publishers(const SendConfig& cfg, std::vector<PostState>& state, const std::vector<std::int64_t>& due_at)
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
            state_[seq] = PostState::InFlight;
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
        for (const auto& r : c.inflight) {
            state_[r.seq] = PostState::Lost;
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
                state_[req.seq] = PostState::Ok;
                ++counters_.ok;
            } else {
                state_[req.seq] = PostState::Rejected;
                ++counters_.rejected[r->status];
            }
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

    const SendConfig& cfg_;
    std::vector<PostState>& state_;
    const std::vector<std::int64_t>& due_at_;  // paced: when each message was due (empty: closed loop)
    std::vector<Conn> conns_;
    int epfd_ = -1;
    std::size_t rr_ = 0;
    int free_slots_ = 0;
    std::uint64_t inflight_ = 0;
    std::int64_t from_ = 0;
    std::int64_t to_ = 0;
    Counters counters_;
};

// CPU of the server processes over the measured window: CpuMeter for the main one, per-thread CPU, and the other
// processes (a second hydra host, the Kafka mock).
class ServerCpu {
  public:
    explicit ServerCpu(const SendConfig& cfg) : cfg_(cfg), meter_(cfg.server_pid), start_ns_(now_ns()) {
        if (cfg.server_pid > 0) threads_ = thread_cpu_seconds(cfg.server_pid);
        for (const auto& [name, pid] : cfg.extra_pids) extra_.push_back(process_cpu_seconds(pid));
    }
    OJson to_json() const {
        OJson j = meter_.to_json();
        const double wall = static_cast<double>(now_ns() - start_ns_) / 1e9;
        if (cfg_.server_pid > 0)
            j["server_threads"] = thread_cpu_json(threads_, thread_cpu_seconds(cfg_.server_pid), wall);
        double extra_cores = 0;
        for (std::size_t i = 0; i < cfg_.extra_pids.size(); ++i) {
            auto end = process_cpu_seconds(cfg_.extra_pids[i].second);
            OJson cores;
            if (extra_[i] && end && wall > 0) {
                cores = round_to((*end - *extra_[i]) / wall, 3);
                extra_cores += (*end - *extra_[i]) / wall;
            }
            j["processes"][cfg_.extra_pids[i].first] = cores;
        }
        // The other server processes (a second host, the broker) are the server's, not "other" load.
        if (j.contains("other_cores") && j["other_cores"].is_number())
            j["other_cores"] = round_to(std::max(0.0, j["other_cores"].get<double>() - extra_cores), 3);
        return j;
    }

  private:
    const SendConfig& cfg_;
    CpuMeter meter_;
    std::int64_t start_ns_;
    std::map<std::string, ThreadCpu> threads_;
    std::vector<std::optional<double>> extra_;
};

}  // namespace

OJson run_send(SendConfig cfg) {
    const bool paced = cfg.rate > 0;
    const double total_s = cfg.warmup_s + cfg.duration_s;
    // Messages to send (paced), or the most a closed loop may send: every message gets a state byte and an arrival
    // counter, so duplicates and losses are counted one by one.
    const auto capacity = static_cast<std::size_t>(paced ? std::ceil(total_s * cfg.rate) : total_s * 1'000'000);
    cfg.pool.mode = Mode::Deliver;
    cfg.pool.deliver_capacity = capacity;
    const int clients = cfg.pool.connections;

    OJson result{{"rate_requested", paced ? OJson(cfg.rate) : OJson("closed loop")},
                 {"warmup_s", cfg.warmup_s},
                 {"duration_s", cfg.duration_s},
                 {"publishers", cfg.publishers},
                 {"pipeline", cfg.pipeline},
                 {"post_path", cfg.post_path},
                 {"body", cfg.body},
                 {"ws_path", cfg.pool.path + (cfg.pool.id_in_path ? cfg.pool.id_prefix + "<i>" : "")},
                 {"client_id", cfg.pool.id_prefix + "<i>"}};

    Pool pool(cfg.pool);
    log("connecting " + std::to_string(clients) + " clients");
    Pool::ConnectResult cr = pool.connect_all();
    double connect_s = static_cast<double>(cr.finished_ns - cr.started_ns) / 1e9;
    result["connect"] = OJson{{"open", cr.open}, {"failed", cr.failed}, {"seconds", round_to(connect_s, 3)}};
    if (!cr.errors.empty()) result["connect"]["errors"] = cr.errors;
    log(std::to_string(cr.open) + " open, " + std::to_string(cr.failed) + " failed in " + std::to_string(connect_s) +
        " s");
    // A message to a client that is not there is not a measurement of the server.
    if (cr.failed > 0) throw std::runtime_error("clients failed to connect: " + cr.errors.front());

    std::vector<PostState> state(capacity, PostState::NotSent);
    std::vector<std::int64_t> due_at;  // paced: message k is due at due_at[k]
    std::vector<std::string> ids(static_cast<std::size_t>(clients));
    for (int i = 0; i < clients; ++i) ids[static_cast<std::size_t>(i)] = cfg.pool.id_prefix + std::to_string(i);
    const Template path(cfg.post_path);
    const Template body(cfg.body);

    Publishers pubs(cfg, state, due_at);
    pubs.open_all();
    std::this_thread::sleep_for(std::chrono::duration<double>(cfg.settle_s));

    const std::int64_t t0 = now_ns() + 10'000'000;
    const std::int64_t from = t0 + static_cast<std::int64_t>(cfg.warmup_s * 1e9);
    const std::int64_t to = from + static_cast<std::int64_t>(cfg.duration_s * 1e9);
    if (paced) {
        const double period = 1e9 / cfg.rate;
        due_at.resize(capacity);
        for (std::size_t k = 0; k < capacity; ++k)
            due_at[k] = t0 + static_cast<std::int64_t>(static_cast<double>(k) * period);
    }
    pool.deliver_window(from, to);
    pubs.set_window(from, to);
    log(std::string(paced ? "paced at " + std::to_string(cfg.rate) + " msg/s" : "closed loop") + ", warmup " +
        std::to_string(cfg.warmup_s) + " s, measuring " + std::to_string(cfg.duration_s) + " s");

    std::string request, rendered_path, rendered_body;
    auto build = [&](std::uint64_t k, std::int64_t ts) {
        const std::string& id = ids[k % static_cast<std::size_t>(clients)];
        rendered_path.clear();
        rendered_body.clear();
        path.render(rendered_path, id, ts, k);
        body.render(rendered_body, id, ts, k);
        request.clear();
        request.append("POST ").append(rendered_path).append(" HTTP/1.1\r\nHost: ").append(cfg.api_host);
        request.append("\r\nContent-Type: ").append(cfg.content_type).append("\r\nContent-Length: ");
        request.append(std::to_string(rendered_body.size())).append("\r\n\r\n").append(rendered_body);
    };

    Histogram send_lag;                // paced: actual write - due, messages due inside the window
    std::uint64_t delayed = 0;         // paced: messages that were due while every connection was busy
    std::uint64_t max_backlog = 0;     // paced: most messages due and not yet sendable at once
    std::uint64_t backlog_mark = 0;    // messages below this were already checked for the backlog
    std::uint64_t next = 0;            // the next message to send
    std::uint64_t due_in_window = 0;   // paced: messages due inside the window that were sent (at any time)
    std::uint64_t sent_in_window = 0;  // requests written inside the window
    std::uint64_t skipped = 0;         // paced: not sent, more than max_lag late (the server is far behind)
    const auto max_lag = static_cast<std::int64_t>(cfg.max_lag_s * 1e9);
    std::optional<ServerCpu> cpu;
    OJson cpu_json;
    const std::int64_t tick = static_cast<std::int64_t>(cfg.tick_us * 1000);
    const std::int64_t hard_stop = to + 30'000'000'000;  // posts still unanswered 30 s after the end count as lost

    for (;;) {
        std::int64_t now = now_ns();
        if (!cpu && now >= from) cpu.emplace(cfg);
        if (cpu && cpu_json.is_null() && now >= to) cpu_json = cpu->to_json();
        std::int64_t timeout = 10'000'000;
        if (paced && next < capacity) {
            const auto due_count =
                now < t0
                    ? 0
                    : std::min<std::uint64_t>(
                          capacity, static_cast<std::uint64_t>(static_cast<double>(now - t0) * cfg.rate / 1e9) + 1);
            // A server far behind would otherwise keep the run going for minutes after the window: messages that
            // could not be sent within max_lag of their due time are given up (and reported).
            while (next < due_count && now - due_at[next] > max_lag) {
                state[next++] = PostState::Skipped;
                ++skipped;
            }
            while (next < due_count && pubs.has_room()) {
                build(next, due_at[next]);
                pubs.post(next, request, now);
                if (due_at[next] >= from && due_at[next] < to) {
                    send_lag.record(now - due_at[next]);
                    ++due_in_window;
                }
                if (now >= from && now < to) ++sent_in_window;
                ++next;
            }
            pubs.flush_all();
            if (next < due_count) {
                // Every connection is busy: these wait for an answer (their latency keeps counting from when
                // they were due).
                max_backlog = std::max<std::uint64_t>(max_backlog, due_count - next);
                if (due_count > backlog_mark) {
                    delayed += due_count - std::max(next, backlog_mark);
                    backlog_mark = due_count;
                }
                timeout = 1'000'000;
            } else if (next < capacity) {
                timeout = std::max(tick, due_at[next] - now);
            }
        } else if (!paced && now < to && next < capacity) {
            while (pubs.has_room() && next < capacity) {
                build(next, now);
                pubs.post(next, request, now);
                if (now >= from) ++sent_in_window;
                ++next;
            }
            pubs.flush_all();
            timeout = std::min<std::int64_t>(1'000'000, to - now);
        } else if (pubs.inflight() == 0 || now > hard_stop) {
            break;
        }
        pubs.poll(timeout);
    }
    if (cpu_json.is_null() && cpu) cpu_json = cpu->to_json();
    const std::int64_t posts_done = now_ns();
    log("posted " + std::to_string(next) + " messages; waiting for the deliveries");

    // Drain: until every accepted post arrived, or nothing arrived for drain_s.
    const auto& pc = pubs.counters();
    std::uint64_t last_seen = 0;
    std::int64_t last_progress = now_ns();
    for (;;) {
        Stats s = pool.merged_stats();
        const std::uint64_t unique = s.delivered - s.duplicates;
        if (unique >= pc.ok && s.without_seq == 0) break;
        const std::int64_t now = now_ns();
        if (s.delivered != last_seen) {
            last_seen = s.delivered;
            last_progress = now;
        } else if (now - last_progress > static_cast<std::int64_t>(cfg.drain_s * 1e9)) {
            break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    const double drain_wait_s = static_cast<double>(now_ns() - posts_done) / 1e9;

    // One by one: accepted but never delivered, delivered although not accepted.
    std::uint64_t missing = 0, missing_in_window = 0, delivered_not_ok = 0, lost_delivered = 0;
    std::vector<std::uint64_t> missing_examples;
    for (std::uint64_t k = 0; k < next; ++k) {
        const std::uint8_t got = pool.arrivals(k);
        if (state[k] == PostState::Ok && got == 0) {
            ++missing;
            if (paced && due_at[k] >= from && due_at[k] < to) ++missing_in_window;
            if (missing_examples.size() < 5) missing_examples.push_back(k);
        } else if (state[k] == PostState::Lost && got > 0) {
            ++lost_delivered;
        } else if (state[k] != PostState::Ok && got > 0) {
            ++delivered_not_ok;
        }
    }
    Stats s = pool.merged_stats();

    OJson rejected = OJson::object();
    for (const auto& [status, n] : pc.rejected) rejected[std::to_string(status)] = n;
    OJson errors = OJson::object();
    for (const auto& [why, n] : pc.errors) errors[why] = n;
    result["posts"] = OJson{{"sent", pc.sent},
                            {"sent_in_window", sent_in_window},
                            {"due_in_window_and_sent", paced ? OJson(due_in_window) : OJson()},
                            {"skipped_over_max_lag", paced ? OJson(skipped) : OJson()},
                            {"ok_2xx", pc.ok},
                            {"rejected", rejected},
                            {"lost_in_flight", pc.lost},
                            {"connection_errors", errors},
                            {"rate_in_window", round_to(static_cast<double>(sent_in_window) / cfg.duration_s, 1)}};
    result["deliveries"] =
        OJson{{"total", s.delivered},
              {"in_window", s.delivered_in_window},
              {"rate_in_window", round_to(static_cast<double>(s.delivered_in_window) / cfg.duration_s, 1)},
              {"missing", missing},
              {"missing_due_in_window", paced ? OJson(missing_in_window) : OJson()},
              {"missing_examples_seq", missing_examples},
              {"duplicates", s.duplicates},
              {"misrouted", s.misrouted},
              {"delivered_without_2xx", delivered_not_ok},
              {"lost_in_flight_but_delivered", lost_delivered},
              {"bad_messages", s.bad_messages},
              {"without_seq", s.without_seq},
              {"payload_bytes", OJson{{"min", s.min_payload}, {"max", s.max_payload}}},
              {"drain_wait_s", round_to(drain_wait_s, 3)}};
    // The latency the product promises: from when the message was due (paced) or posted (closed loop) to its
    // arrival at the client, for messages due inside the window.
    result["latency_ms"] = s.deliver_latency.to_json_ms();
    result["post_latency_ms"] = pc.post_latency.to_json_ms();
    if (paced) {
        result["publisher"] = OJson{{"send_lag_ms", send_lag.to_json_ms()},
                                    {"delayed_by_busy_connections", delayed},
                                    {"max_backlog", max_backlog}};
    }
    result["clients"] = OJson{{"open_at_end", pool.open_connections()},
                              {"closed_by_server", s.closed_by_peer},
                              {"protocol_errors", s.protocol_errors},
                              {"pings", s.pings}};
    result["cpu"] = cpu_json;
    if (cfg.server_pid > 0) {
        auto rss = read_rss(cfg.server_pid);
        result["server"] = OJson{{"pid", cfg.server_pid}, {"end", rss ? rss->to_json() : OJson()}};
    }
    log("delivered " + std::to_string(s.delivered_in_window) + " in the window (" +
        std::to_string(static_cast<double>(s.delivered_in_window) / cfg.duration_s) + "/s), p99 " +
        std::to_string(ms(s.deliver_latency.percentile(0.99))) + " ms, missing " + std::to_string(missing));
    return result;
}

}  // namespace bench
