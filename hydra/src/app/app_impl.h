// App's private state, shared by app.cpp (lifecycle) and cli.cpp (the command line).
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <hydra/app.h>
#include <hydra/jwt.h>

#include "api/api_server.h"
#include "api/router.h"
#include "cluster/cluster_exchange.h"
#include "mqc/mqc_server.h"
#include "queue/backend.h"
#include "ws/ws_routes.h"
#include "ws/ws_server.h"

namespace hydra {

struct App::Impl {
    AppOptions options;
    ConfigSchema schema;
    Router api_routes;
    std::vector<Middleware> api_middleware;
    std::vector<std::function<void(App&)>> start_hooks;
    std::vector<std::function<void(App&)>> stop_hooks;
    ws::WsRoutes ws_routes;
    std::vector<mqc::MqcRoute> mqc_routes;

    std::mutex lifecycle;
    bool running = false;
    Config config;
    std::shared_ptr<const JwtVerifier> jwt;  // from auth.jwt; null when it configures no key
    std::unique_ptr<queue::Backend> queue;
    std::unique_ptr<ws::WsServer> ws;
    std::unique_ptr<cluster::ClusterExchange> cluster;  // with queue.backend=kafka
    std::unique_ptr<ApiServer> api;
    std::vector<std::string> banner;  // one line per started server, printed by `hydra run`
};

}  // namespace hydra
