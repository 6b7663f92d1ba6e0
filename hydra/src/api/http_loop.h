// Inside the API server's transport (private to api/http_*.cpp): a Loop is one EventLoop thread with the
// connections it owns; a Connection is touched only by its loop's thread. http_loop.cpp accepts and times out,
// http_connection.cpp reads, frames and answers requests, http_server.cpp starts and stops the whole.
#pragma once

#include <sys/epoll.h>

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "api/http_server.h"
#include "http/chunked.h"
#include "net/event_loop.h"
#include "net/io_batch.h"

namespace hydra::http {

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

// ---------------------------------------------------------------------------------------------------------------
// Connection: owned by one loop, touched only by that loop's thread.

struct Server::Connection : EventLoop::Handler {
    // head: waiting for (more of) a request head; body/chunked: reading its body; handling: a worker has it;
    // closing: our last response is out, waiting for the client's EOF (lingering close).
    enum class State : std::uint8_t { head, body, chunked, handling, closing };

    Connection(Loop& l, std::uint64_t i, int f) : loop(l), id(i), fd(f) {}
    void on_events(std::uint32_t events) override;
    void on_failure() noexcept override;  // the connection ends

    Loop& loop;
    std::uint64_t id;
    int fd;
    State state = State::head;
    bool writing = false;                 // EPOLLOUT registered
    bool listed = false;                  // in the loop's flush list
    bool read_listed = false;             // in the loop's read list
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
    // Read from a socket at a time (and the output buffer kept between responses).
    static constexpr std::size_t kReadChunk = 64 * 1024;
    // The reads of one iteration in one system call: a buffer of this size per connection, this many connections
    // per call. A read that fills its buffer goes on with kReadChunk reads (a large body, pipelined requests).
    static constexpr std::size_t kReadSlot = 4096;
    static constexpr std::size_t kReadSlots = 64;
    // Unread pipelined bytes held while a request is handled.
    static constexpr std::size_t kMaxBuffered = 256 * 1024;
    // After our last response: wait this long for the client to close.
    static constexpr int kLingerMs = 2000;
    static constexpr int kTickMs = 250;
    static constexpr std::uint32_t kReadEvents = EPOLLIN | EPOLLRDHUP;

    Loop(Server& s, int index)
        : server(s),
          loop(s.settings_.name, index, kTickMs, [this] { on_tick(); }),
          index(index),
          io(s.settings_.io_uring) {}

    // Listening socket readable.
    void on_events(std::uint32_t) override { accept_all(); }

    void accept_all();
    void on_tick();
    // Reads c at the end of this iteration, with every other readable connection in one system call.
    void read_soon(Connection& c);
    void read_listed_connections();
    // The reads listed for the end of this iteration, now (before timeouts judge the connections).
    void read_pending() {
        if (read_scheduled) read_listed_connections();
    }
    // Reads c now, until the socket is drained.
    void on_readable(Connection& c);
    // What one read brought: n bytes of `data`, 0 (the peer closed) or -errno. False: stop reading.
    bool took(Connection& c, const char* data, ssize_t n);
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
    // Writes c.out at the end of this iteration, with every other connection's in one system call.
    void schedule_flush(Connection& c);
    void write_listed();
    // Writes c.out now, until done or the socket is full.
    void flush(Connection& c);
    void flushed(Connection& c);  // c.out is written
    void blocked(Connection& c);  // the socket took no more: wait for EPOLLOUT
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
    std::vector<std::uint64_t> flush_list;               // connections with responses to write
    bool flush_scheduled = false;
    std::vector<std::uint64_t> read_list;  // readable connections
    bool read_scheduled = false;
    std::vector<char> read_slots;  // kReadSlots of kReadSlot bytes, once reads were batched
    IoBatch io;                    // the reads and writes of an iteration, each kind in one system call
    std::vector<char> read_buffer;
    DateCache date;
    std::int64_t next_sweep_ms = 0;
};

}  // namespace hydra::http
