// The WS server: `io_threads` epoll loops own the connections (no thread per connection); handlers run on a
// worker pool; every connection has a bounded send queue; other threads hand frames to the owning loop.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <hydra/config.h>
#include <hydra/context.h>
#include <hydra/jwt.h>
#include <hydra/queue.h>

#include "metrics/metrics.h"
#include "net/client_limits.h"
#include "net/event_loop.h"
#include "net/heartbeat.h"
#include "net/tls.h"
#include "net/worker_pool.h"
#include "ws/origin.h"
#include "ws/ws_exchange.h"
#include "ws/ws_routes.h"

namespace hydra::ws {

class WsServer : public Delivery {
  public:
    struct Settings {
        std::string address = "127.0.0.1:9087";
        int io_threads = 0;    // 0 = number of cores
        bool io_uring = true;  // batched writes (net/io_batch.h) where the kernel allows them
        int workers = 8;
        std::size_t max_message = 1 << 20;
        int max_connections = 100000;
        int max_connections_per_ip = 256;  // 0 = off; IPv6 counts per /64
        int rate_per_s = 1000;             // messages and pings per second per connection; 0 = off
        int rate_burst = 2000;
        std::size_t send_queue_bytes = 4 << 20;
        int ping_interval_ms = 30000;
        int idle_timeout_ms = 90000;
        int handshake_timeout_ms = 10000;
        int close_timeout_ms = 2000;  // how long a closing connection waits for the peer's close frame
        // Where a connection's uuid comes from (see the schema): never from the client unless it proves or is trusted.
        enum class ClientUuid { generate, resume, request_id };
        ClientUuid client_uuid = ClientUuid::generate;
        std::string resume_secret;     // HMAC key of resume tokens; "" = random at construction
        OriginPolicy allowed_origins;  // browsers' Origin on the upgrade (403 otherwise); empty = any
        // ws.auth=jwt: an upgrade needs a token `jwt` accepts (else 401); the connection is bound to its sub and
        // closed 1008 "token expired" at exp + leeway unless the client sends a new one to /auth/refresh.
        bool auth_jwt = false;
        std::shared_ptr<const JwtVerifier> jwt;      // set by the host (App) from auth.jwt
        std::shared_ptr<TlsContext> tls;             // ws.tls, loaded by the host; null = plain TCP
        std::shared_ptr<metrics::Registry> metrics;  // set by the host when admin.metrics is on; null = count nothing

        static Settings from(const Config& config);  // the `ws` section (jwt is left to the caller)
    };

    // The service of ws.auth=jwt on "/": {"service":"/auth/refresh","token":"<a new token for the same sub>"}.
    static constexpr const char* kRefreshService = "/auth/refresh";

    // Throws ConfigError when auth_jwt is set without a verifier.
    WsServer(Settings settings, const WsRoutes& routes, Queue* queue);
    ~WsServer() override;

    // Binds and starts the loops. Throws std::runtime_error("ws: cannot listen on <addr>: <reason>").
    void start();
    // Stops accepting, closes every connection with 1001 (bounded wait), stops loops and workers.
    void stop();
    // A drain: stops accepting at once, then closes the open connections with 1001 one after the other, spread
    // evenly over `spread` (so that their clients do not all reconnect elsewhere at the same instant); stop()
    // ends it. Connections not yet upgraded are dropped at once.
    void drain(std::chrono::milliseconds spread);
    // Closes what a drain has not closed yet, now.
    void hurry();
    // Every accepted socket, any state.
    int open_connections() const { return open_connections_.load(); }
    // The I/O loops' heartbeats (EventLoop::heartbeat) by thread name, after start().
    Heartbeats heartbeats() const;
    std::string address() const { return bound_; }
    WsExchange& exchange() { return exchange_; }
    // The exchange handlers see in their Context (the cluster's, when there is one). Set before start().
    void set_handler_exchange(Exchange* exchange) { handler_exchange_ = exchange; }

    // What SIGHUP may change while serving (App::reload): for upgrades and messages that come next. Connections
    // keep the token they were let in with until it expires.
    void reload(OriginPolicy allowed_origins, std::shared_ptr<const JwtVerifier> jwt, int rate_per_s, int rate_burst);

    // Delivery (thread-safe).
    void deliver(std::uint64_t conn_id, Frame frame) override;
    void deliver_confirmed(std::uint64_t conn_id, Frame frame, std::function<void(bool written)> written) override;
    void deliver_many(std::vector<std::uint64_t> conn_ids, Frame frame) override;
    std::size_t deliver_all(Frame frame) override;
    void close(std::uint64_t conn_id, int code, std::string reason) override;

    struct Loop;
    struct Connection;
    struct Metrics;

  private:
    friend struct Loop;
    friend struct Connection;

    Loop& loop_of(std::uint64_t conn_id);
    // A loop ended a connection: counts it, and wakes stop() at the last one.
    void connection_closed();

    struct Live {
        OriginPolicy allowed_origins;
        std::shared_ptr<const JwtVerifier> jwt;
    };
    std::shared_ptr<const Live> live() const { return live_.load(); }

    // The Context of a connection's event (message, error, close) as handlers see it.
    Context::Init context_for(const std::string& path, const std::string& uuid, std::shared_ptr<const Headers> headers,
                              std::string request_id, std::optional<ClientKey> peer = std::nullopt,
                              std::shared_ptr<const Json> claims = nullptr) const;

    Settings settings_;
    const WsRoutes& routes_;
    Queue* queue_;
    WsExchange exchange_;
    Exchange* handler_exchange_ = &exchange_;
    int listen_fd_ = -1;
    std::string bound_;
    std::vector<std::unique_ptr<Loop>> loops_;
    std::unique_ptr<WorkerPool> workers_;
    std::atomic<int> open_connections_{0};  // every accepted socket, any state
    std::mutex closed_mutex_;               // with all_closed_: stop() waits for open_connections_ to reach 0
    std::condition_variable all_closed_;
    std::unique_ptr<ClientLimits> limits_;  // open connections per address (null when ws.max_connections_per_ip=0)
    std::unique_ptr<Metrics> metrics_;      // null: count nothing
    std::atomic<std::shared_ptr<const Live>> live_;  // reload()
    std::atomic<int> rate_per_s_{0}, rate_burst_{0};
    bool started_ = false;
};

}  // namespace hydra::ws
