#include "mqc/mqc_server.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include <hydra/log.h>

namespace hydra::mqc {

std::vector<MqcRoute> resolve_routes(std::vector<MqcRoute> registered, const Config& config) {
    const Json& configured = config.at("mqc.routes");
    for (std::size_t i = 0; i < configured.size(); ++i) {
        const Json& entry = configured[i];
        std::string route = entry.at("route").get<std::string>();
        auto it =
            std::find_if(registered.begin(), registered.end(), [&](const MqcRoute& r) { return r.route == route; });
        if (it == registered.end())
            throw ConfigError(config.source() + ": mqc.routes[" + std::to_string(i) +
                              "].route: no MQC handler is registered for \"" + route + "\"");
        it->queue = entry.at("queue").get<std::string>();
        it->concurrency = entry.value("concurrency", 1);
    }
    for (const auto& r : registered) {
        if (r.queue.empty())
            throw ConfigError(config.source() + ": mqc.routes: MQC route \"" + r.route +
                              "\" has no queue (register it with {.queue = ...} or map it in mqc.routes)");
        queue::validate_queue_name(r.queue);
    }
    return registered;
}

std::string group_for(const AppOptions& app, const std::string& route) {
    std::string r = route;
    while (!r.empty() && r.front() == '/') r.erase(r.begin());
    std::replace(r.begin(), r.end(), '/', '.');
    return app.plat + "." + app.system + "." + r;
}

namespace {

// One route's series, resolved at subscription.
struct RouteMetrics {
    RouteMetrics(metrics::Registry& r, const std::string& route)
        : ok(r.counter("hydra_mqc_handled_total", "Messages handled, by route and result (ok, failed).",
                       {"route", "result"})
                 .with({route, "ok"})),
          failed(r.counter("hydra_mqc_handled_total", "", {"route", "result"}).with({route, "failed"})),
          retries(
              r.counter("hydra_mqc_retries_total", "Failed attempts that will be retried after a backoff.", {"route"})
                  .with({route})),
          dead(r.counter("hydra_mqc_dead_letters_total",
                         "Messages moved to the dead letters after their last attempt failed.", {"route"})
                   .with({route})),
          duration(r.histogram("hydra_mqc_handler_duration_seconds", "Time an MQC handler took, by route.", {"route"})
                       .with({route})) {}

    metrics::Counter &ok, &failed, &retries, &dead;
    metrics::Histogram& duration;
};

}  // namespace

void subscribe_routes(const std::vector<MqcRoute>& routes, const AppOptions& app, queue::Backend& backend,
                      Exchange* exchange, metrics::Registry* registry, int max_attempts) {
    for (const auto& r : routes) {
        std::shared_ptr<RouteMetrics> counted = registry ? std::make_shared<RouteMetrics>(*registry, r.route) : nullptr;
        queue::Subscription sub;
        sub.queue = r.queue;
        sub.group = group_for(app, r.route);
        sub.concurrency = r.concurrency;
        Handler handler = r.handler;
        std::string route = r.route;
        queue::Backend* queue = &backend;
        sub.handler = [handler, route, queue, exchange, counted, max_attempts](const Message& m) {
            Context::Init init;
            init.kind = ServerKind::mqc;
            init.path = route;
            init.route = route;
            init.body = m.payload;
            auto headers = std::make_shared<HeaderMap>();
            for (const auto& [k, v] : m.headers) {
                std::string key = k;
                std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
                (*headers)[key] = v;
            }
            auto rid = headers->find("x-request-id");
            init.request_id = rid != headers->end() ? rid->second : m.queue + "/" + m.id;
            init.headers = std::move(headers);
            Json params = parse_json_or_discarded(m.payload);
            if (params.is_object()) init.params = std::move(params);
            init.queue = queue;
            init.exchange = exchange;
            Context ctx(std::move(init));
            const auto started = std::chrono::steady_clock::now();
            try {
                Result result = handler(ctx);
                // An error result fails this attempt like an exception: the backend retries, then dead-letters.
                if (result.is_error()) throw Error(result.error_code(), result.text());
            } catch (...) {
                if (counted) {
                    counted->duration.observe_since(started);
                    counted->failed.inc();
                    (m.attempt >= max_attempts ? counted->dead : counted->retries).inc();
                }
                throw;
            }
            if (counted) {
                counted->duration.observe_since(started);
                counted->ok.inc();
            }
            if (Logger::enabled(LogLevel::debug)) {
                const double ms =
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
                ctx.log().debug("handled", {{"logger", "mqc"},
                                            {"route", route},
                                            {"queue", m.queue},
                                            {"attempt", std::to_string(m.attempt)},
                                            {"duration_ms", std::to_string(ms)}});
            }
        };
        backend.subscribe(std::move(sub));
    }
}

}  // namespace hydra::mqc
