// hydra-bench floor: the third peer of the WebSocket benchmarks, the least a server must do for the scenarios.
// One thread, one epoll set, level-triggered. It speaks just enough: the upgrade handshake, frame decoding (hydra's
// decoder: masks, UTF-8, limits), echo on /echo (one recv, the frame back with one send), and POST
// /v1/exchange/broadcast (the notify envelope encoded once, one send per connection, then the answer). No routing,
// no contexts, no hand-off between threads, no bounded queues beyond what a partial send leaves behind.
//
// With --queue FILE it is also the floor of the push path (`send`): POST /msg/send {"uuid":...,"msg":...} is
// durable before its 200, as hydra's: the posts of one loop pass are inserted into a SQLite table (WAL, synchronous
// NORMAL or --sync full, one transaction, 32, 8 or 1 rows per INSERT) at the end of the pass, which also deletes the
// rows the pass before delivered (one ranged DELETE: the ack); after the commit each post gets its 200 and its message
// goes out as a notify frame to the connection whose upgrade carried `X-Request-Id: <uuid>`. One thread: no queue
// consumer, no hand-off, no retry, no timeouts, nothing read back from SQLite.
//
// What it is for: on loopback every send also pays for the receiver's TCP processing, so a scenario's figures are
// mostly kernel time. The floor's figures say how much of a scenario any user-space server can do on this machine;
// hydra / floor says how close hydra is to that. It is not a server to use: no timeouts, no limits on clients.
//
//   hydra-bench floor --ws 127.0.0.1:0 --api 127.0.0.1:0 [--queue FILE [--sync normal|full]]
// prints "floor peer ready: ws://HOST:PORT http://HOST:PORT pid PID" once both listen; stops on SIGTERM/SIGINT.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>
#include <csignal>
#include <cstring>
#include <iostream>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <SQLiteCpp/SQLiteCpp.h>

#include <unordered_map>

#include <hydra/json.h>

#include "http/head.h"
#include "sqlite_rows.h"
#include "util.h"
#include "ws/dispatch.h"
#include "ws/frame.h"
#include "ws/handshake.h"

namespace {

namespace http = hydra::http;
namespace ws = hydra::ws;
using hydra::Json;

constexpr std::size_t kMaxMessage = 1 << 20;
constexpr std::size_t kMaxHttpRequest = 1 << 20;

struct Conn {
    enum class Kind { ws, api };
    Conn(int f, Kind k) : fd(f), kind(k), decoder(kMaxMessage, ws::Role::server) {}
    int fd;
    Kind kind;
    bool upgraded = false;
    bool echo = false;
    std::string uuid;  // X-Request-Id of the upgrade (the push path's address)
    std::string in;    // handshake or HTTP request bytes not consumed yet
    std::string out;   // what a partial send left
    ws::MessageDecoder decoder;
};

int listen_on(const std::string& address) {
    sockaddr_in addr = bench::parse_ipv4(address, true);
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 4096) != 0)
        throw std::runtime_error("listen on " + address + ": " + std::strerror(errno));
    return fd;
}

std::string bound_address(int fd) {
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    char host[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &addr.sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(addr.sin_port));
}

// The push path's durable part: posts waiting for the end of the loop pass, written in one transaction.
class Journal {
  public:
    Journal(const std::string& path, bool full_sync)
        : db_(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | SQLite::OPEN_NOMUTEX) {
        db_.exec("PRAGMA journal_mode=WAL");
        db_.exec(full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        db_.exec("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, payload BLOB NOT NULL)");
        insert_.emplace(db_, "INSERT INTO messages (payload) VALUES ", "(?)");
        ack_.emplace(db_, "DELETE FROM messages WHERE id <= ?");
    }

    // Durable once this returns: the payloads in one transaction (32, 8, then 1 row per INSERT, as the SQLite
    // backend does), with the ack of everything written before.
    void write(const std::vector<std::string>& payloads) {
        SQLite::Transaction tx(db_);
        if (last_id_ > 0) {
            ack_->tryReset();  // a statement an earlier failure left halted
            ack_->bind(1, last_id_);
            ack_->exec();
        }
        insert_->insert(payloads);
        tx.commit();
        last_id_ = db_.getLastInsertRowid();
    }

  private:
    SQLite::Database db_;
    std::optional<bench::RowInserter> insert_;
    std::optional<SQLite::Statement> ack_;
    std::int64_t last_id_ = 0;
};

class Floor {
  public:
    Floor(const std::string& ws_address, const std::string& api_address, const std::string& queue, bool full_sync)
        : ws_listener_(listen_on(ws_address)), api_listener_(listen_on(api_address)) {
        if (!queue.empty()) journal_.emplace(queue, full_sync);
        epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        ::sigprocmask(SIG_BLOCK, &mask, nullptr);
        signals_ = ::signalfd(-1, &mask, SFD_CLOEXEC);
        watch(ws_listener_, EPOLLIN);
        watch(api_listener_, EPOLLIN);
        watch(signals_, EPOLLIN);
        std::cout << "floor peer ready: ws://" << bound_address(ws_listener_) << " http://"
                  << bound_address(api_listener_) << " pid " << ::getpid() << std::endl;
    }

    void run() {
        std::vector<epoll_event> events(1024);
        for (;;) {
            int n = ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), -1);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) throw std::runtime_error("epoll_wait: " + std::string(std::strerror(errno)));
            for (int i = 0; i < n; ++i) {
                int fd = events[static_cast<std::size_t>(i)].data.fd;
                std::uint32_t ev = events[static_cast<std::size_t>(i)].events;
                if (fd == signals_) return;
                if (fd == ws_listener_ || fd == api_listener_) {
                    accept_all(fd, fd == ws_listener_ ? Conn::Kind::ws : Conn::Kind::api);
                    continue;
                }
                Conn* c = conn(fd);
                if (!c) continue;
                if ((ev & EPOLLOUT) && !flush(*c)) continue;
                if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(*c);
            }
            if (!posts_.empty()) commit_posts();
        }
    }

  private:
    void watch(int fd, std::uint32_t events, int op = EPOLL_CTL_ADD) {
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = fd;
        ::epoll_ctl(epoll_, op, fd, &ev);
    }

    Conn* conn(int fd) {
        return static_cast<std::size_t>(fd) < conns_.size() ? conns_[static_cast<std::size_t>(fd)].get() : nullptr;
    }

    void accept_all(int listener, Conn::Kind kind) {
        for (;;) {
            int fd = ::accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) return;
            int one = 1;
            ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            if (conns_.size() <= static_cast<std::size_t>(fd)) conns_.resize(static_cast<std::size_t>(fd) + 1);
            conns_[static_cast<std::size_t>(fd)] = std::make_unique<Conn>(fd, kind);
            watch(fd, EPOLLIN);
        }
    }

    void close_conn(Conn& c) {
        int fd = c.fd;
        if (auto it = by_uuid_.find(c.uuid); !c.uuid.empty() && it != by_uuid_.end() && it->second == fd)
            by_uuid_.erase(it);
        for (auto& post : posts_)
            if (post.poster == fd) post.poster = -1;
        ::close(fd);  // also leaves the epoll set
        conns_[static_cast<std::size_t>(fd)].reset();
    }

    // Sends `bytes` after whatever is pending; keeps the rest and asks for EPOLLOUT. False when it closed `c`.
    bool send(Conn& c, std::string_view bytes) {
        if (!c.out.empty()) {
            c.out.append(bytes);
            return true;
        }
        ssize_t n = ::send(c.fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) {
            close_conn(c);
            return false;
        }
        std::size_t sent = n < 0 ? 0 : static_cast<std::size_t>(n);
        if (sent < bytes.size()) {
            c.out.assign(bytes.substr(sent));
            watch(c.fd, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
        }
        return true;
    }

    bool flush(Conn& c) {
        std::string rest;
        rest.swap(c.out);
        watch(c.fd, EPOLLIN, EPOLL_CTL_MOD);
        return send(c, rest);
    }

    void on_readable(Conn& c) {
        char buf[65536];
        ssize_t n = ::recv(c.fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) return close_conn(c);
        if (n < 0) return;
        std::string_view bytes(buf, static_cast<std::size_t>(n));
        if (c.kind == Conn::Kind::api) return on_http(c, bytes);
        if (!c.upgraded) return on_handshake(c, bytes);
        on_frames(c, bytes);
    }

    void on_handshake(Conn& c, std::string_view bytes) {
        c.in.append(bytes);
        ws::UpgradeParse parse = ws::parse_upgrade_request(c.in);
        if (parse.status == ws::ParseStatus::need_more) return;
        if (parse.status != ws::ParseStatus::ok) {
            send(c, ws::http_error_response(parse.http_status, parse.reason, parse.response_headers));
            return close_conn(c);
        }
        c.upgraded = true;
        c.echo = parse.request.path == "/echo";
        if (auto id = parse.request.header("X-Request-Id"); id && !id->empty()) {
            c.uuid = std::string(*id);
            by_uuid_[c.uuid] = c.fd;
        }
        std::string rest = c.in.substr(parse.consumed);
        c.in = std::string();
        if (!send(c, ws::handshake_response(ws::accept_key(parse.request.key)))) return;
        if (!rest.empty()) on_frames(c, rest);
    }

    void on_frames(Conn& c, std::string_view bytes) {
        std::string reply;
        bool close = false;
        c.decoder.feed(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), [&](const ws::Event& e) {
            switch (e.type) {
                case ws::Event::Type::text:
                case ws::Event::Type::binary:
                    if (c.echo) {
                        auto op = e.type == ws::Event::Type::text ? hydra::WsOpcode::text : hydra::WsOpcode::binary;
                        ws::append_frame(reply, op, e.data);
                    }
                    break;
                case ws::Event::Type::ping:
                    ws::append_frame(reply, hydra::WsOpcode::pong, e.data);
                    break;
                case ws::Event::Type::pong:
                    break;
                case ws::Event::Type::close:
                    reply += ws::encode_close(ws::close_code::normal);
                    close = true;
                    break;
                case ws::Event::Type::error:
                    reply += ws::encode_close(e.code);
                    close = true;
                    break;
            }
        });
        if (!reply.empty() && !send(c, reply)) return;
        if (close) close_conn(c);
    }

    // Every complete request in the buffer (a poster may pipeline), answered in order: while posts of this
    // connection wait for the commit, its other answers wait behind them.
    void on_http(Conn& c, std::string_view bytes) {
        c.in.append(bytes);
        const int fd = c.fd;
        while (conn(fd) == &c && on_request(c)) {
        }
    }

    // One request from c.in; false when it needs more bytes (or closed the connection).
    bool on_request(Conn& c) {
        http::Head head = http::parse_head(c.in, kMaxHttpRequest);
        if (head.status == http::ParseStatus::need_more) return false;
        if (head.status != http::ParseStatus::ok) {
            close_conn(c);
            return false;
        }
        std::size_t length = 0;
        if (auto value = http::find_header(head.headers, "Content-Length"))
            std::from_chars(value->data(), value->data() + value->size(), length);
        if (c.in.size() < head.consumed + length) return false;
        const bool broadcast = head.start_line.rfind("POST /v1/exchange/broadcast ", 0) == 0;
        const bool push = journal_ && head.start_line.rfind("POST /msg/send ", 0) == 0;
        Json request = broadcast || push ? Json::parse(c.in.substr(head.consumed, length), nullptr, false) : Json();
        c.in.erase(0, head.consumed + length);
        if (push) {
            if (request.is_object() && request.contains("uuid") && request["uuid"].is_string() &&
                request.contains("msg") && request["msg"].is_string()) {
                Json data = {{"msg", request["msg"]}, {"uuid", request["uuid"]}};
                posts_.push_back({c.fd, request["uuid"].get<std::string>(), data.dump(), 0, {}});
                return true;  // answered after the commit
            }
            answer(c, 400, R"({"code":400,"msg":"bad body"})");
            return true;
        }

        int status = 200;
        std::string answer;
        if (!broadcast) {
            status = 404;
            answer = R"({"code":404,"msg":"no route"})";
        } else if (request.is_discarded() || !request.contains("data")) {
            status = 400;
            answer = R"({"code":400,"msg":"bad body"})";
        } else {
            std::string frame = ws::encode_text(ws::envelope("notify", 200, "data", request["data"]));
            std::size_t reached = 0;
            for (auto& other : conns_)
                if (other && other->kind == Conn::Kind::ws && other->upgraded && send(*other, frame)) ++reached;
            answer = R"({"code":0,"msg":"success","connections":)" + std::to_string(reached) + "}";
        }
        this->answer(c, status, answer);
        return true;
    }

    // Now, or after the commit when this connection has posts waiting for it (answers stay in request order).
    void answer(Conn& c, int status, std::string_view body) {
        for (const auto& post : posts_)
            if (post.poster == c.fd) return posts_.push_back({c.fd, {}, {}, status, std::string(body)});
        send_answer(c, status, body);
    }

    void send_answer(Conn& c, int status, std::string_view body) {
        send(c, "HTTP/1.1 " + std::to_string(status) + " " + std::string(http::http_status_text(status)) +
                    "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                    "\r\n\r\n" + std::string(body));
    }

    // The end of a loop pass: this pass's posts durable, then answered and delivered.
    void commit_posts() {
        std::vector<Post> posts;
        posts.swap(posts_);
        std::vector<std::string> payloads;
        payloads.reserve(posts.size());
        for (auto& post : posts)
            if (post.status == 0) payloads.push_back(std::move(post.data));
        bool ok = true;
        try {
            journal_->write(payloads);
        } catch (const std::exception& e) {
            std::cerr << "hydra-bench floor: queue write failed: " << e.what() << "\n";
            ok = false;
        }
        std::size_t next_payload = 0;
        for (const Post& post : posts) {
            Conn* poster = post.poster >= 0 ? conn(post.poster) : nullptr;
            if (post.status != 0) {  // an answer queued behind posts
                if (poster) send_answer(*poster, post.status, post.answer);
                continue;
            }
            const std::string& payload = payloads[next_payload++];
            if (poster) {
                if (ok)
                    send_answer(*poster, 200, R"({"code":0,"msg":"success"})");
                else
                    send_answer(*poster, 503, R"({"code":503,"msg":"queue write failed"})");
            }
            if (!ok) continue;
            auto it = by_uuid_.find(post.uuid);
            if (it == by_uuid_.end()) continue;
            if (Conn* client = conn(it->second))
                send(*client, ws::encode_text(R"({"service":"notify","code":200,"data":)" + payload + "}"));
        }
    }

    int ws_listener_;
    int api_listener_;
    int epoll_ = -1;
    int signals_ = -1;
    std::vector<std::unique_ptr<Conn>> conns_;  // by fd

    struct Post {
        int poster;  // -1 once its connection closed
        std::string uuid;
        std::string data;    // the notify's data, {"msg":...,"uuid":...}
        int status;          // 0: a post; else an answer waiting behind this connection's posts
        std::string answer;  // that answer's body
    };
    std::optional<Journal> journal_;                // with --queue
    std::vector<Post> posts_;                       // this loop pass's, not yet durable
    std::unordered_map<std::string, int> by_uuid_;  // X-Request-Id -> fd
};

}  // namespace

int run_floor_server(const std::vector<std::string>& args) {
    std::string ws_address = "127.0.0.1:0";
    std::string api_address = "127.0.0.1:0";
    std::string queue;
    bool full_sync = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        if (i + 1 < args.size() && args[i] == "--ws")
            ws_address = args[++i];
        else if (i + 1 < args.size() && args[i] == "--api")
            api_address = args[++i];
        else if (i + 1 < args.size() && args[i] == "--queue")
            queue = args[++i];
        else if (i + 1 < args.size() && args[i] == "--sync")
            full_sync = args[++i] == "full";
        else {
            std::cerr
                << "usage: hydra-bench floor [--ws HOST:PORT] [--api HOST:PORT] [--queue FILE [--sync normal|full]]\n";
            return 2;
        }
    }
    try {
        bench::raise_nofile_limit();
        Floor floor(ws_address, api_address, queue, full_sync);
        floor.run();
    } catch (const std::exception& e) {
        std::cerr << "hydra-bench floor: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
