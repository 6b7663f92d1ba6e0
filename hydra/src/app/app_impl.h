// App's private state, shared by app.cpp (lifecycle) and cli.cpp (the command line).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <hydra/app.h>
#include <hydra/jwt.h>

#include "api/api_server.h"
#include "api/router.h"
#include "app/health.h"
#include "cluster/cluster_exchange.h"
#include "metrics/metrics.h"
#include "mqc/mqc_server.h"
#include "net/tls.h"
#include "queue/backend.h"
#include "ws/ws_routes.h"
#include "ws/ws_server.h"

namespace hydra {

struct App::Impl {
    AppOptions options;
    ConfigSchema schema;
    Router api_routes;
    Router admin_routes;  // ApiOptions::listener = Listener::admin
    std::vector<Middleware> api_middleware;
    std::vector<std::function<void(App&)>> start_hooks;
    std::vector<std::function<void(App&)>> stop_hooks;
    ws::WsRoutes ws_routes;
    std::vector<mqc::MqcRoute> mqc_routes;

    std::mutex lifecycle;
    bool running = false;
    Config config;
    std::shared_ptr<const JwtVerifier> jwt;                       // from auth.jwt; null when it configures no key
    std::vector<std::shared_ptr<const JwtVerifier>> retired_jwt;  // replaced by a reload: App::jwt() may be held
    // admin.metrics: what GET /metrics renders (null when off); then the process metrics it collects.
    std::shared_ptr<metrics::Registry> metrics;
    metrics::Registry::Collector process_metrics;
    // Shared: API handlers still running after stop() (past api.shutdown_timeout_ms) keep what they reach alive.
    std::shared_ptr<queue::Backend> queue;
    std::shared_ptr<ws::WsServer> ws;
    std::shared_ptr<cluster::ClusterExchange> cluster;  // with queue.backend=kafka
    std::shared_ptr<ApiServer> api;
    std::shared_ptr<ApiServer> admin;
    std::shared_ptr<HostHealth> health;  // /healthz and /readyz of both listeners

    // A drain in progress (drain()): hurry() cuts its waits short.
    std::mutex drain_mutex;
    std::condition_variable drain_cv;
    bool hurried = false;                          // guarded by drain_mutex
    std::vector<std::shared_ptr<TlsContext>> tls;  // the listeners' certificates, for reload()
    std::vector<std::string> banner;               // one line per started server, printed by `hydra run`

    Router& routes_for(Listener listener) { return listener == Listener::admin ? admin_routes : api_routes; }
    // Waits until `done()` or `limit` passed or hurry() was called (true only when done; no `done`: the time).
    bool wait_unless_hurried(std::chrono::milliseconds limit, const std::function<bool()>& done);
    bool is_hurried();
    // The end of stop() and drain(), the listeners stopped: the queue (consumers get `queue_grace`), the WS
    // server, the cluster.
    void finish_stop(std::chrono::milliseconds queue_grace);
    // `<section>.tls` loaded (ConfigError naming the key when a file does not load); null when it is off.
    std::shared_ptr<TlsContext> load_tls(const std::string& section);
};

// Checks what the schema cannot: an admin listener without API keys binds only to loopback. Throws ConfigError
// naming admin.address. Called by App::start() and `hydra conf check`.
void check_exposure(const Config& config);

// Checks that whatever requires a JWT has a key to verify it with: ws.auth=jwt, and every route registered with
// Auth::jwt on an enabled listener. Throws ConfigError naming auth.jwt when `jwt` is null. Called by App::start() and
// `hydra conf check`.
void check_jwt_needs(const Config& config, const JwtVerifier* jwt, const Router& api_routes,
                     const Router& admin_routes);

}  // namespace hydra
