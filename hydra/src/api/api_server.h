// The API server: what an HTTP request means. request → Context → middleware → handler → JSON (or text, bytes),
// errors as {"code","msg"} envelopes. The transport (epoll loops, worker pool, HTTP/1.1 framing) is http::Server.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <hydra/config.h>
#include <hydra/handler.h>
#include <hydra/jwt.h>

#include "api/http_server.h"
#include "api/router.h"
#include "auth/api_keys.h"
#include "metrics/metrics.h"

namespace hydra {

// Held by a shared_ptr (App): a handler still running after stop() keeps it, and what it uses, alive.
class ApiServer : public std::enable_shared_from_this<ApiServer> {
  public:
    struct Settings {
        std::string address = "127.0.0.1:9090";
        int io_threads = 1;
        bool io_uring = true;  // batched reads and writes, where the kernel allows them
        int threads = 64;      // handler threads
        int max_queued = 1024;
        int max_connections = 10000;
        int max_connections_per_ip = 256;
        int requests_per_s = 1000;
        int burst = 2000;
        std::int64_t max_pending_output = 1 << 20;
        int header_timeout_ms = 10000;
        std::int64_t max_body = 1 << 20;
        bool keep_alive = true;
        int keep_alive_timeout_ms = 15000;
        int request_timeout_ms = 30000;
        int shutdown_timeout_ms = 10000;
        std::string software = "hydra";
        std::string name = "api";                // in messages: "api: cannot listen on ..."
        std::vector<std::string> api_keys;       // auth.api_keys
        bool keys_everywhere = false;            // every route requires a key when there are keys (the admin listener)
        std::shared_ptr<const JwtVerifier> jwt;  // auth.jwt, for routes with Auth::jwt (App::start checks it is set)
        std::shared_ptr<TlsContext> tls;         // `<listener>.tls` loaded by the host; null = plain TCP
        std::shared_ptr<metrics::Registry> metrics;  // set by the host when admin.metrics is on; null = count nothing
        // The host's GET/HEAD /healthz (false) and /readyz (true): status and body, answered on the I/O loop before
        // middleware, API keys and tokens, and exempt from the rate limit. Null: no built-in probes.
        std::function<std::pair<int, Json>(bool ready)> probe;
        // What handlers reach through their Context (the queue, the exchange): kept alive while a handler that
        // outlived stop() (api.shutdown_timeout_ms) still runs.
        std::shared_ptr<const void> handlers_reach;

        static Settings from(const Config& config);        // the `api` section
        static Settings admin_from(const Config& config);  // the admin listener: `admin`, with the api.* limits
    };

    ApiServer(Settings settings, const Router& router, const std::vector<Middleware>& middleware, Queue* queue,
              Exchange* exchange);
    ~ApiServer();

    // Binds and starts serving. Throws std::runtime_error("<name>: cannot listen on <addr>: <reason>").
    void start();
    // Stops accepting, closes idle keep-alive connections at once and busy ones after their current response;
    // stop() waits for them.
    void wind_down() {
        if (server_) server_->wind_down();
    }
    // Nothing in flight, nothing open.
    bool idle() const { return !server_ || server_->idle(); }
    // Stops accepting, closes idle keep-alive connections, waits for in-flight requests (bounded by
    // api.shutdown_timeout_ms, or `grace` when given).
    void stop(std::optional<std::chrono::milliseconds> grace = std::nullopt);
    // New API keys, JWT verifier and per-address rate limit (SIGHUP), for the requests that come next. Returns
    // false when the rate could not change (the server runs without per-address limits: a restart).
    bool reload(const std::vector<std::string>& api_keys, std::shared_ptr<const JwtVerifier> jwt, int requests_per_s,
                int burst);
    // Whether reload() can change the rate limit (the server counts requests per address).
    bool rate_adjustable() const { return server_ && server_->has_limits(); }
    // "host:port" actually bound.
    std::string address() const { return server_ ? server_->address() : std::string(); }
    // The I/O loops' heartbeats, after start().
    Heartbeats heartbeats() const { return server_ ? server_->heartbeats() : Heartbeats(); }

    // One request, start to end (on a handler thread).
    http::Response handle(http::Request& request);
    // On the I/O loop, first: takes a request of an async route (true) and answers it through `respond` when its
    // reply comes; anything else is left to handle() (false), and so is a body over kMaxLoopBody.
    bool handle_on_loop(http::Request& request, const http::Server::Responder& respond);
    // Larger bodies are parsed on a handler thread: parsing 1 MB of JSON takes milliseconds, and every other
    // connection of the loop would wait for it.
    static constexpr std::size_t kMaxLoopBody = 16 * 1024;

    struct Metrics;

  private:
    struct Pending;

    // The route, or Error(404 / 405 with an Allow header); `pattern` is the route's once a path matched (405 too).
    Router::Match route(const http::Request& request, std::map<std::string, std::string>& headers,
                        std::string& pattern) const;
    // Error(401, with a WWW-Authenticate header) when the route requires a key or token the request does not
    // present. Returns the token's claims on an Auth::jwt route, else null.
    std::shared_ptr<const Json> authorize(const http::Request& request, Auth auth,
                                          std::map<std::string, std::string>& headers) const;
    // Params from the query, form or JSON body and the path; Error(400) on a malformed body. Takes the body.
    Context::Init context_init(http::Request& request, const Router::Match& match, const std::string& rid) const;

    // The answer to a built-in probe (Settings::probe).
    void answer_probe(const http::Request& request, const http::Server::Responder& respond) const;

    Settings settings_;
    const Router router_;  // copies: a handler that outlived stop() may still route
    const std::vector<Middleware> middleware_;
    Queue* queue_;
    Exchange* exchange_;
    // What SIGHUP may change while serving (reload()): swapped whole, read once per request.
    struct Live {
        auth::ApiKeys keys;
        std::shared_ptr<const JwtVerifier> jwt;
    };
    std::atomic<std::shared_ptr<const Live>> live_;
    std::shared_ptr<Metrics> metrics_;  // shared with answers in flight; null: count nothing
    std::unique_ptr<http::Server> server_;
};

}  // namespace hydra
