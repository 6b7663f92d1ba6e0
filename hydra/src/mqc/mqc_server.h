// The MQC server: binds queues to routes; each message becomes a Context for the route's handler, which
// acknowledges by returning and asks for a retry by failing (returning or throwing an error). Consumption itself
// (threads, retries, dead letters) is consumer.h's.
#pragma once

#include <string>
#include <vector>

#include <hydra/config.h>
#include <hydra/exchange.h>
#include <hydra/handler.h>

#include "metrics/metrics.h"
#include "mqc/consumer.h"
#include "queue/backend.h"

namespace hydra::mqc {

struct MqcRoute {
    std::string route;  // "/msg/push"
    Handler handler;
    std::string queue;  // "mall:wsserver:msg"
    int concurrency = 1;
    bool nonblocking = false;  // MqcOptions::nonblocking
};

// Resolves the registered routes against the `mqc.routes` config (which may set or override queue and
// concurrency by route), then subscribes each to the backend. Throws ConfigError naming the key for a config
// route without a handler, and std::invalid_argument for a route left without a queue.
std::vector<MqcRoute> resolve_routes(std::vector<MqcRoute> registered, const Config& config);

// The consumer group of a route: "<plat>.<system>.<route with / as .>", e.g. "mall.wsserver.msg.push".
std::string group_for(const std::string& plat, const std::string& system, const std::string& route);

// Consumes each route's queue from `backend` in the group of `plat` and `system`. With `registry`, each route's
// handling is counted (hydra_mqc_*).
void subscribe_routes(const std::vector<MqcRoute>& routes, const std::string& plat, const std::string& system,
                      queue::Backend& backend, Exchange* exchange, RetryPolicy retry,
                      metrics::Registry* registry = nullptr);

}  // namespace hydra::mqc
