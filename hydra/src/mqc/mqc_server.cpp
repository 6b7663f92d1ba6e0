#include "mqc/mqc_server.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include <hydra/context.h>
#include <hydra/log.h>

#include "core/context_access.h"
#include "http/message.h"

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

std::string group_for(const std::string& plat, const std::string& system, const std::string& route) {
    std::string r = route;
    while (!r.empty() && r.front() == '/') r.erase(r.begin());
    std::replace(r.begin(), r.end(), '/', '.');
    return plat + "." + system + "." + r;
}

namespace {

// A message as the route's handler sees it: a Context (headers lower-cased, the request id from X-Request-Id or
// the message's queue and id, the payload's JSON object as params). An error result fails the attempt with its text.
std::optional<std::string> run(const Handler& handler, const std::string& route, queue::Backend* queue,
                               Exchange* exchange, const Message& m) {
    Context::Init init;
    init.kind = ServerKind::mqc;
    init.path = route;
    init.route = route;
    init.body = m.payload;
    auto headers = std::make_shared<Headers>();
    for (const auto& [k, v] : m.headers) (*headers)[http::to_lower(k)] = v;
    auto rid = headers->find("x-request-id");
    init.request_id = rid != headers->end() ? rid->second : m.queue + "/" + m.id;
    init.headers = std::move(headers);
    Json params = parse_json_or_discarded(m.payload);
    if (params.is_object()) init.params = std::move(params);
    init.queue = queue;
    init.exchange = exchange;
    Context ctx = detail::ContextAccess::make(std::move(init));
    const auto started = std::chrono::steady_clock::now();
    Result result = handler(ctx);
    if (result.is_error()) return result.text();
    if (Logger::enabled(LogLevel::debug)) {
        const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
        ctx.log().debug("handled", {{"logger", "mqc"},
                                    {"route", route},
                                    {"queue", m.queue},
                                    {"attempt", std::to_string(m.attempt)},
                                    {"duration_ms", std::to_string(ms)}});
    }
    return std::nullopt;
}

}  // namespace

void subscribe_routes(const std::vector<MqcRoute>& routes, const std::string& plat, const std::string& system,
                      queue::Backend& backend, Exchange* exchange, RetryPolicy retry, metrics::Registry* registry) {
    for (const auto& r : routes) {
        Subscription sub;
        sub.queue = r.queue;
        sub.group = group_for(plat, system, r.route);
        sub.concurrency = r.concurrency;
        sub.route = r.route;
        sub.nonblocking = r.nonblocking;
        sub.handler = [handler = r.handler, route = r.route, queue = &backend, exchange](const Message& m) {
            return run(handler, route, queue, exchange, m);
        };
        consume(backend, std::move(sub), retry, registry);
    }
}

}  // namespace hydra::mqc
