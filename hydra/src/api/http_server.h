// The API server's transport: HTTP/1.1 on epoll loops (no thread per connection), request handlers on a worker pool
// (they may block: a queue push waits until the message is durable). Keep-alive, pipelining (one request at a time
// per connection), Content-Length and chunked bodies, Expect: 100-continue, limits and timeouts with a clear answer.
// What a request means is the caller's business (ApiServer): this class only moves requests and responses.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "http/message.h"
#include "net/client_limits.h"
#include "net/heartbeat.h"
#include "net/tls.h"

namespace hydra {
class WorkerPool;
}

namespace hydra::http {

struct Request {
    std::string method;
    std::string target;  // as sent
    std::string path;    // percent-decoded, without the query
    std::string query;   // raw, after '?' ("" if none)
    int minor_version = 1;
    HeaderFields headers;
    std::string body;
    ClientKey peer{};  // the client's address (client_key_text() formats it)

    std::optional<std::string_view> header(std::string_view name) const { return find_header(headers, name); }
};

struct Response {
    int status = 200;
    HeaderFields headers;  // the server adds Server, Date, Content-Length and Connection
    std::string body;
    bool close = false;  // close the connection once this response is written
};

class Server {
    struct Loop;

  public:
    struct Settings {
        std::string address = "127.0.0.1:9090";
        int io_threads = 1;
        bool io_uring = true;              // batched reads and writes (net/io_batch.h) where the kernel allows them
        int workers = 64;                  // handler threads
        int max_queued = 1024;             // requests waiting for a worker; beyond that: 503 at once
        int max_connections = 10000;       // beyond that: 503 and close
        int max_connections_per_ip = 256;  // open connections from one address (IPv6: /64); beyond: 503, 0 = off
        int requests_per_s = 1000;         // per address, sustained (token bucket); beyond: 429, 0 = off
        int burst = 2000;                  // per address, at once
        std::size_t max_pending_output = 1 << 20;  // unsent response bytes; beyond: the connection is not read
        std::size_t max_body = 1 << 20;            // 413
        std::size_t max_head = 16 * 1024;          // request line + headers; 431
        bool keep_alive = true;                    // false: one request per connection
        int keep_alive_timeout_ms = 15000;         // an idle keep-alive connection is closed after this
        int header_timeout_ms = 10000;             // a request's line and headers must arrive within this (408)
        int request_timeout_ms = 30000;            // a request must arrive completely within this (408), and a
                                                   // response must be taken by the client within this
        std::string software = "hydra";            // Server header
        std::shared_ptr<TlsContext> tls;           // null: plain TCP
        std::string name = "api";                  // the loops' threads: "<name>-io-<index>"
        // Request paths exempt from the per-address rate limit and the busy answer (503): health probes, which a
        // LoopHandler answers on the loop without a worker.
        std::vector<std::string> probe_paths;
    };
    // Answers one request that a LoopHandler took: call it exactly once, from any thread.
    class Responder {
      public:
        void operator()(Response response) const;
        // Builds the response on the loop's thread, then sends it: for answers from threads that must not be held
        // up by it (the queue's writer), e.g. serializing the body and writing the access log line.
        void compose(std::function<Response()> make) const;

      private:
        friend struct Loop;
        Responder(std::weak_ptr<Loop> loop, std::uint64_t id) : loop_(std::move(loop)), id_(id) {}
        std::weak_ptr<Loop> loop_;  // expired once the server stopped: the answer is dropped
        std::uint64_t id_;
    };
    // Runs on a worker thread and may block. An exception becomes error_page(500).
    using Handler = std::function<Response(Request&)>;
    // Runs on the I/O loop before a request goes to a worker: takes it (returns true; the response comes through
    // the Responder, now or later) or leaves it to the Handler (false; the Responder unused). Must not block or
    // throw.
    using LoopHandler = std::function<bool(Request&, const Responder&)>;
    // The answer to a request the server refuses by itself (400 malformed, 408, 413, 429, 431, 501, 503, 505), from
    // any thread.
    using ErrorPage = std::function<Response(int status, const std::string& reason)>;

    Server(Settings settings, Handler handler, ErrorPage error_page, LoopHandler loop_handler = nullptr);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    // Binds and starts the loops. Throws std::runtime_error with the reason ("Address already in use").
    void start();
    // Stops accepting, closes idle connections, lets requests in flight finish and be answered (bounded by `grace`),
    // then closes everything. Idempotent.
    void stop(std::chrono::milliseconds grace);
    // stop()'s first step without its wait: stop accepting, close idle connections at once and busy ones after
    // their current response. Idempotent.
    void wind_down();
    // No request in flight and no connection open (after wind_down(): stop() would not wait).
    bool idle() const { return in_flight_.load() == 0 && open_connections_.load() == 0; }
    // "host:port" actually bound.
    std::string address() const { return bound_; }
    int open_connections() const { return open_connections_.load(); }
    // The I/O loops' heartbeats (EventLoop::heartbeat) by thread name, after start().
    Heartbeats heartbeats() const;
    // A new per-address rate limit (SIGHUP). False when the server runs without per-address limits at all
    // (max_connections_per_ip and the rate both 0 at start): that takes a restart.
    bool set_rate(int requests_per_s, int burst);
    bool has_limits() const { return limits_ != nullptr; }

  private:
    struct Connection;
    friend struct Connection;
    friend struct Loop;

    Settings settings_;
    Handler handler_;
    ErrorPage error_page_;
    LoopHandler loop_handler_;
    struct Calls {
        Handler handler;
        ErrorPage error_page;
    };
    std::shared_ptr<const Calls> calls_;  // shared with worker tasks, which may outlive the server
    int listen_fd_ = -1;
    std::string bound_;
    std::unique_ptr<WorkerPool> workers_;
    std::unique_ptr<ClientLimits> limits_;      // null when no per-address limit is on
    std::vector<std::shared_ptr<Loop>> loops_;  // shared with Responders, which may outlive the server
    std::atomic<int> open_connections_{0};
    std::atomic<int> in_flight_{0};  // requests handed to a worker or a LoopHandler and not yet answered
    // stop() waits here for idle(); a draining loop notifies when its last request or connection is gone.
    std::mutex idle_mutex_;
    std::condition_variable idle_cv_;
    void notify_if_idle();
    bool started_ = false;
};

}  // namespace hydra::http
