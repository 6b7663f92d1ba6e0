// The MQC server: binds queues to routes; each message becomes a Context for the route's handler, which
// acknowledges by returning and asks for a retry by failing (returning or throwing an error).
#pragma once

#include <string>
#include <vector>

#include <hydra/app.h>

#include "metrics/metrics.h"
#include "queue/backend.h"

namespace hydra::mqc {

struct MqcRoute {
    std::string route;  // "/msg/push"
    Handler handler;
    std::string queue;  // "mall:wsserver:msg"
    int concurrency = 1;
};

// Resolves the registered routes against the `mqc.routes` config (which may set or override queue and
// concurrency by route), then subscribes each to the backend. Throws ConfigError naming the key for a config
// route without a handler, and std::invalid_argument for a route left without a queue.
std::vector<MqcRoute> resolve_routes(std::vector<MqcRoute> registered, const Config& config);

// The consumer group of a route: "<plat>.<system>.<route with / as .>", e.g. "mall.wsserver.msg.push".
std::string group_for(const AppOptions& app, const std::string& route);

// With `registry`, each route's handler is counted (hydra_mqc_*): results, durations, retries and dead letters (a
// failure on attempt `max_attempts` is the one that dead-letters).
void subscribe_routes(const std::vector<MqcRoute>& routes, const AppOptions& app, queue::Backend& backend,
                      Exchange* exchange, metrics::Registry* registry = nullptr, int max_attempts = 0);

}  // namespace hydra::mqc
