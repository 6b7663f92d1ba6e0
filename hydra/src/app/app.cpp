// App: the registries of routes and the lifecycle of the servers they are served by.
#include <hydra/app.h>

#include <malloc.h>

#include <algorithm>
#include <csignal>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>

#include "api/api_server.h"
#include "api/router.h"
#include "api/static_files.h"
#include "app/app_impl.h"
#include "http/target.h"
#include "queue/metered.h"

namespace hydra {

namespace {

// "127.0.0.1", "127.x.y.z", "localhost", "[::1]": addresses only this machine can reach.
bool loopback_host(const std::string& address) {
    const std::string host = address.substr(0, address.rfind(':'));
    return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

}  // namespace

void check_exposure(const Config& config) {
    if (!config.boolean("admin.enabled") || !config.at("auth.api_keys").empty()) return;
    const std::string address = config.str("admin.address");
    if (loopback_host(address)) return;
    throw ConfigError(config.source() + ": admin.address: " + address +
                      " is not a loopback address and auth.api_keys is empty: the admin endpoints would be open to "
                      "whoever reaches it (set auth.api_keys, or keep admin.address on 127.0.0.1)");
}

void check_jwt_needs(const Config& config, const JwtVerifier* jwt, const Router& api_routes,
                     const Router& admin_routes) {
    if (jwt) return;
    if (config.boolean("ws.enabled") && config.str("ws.auth") == "jwt")
        throw ConfigError("ws.auth=jwt needs auth.jwt.secret or auth.jwt.public_key_file");
    const std::pair<const Router*, bool> listeners[] = {{&api_routes, config.boolean("api.enabled")},
                                                        {&admin_routes, config.boolean("admin.enabled")}};
    for (const auto& [routes, enabled] : listeners) {
        if (!enabled) continue;
        const std::string route = routes->first_with(Auth::jwt);
        if (!route.empty())
            throw ConfigError("route " + route +
                              " requires a JWT (Auth::jwt): it needs auth.jwt.secret or auth.jwt.public_key_file");
    }
}

App::App(AppOptions options) : impl_(std::make_unique<Impl>()) {
    impl_->options = std::move(options);
    impl_->schema = ConfigSchema::builtin();
    // Prometheus scrapes the admin listener (which requires an API key whenever auth.api_keys is set).
    Impl* impl = impl_.get();
    impl_->admin_routes.add("/metrics", {{"GET", [impl](Context& ctx) -> Result {
                                              std::shared_ptr<metrics::Registry> registry = impl->metrics;
                                              if (!registry) throw Error(404, "metrics are off (admin.metrics)");
                                              ctx.set_response_header("Content-Type", metrics::kContentType);
                                              return registry->render();
                                          }}});
}

App::~App() { stop(); }

App& App::add_api(const std::string& route, MethodHandlers handlers, ApiOptions options) {
    if (!options.methods.empty()) {
        auto any = handlers.find("");
        if (any != handlers.end()) {
            Handler h = any->second;
            handlers.erase(any);
            for (const auto& m : options.methods) handlers[m] = h;
        }
    }
    impl_->routes_for(options.listener).add(route, std::move(handlers), {}, options.auth);
    return *this;
}

App& App::api_async(const std::string& route, AsyncHandler handler, ApiOptions options) {
    if (!handler) throw std::invalid_argument("api_async: no handler for " + route);
    AsyncHandlers handlers;
    if (options.methods.empty()) handlers[""] = std::move(handler);
    for (const auto& m : options.methods) handlers[m] = handler;
    impl_->routes_for(options.listener).add(route, {}, std::move(handlers), options.auth);
    return *this;
}

App& App::static_files(const std::string& prefix, const std::string& directory) {
    std::string route = http::normalize_path(prefix);
    return add_api(route == "/" ? "/*path" : route + "/*path", {{"", static_files_handler(directory)}},
                   {.methods = {"GET", "HEAD"}});
}

App& App::use(Middleware middleware) {
    impl_->api_middleware.push_back(std::move(middleware));
    return *this;
}

App& App::on_start(std::function<void(App&)> hook) {
    impl_->start_hooks.push_back(std::move(hook));
    return *this;
}

App& App::on_stop(std::function<void(App&)> hook) {
    impl_->stop_hooks.push_back(std::move(hook));
    return *this;
}

ConfigSchema& App::schema() { return impl_->schema; }
const AppOptions& App::options() const { return impl_->options; }
const Config& App::config() const { return impl_->config; }
bool App::running() const { return impl_->running; }
Queue* App::queue() const { return impl_->queue.get(); }
Exchange* App::exchange() const {
    if (impl_->cluster) return impl_->cluster.get();
    return impl_->ws ? &impl_->ws->exchange() : nullptr;
}

const JwtVerifier* App::jwt() const { return impl_->jwt.get(); }

std::string App::api_address() const { return impl_->api ? impl_->api->address() : std::string(); }

std::string App::admin_address() const { return impl_->admin ? impl_->admin->address() : std::string(); }

std::string App::ws_address() const { return impl_->ws ? impl_->ws->address() : std::string(); }

App& App::add_ws_service(const std::string& service, Handler handler) {
    if (service.empty()) throw std::invalid_argument("a WS service needs a name");
    if (!impl_->ws_routes.services.emplace(service, std::move(handler)).second)
        throw std::invalid_argument("WS service registered twice: " + service);
    return *this;
}

App& App::ws_endpoint(const std::string& path, WsEndpoint endpoint) {
    if (path.empty() || path[0] != '/') throw std::invalid_argument("WS endpoint path must start with '/': " + path);
    if (!endpoint.on_message) throw std::invalid_argument("WS endpoint " + path + " needs on_message");
    std::string norm = http::normalize_path(path);
    if (!impl_->ws_routes.endpoints.emplace(norm, std::move(endpoint)).second)
        throw std::invalid_argument("WS endpoint registered twice: " + norm);
    return *this;
}

App& App::add_mqc(const std::string& route, Handler handler, MqcOptions options) {
    if (route.empty() || route[0] != '/') throw std::invalid_argument("MQC route must start with '/': " + route);
    for (const auto& r : impl_->mqc_routes)
        if (r.route == route) throw std::invalid_argument("MQC route registered twice: " + route);
    if (options.concurrency < 1) throw std::invalid_argument("MQC route " + route + ": concurrency must be >= 1");
    impl_->mqc_routes.push_back({route, std::move(handler), std::move(options.queue), options.concurrency});
    return *this;
}

App& App::ws_use_connection(Middleware middleware) {
    impl_->ws_routes.connection_middleware.push_back(std::move(middleware));
    return *this;
}

App& App::ws_use_packet(Middleware middleware) {
    impl_->ws_routes.packet_middleware.push_back(std::move(middleware));
    return *this;
}

void App::start(Config config) {
    std::lock_guard lock(impl_->lifecycle);
    if (impl_->running) throw std::logic_error("App::start: already running");
    // A peer closing a socket must surface as an error on that socket, not kill the process.
    std::signal(SIGPIPE, SIG_IGN);
    // Nor a file size limit (RLIMIT_FSIZE) reached: a write that would pass it fails (EFBIG), and the queue reports it.
    std::signal(SIGXFSZ, SIG_IGN);
    // glibc gives freed memory at the top of each thread's heap back to the kernel as soon as 128 KB are free, and
    // the next burst faults it in again: on the push path at 5,000 msg/s that was 3,900 page faults a second (none
    // with this). Keep up to 8 MB free per heap; allocations of 1 MB and more still get their own mapping.
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    mallopt(M_MMAP_THRESHOLD, 1 << 20);

    impl_->config = std::move(config);
    const Config& cfg = impl_->config;
    Logger::configure(Logger::parse_level(cfg.str("log.level")),
                      cfg.str("log.format") == "json" ? LogFormat::json : LogFormat::text);
    impl_->banner.clear();
    check_exposure(cfg);
    set_json_max_depth(static_cast<int>(cfg.integer("limits.json_depth")));
    // Before the hooks: a service may verify tokens too. An unreadable key is a ConfigError.
    impl_->jwt = JwtVerifier::from(cfg);
    check_jwt_needs(cfg, impl_->jwt.get(), impl_->api_routes, impl_->admin_routes);
    // Certificates before any listener binds: a bad file fails the start with nothing half-started.
    impl_->tls.clear();
    if (cfg.boolean("admin.enabled") && cfg.boolean("admin.metrics")) {
        impl_->metrics = std::make_shared<metrics::Registry>();
        impl_->process_metrics = metrics::add_process_collector(*impl_->metrics, impl_->options.version);
    }
    std::shared_ptr<TlsContext> ws_tls = cfg.boolean("ws.enabled") ? impl_->load_tls("ws") : nullptr;
    std::shared_ptr<TlsContext> api_tls = cfg.boolean("api.enabled") ? impl_->load_tls("api") : nullptr;
    std::shared_ptr<TlsContext> admin_tls = cfg.boolean("admin.enabled") ? impl_->load_tls("admin") : nullptr;

    for (auto& hook : impl_->start_hooks) hook(*this);

    {
        std::lock_guard drain(impl_->drain_mutex);
        impl_->hurried = false;
    }
    auto health = std::make_shared<HostHealth>(impl_->options);
    impl_->health = health;
    auto probe = [health](bool ready) { return health->probe(ready); };
    try {
        // The queue first: every server may push. A corrupt or unwritable database fails the start here.
        impl_->queue = queue::make_backend(cfg);
        if (impl_->metrics) impl_->queue = queue::metered(std::move(impl_->queue), impl_->metrics);
        health->watch(impl_->queue->heartbeats());
        // The WS server first: the API and MQC servers reach its clients through its exchange.
        if (cfg.boolean("ws.enabled")) {
            auto settings = ws::WsServer::Settings::from(cfg);
            settings.jwt = impl_->jwt;
            settings.tls = ws_tls;
            settings.metrics = impl_->metrics;
            impl_->ws = std::make_shared<ws::WsServer>(std::move(settings), impl_->ws_routes, impl_->queue.get());
            // On Kafka the hosts form a cluster: handlers reach clients on every host through its exchange.
            if (cfg.str("queue.backend") == "kafka" && cfg.boolean("cluster.enabled")) {
                auto settings =
                    cluster::ClusterExchange::Settings::from(cfg, impl_->options.plat + "." + impl_->options.system);
                settings.metrics = impl_->metrics;
                impl_->cluster = std::make_shared<cluster::ClusterExchange>(settings, impl_->ws->exchange());
                impl_->ws->set_handler_exchange(impl_->cluster.get());
                impl_->cluster->start();
                impl_->banner.push_back("cluster node " + impl_->cluster->node_id() + " over kafka " +
                                        cfg.str("queue.kafka.brokers"));
            }
            impl_->ws->start();
            health->watch(impl_->ws->heartbeats());
            std::size_t n = impl_->ws_routes.services.size();
            std::string what = std::to_string(n) + " services";
            for (const auto& [path, ep] : impl_->ws_routes.endpoints) what += ", " + path;
            impl_->banner.push_back(std::string("ws listening on ") + (ws_tls ? "wss://" : "ws://") +
                                    impl_->ws->address() + " (" + what + ")");
        }
        // What API handlers reach through their Context, for as long as one runs. Destroyed in reverse: the cluster
        // (which uses the WS server's exchange), the WS server (whose handlers push), the queue.
        struct Reach {
            std::shared_ptr<queue::Backend> queue;
            std::shared_ptr<ws::WsServer> ws;
            std::shared_ptr<cluster::ClusterExchange> cluster;
        };
        auto reach = std::make_shared<const Reach>(Reach{impl_->queue, impl_->ws, impl_->cluster});
        if (cfg.boolean("api.enabled")) {
            auto settings = ApiServer::Settings::from(cfg);
            settings.probe = probe;
            settings.handlers_reach = reach;
            settings.tls = api_tls;
            settings.software = "hydra/" + impl_->options.version;
            settings.jwt = impl_->jwt;
            settings.metrics = impl_->metrics;
            impl_->api = std::make_shared<ApiServer>(settings, impl_->api_routes, impl_->api_middleware,
                                                     impl_->queue.get(), exchange());
            impl_->api->start();
            health->watch(impl_->api->heartbeats());
            impl_->banner.push_back(std::string("api listening on ") + (api_tls ? "https://" : "http://") +
                                    impl_->api->address() + " (" + std::to_string(impl_->api_routes.size()) +
                                    " routes)");
        }
        // After the API: its line comes first in the banner.
        if (cfg.boolean("admin.enabled")) {
            auto settings = ApiServer::Settings::admin_from(cfg);
            settings.probe = probe;
            settings.handlers_reach = reach;
            settings.tls = admin_tls;
            settings.software = "hydra/" + impl_->options.version;
            settings.jwt = impl_->jwt;
            settings.metrics = impl_->metrics;
            impl_->admin = std::make_shared<ApiServer>(settings, impl_->admin_routes, impl_->api_middleware,
                                                       impl_->queue.get(), exchange());
            impl_->admin->start();
            health->watch(impl_->admin->heartbeats());
            impl_->banner.push_back(std::string("admin listening on ") + (admin_tls ? "https://" : "http://") +
                                    impl_->admin->address() + " (" + std::to_string(impl_->admin_routes.size()) +
                                    " routes" +
                                    (cfg.at("auth.api_keys").empty() ? ", no API keys" : ", API keys required") + ")");
        }
        // MQC last: its handlers use the exchange and the queue.
        if (cfg.boolean("mqc.enabled")) {
            auto routes = mqc::resolve_routes(impl_->mqc_routes, cfg);
            mqc::subscribe_routes(routes, impl_->options.plat, impl_->options.system, *impl_->queue, exchange(),
                                  mqc::RetryPolicy::from(cfg), impl_->metrics.get());
            impl_->queue->start();
            std::string what;
            for (const auto& r : routes) what += (what.empty() ? "" : ", ") + r.route + " <- " + r.queue;
            impl_->banner.push_back("mqc consuming " + std::to_string(routes.size()) + " routes from " +
                                    impl_->queue->backend() + (what.empty() ? "" : " (" + what + ")"));
        }
    } catch (...) {
        if (impl_->admin) impl_->admin->stop(std::chrono::milliseconds(0));
        if (impl_->api) impl_->api->stop(std::chrono::milliseconds(0));
        impl_->admin.reset();
        impl_->api.reset();
        if (impl_->queue) impl_->queue->stop(std::chrono::milliseconds(0));
        impl_->cluster.reset();  // first: its poll thread uses the WS server's exchange
        impl_->ws.reset();
        impl_->queue.reset();
        impl_->process_metrics.reset();
        impl_->metrics.reset();
        throw;
    }
    health->describe(api_address(), exchange(), impl_->queue ? impl_->queue->backend() : std::string());
    health->set_listening(true);
    if (impl_->queue) health->start_checking(impl_->queue.get());
    impl_->running = true;
    for (const auto& line : impl_->banner) Logger().debug(line);
    if (impl_->api && cfg.at("auth.api_keys").empty() && !loopback_host(impl_->api->address()))
        Logger().warn("api listening on " + impl_->api->address() +
                      " without auth.api_keys: its routes that take an API key are open to anyone");
}

std::shared_ptr<TlsContext> App::Impl::load_tls(const std::string& section) {
    auto context = hydra::load_tls(config, section);
    if (context) tls.push_back(context);
    return context;
}

bool App::reload() {
    std::lock_guard lock(impl_->lifecycle);
    bool ok = true;
    for (const auto& context : impl_->tls) {
        const TlsSettings& s = context->settings();
        try {
            context->reload();
            Logger().info(s.section + ".tls: certificate re-read from " + s.cert_file);
        } catch (const ConfigError& e) {
            ok = false;
            Logger().error(std::string(e.what()) + "; the previous certificate stays in use");
        }
    }
    return ok;
}

namespace {

// Every leaf of a config document by dotted path (arrays are leaves), with its JSON pointer (a key may hold dots:
// queue.kafka.properties."sasl.password").
struct Leaf {
    Json::json_pointer at;
    Json value;
};
void flatten(const Json& doc, const Json::json_pointer& at, const std::string& dotted,
             std::map<std::string, Leaf>& out) {
    if (doc.is_object() && !doc.empty()) {
        for (const auto& [key, value] : doc.items())
            flatten(value, at / key, dotted.empty() ? key : dotted + "." + key, out);
        return;
    }
    out[dotted] = {at, doc};
}

// The keys App::reload(Config) applies while running.
bool applied_live(const std::string& key) {
    static const char* exact[] = {"log.level", "log.format", "limits.json_depth", "auth.api_keys",
                                  "ws.allowed_origins"};
    static const char* prefixes[] = {"auth.jwt.", "api.rate_limit.", "ws.rate_limit."};
    for (const char* k : exact)
        if (key == k) return true;
    for (const char* p : prefixes)
        if (key.rfind(p, 0) == 0) return true;
    return false;
}

std::string joined(const std::vector<std::string>& keys) {
    std::string out;
    for (const auto& k : keys) out += (out.empty() ? "" : ", ") + k;
    return out;
}

std::vector<std::string> strings_at(const Config& config, std::string_view key) {
    std::vector<std::string> out;
    for (const auto& v : config.at(key)) out.push_back(v.get<std::string>());
    return out;
}

}  // namespace

bool App::reload(Config next) {
    {
        std::lock_guard lock(impl_->lifecycle);
        if (!impl_->running) return false;
        Impl& m = *impl_;
        const Config& current = m.config;

        // Which keys changed, and which of those apply while running.
        std::map<std::string, Leaf> was, now;
        flatten(current.json(), Json::json_pointer(), "", was);
        flatten(next.json(), Json::json_pointer(), "", now);
        std::set<std::string> keys;
        for (const auto& [k, v] : was) keys.insert(k);
        for (const auto& [k, v] : now) keys.insert(k);
        // A listener started with every per-address limit off cannot start counting addresses mid-flight.
        bool rate_adjustable = true;
        for (ApiServer* server : {m.api.get(), m.admin.get()})
            if (server != nullptr && !server->rate_adjustable()) rate_adjustable = false;
        std::vector<std::string> applied, restart;
        for (const auto& k : keys) {
            auto a = was.find(k), b = now.find(k);
            if (a != was.end() && b != now.end() && a->second.value == b->second.value) continue;
            const bool live = applied_live(k) && (rate_adjustable || k.rfind("api.rate_limit.", 0) != 0);
            (live ? applied : restart).push_back(k);
        }

        // What would run: the new profile with the running value of every key that takes a restart. It is checked
        // whole before anything is applied (keys against the address that stays, tokens against the ws.auth that
        // stays).
        std::shared_ptr<const JwtVerifier> jwt;
        ws::OriginPolicy origins;
        try {
            Json doc = next.json();
            for (const auto& k : restart) {
                if (auto old = was.find(k); old != was.end()) {
                    doc[old->second.at] = old->second.value;
                } else if (const Json::json_pointer& at = now.at(k).at; doc.contains(at)) {
                    doc[at.parent_pointer()].erase(at.back());
                }
            }
            next = Config::from_json(std::move(doc), next.source(), {}, m.schema);
            check_exposure(next);
            jwt = JwtVerifier::from(next);
            check_jwt_needs(next, jwt.get(), m.api_routes, m.admin_routes);
            origins = ws::WsServer::Settings::from(next).allowed_origins;
        } catch (const ConfigError& e) {
            Logger().error(std::string("reload refused, the running configuration stays: ") + e.what());
            return false;
        }

        Logger::configure(Logger::parse_level(next.str("log.level")),
                          next.str("log.format") == "json" ? LogFormat::json : LogFormat::text);
        set_json_max_depth(static_cast<int>(next.integer("limits.json_depth")));
        const std::vector<std::string> api_keys = strings_at(next, "auth.api_keys");
        for (ApiServer* server : {m.api.get(), m.admin.get()})
            if (server != nullptr)
                server->reload(api_keys, jwt, static_cast<int>(next.integer("api.rate_limit.requests_per_s")),
                               static_cast<int>(next.integer("api.rate_limit.burst")));
        if (m.ws)
            m.ws->reload(std::move(origins), jwt, static_cast<int>(next.integer("ws.rate_limit.messages_per_s")),
                         static_cast<int>(next.integer("ws.rate_limit.burst")));
        if (m.jwt && m.jwt != jwt) m.retired_jwt.push_back(m.jwt);
        m.jwt = jwt;
        m.config = std::move(next);

        if (!applied.empty()) Logger().info("reload: applied " + joined(applied));
        if (!restart.empty())
            Logger().warn("reload: these changes take a restart, their running values stay: " + joined(restart));
        if (applied.empty() && restart.empty()) Logger().info("reload: the configuration is unchanged");
    }
    return reload();
}

void App::stop() {
    std::lock_guard lock(impl_->lifecycle);
    if (!impl_->running) return;
    for (auto& hook : impl_->stop_hooks) hook(*this);
    // Producers first (API), then the WS server whose exchange they used.
    impl_->health->set_listening(false);
    if (impl_->admin) impl_->admin->stop();
    if (impl_->api) impl_->api->stop();
    impl_->finish_stop(std::chrono::milliseconds(impl_->config.integer("api.shutdown_timeout_ms")));
}

bool App::Impl::is_hurried() {
    std::lock_guard lock(drain_mutex);
    return hurried;
}

bool App::Impl::wait_unless_hurried(std::chrono::milliseconds limit, const std::function<bool()>& done) {
    // `done` is a state other threads change without telling: looked at every few milliseconds.
    const auto until = std::chrono::steady_clock::now() + limit;
    std::unique_lock lock(drain_mutex);
    for (;;) {
        if (hurried) return false;
        lock.unlock();
        const bool finished = done();
        lock.lock();
        if (finished) return true;
        const auto now = std::chrono::steady_clock::now();
        if (now >= until) return false;
        drain_cv.wait_for(lock,
                          std::min<std::chrono::steady_clock::duration>(until - now, std::chrono::milliseconds(5)));
    }
}

void App::Impl::finish_stop(std::chrono::milliseconds queue_grace) {
    if (api) health->forget(api->heartbeats());
    if (admin) health->forget(admin->heartbeats());
    admin.reset();
    api.reset();
    // Consumers finish their in-flight messages (they may still notify WS clients), then the writer flushes.
    health->stop_checking();
    if (queue) {
        health->forget(queue->heartbeats());
        queue->stop(queue_grace);
    }
    if (ws) {
        health->forget(ws->heartbeats());
        ws->stop();  // closing connections announces them gone to the cluster
    }
    if (cluster) cluster->stop();
    health->set_exchange(nullptr);
    ws.reset();
    cluster.reset();
    queue.reset();
    process_metrics.reset();
    metrics.reset();
    running = false;
}

void App::hurry() {
    {
        std::lock_guard lock(impl_->drain_mutex);
        impl_->hurried = true;
    }
    impl_->drain_cv.notify_all();
}

void App::drain() {
    using std::chrono::milliseconds;
    std::lock_guard lock(impl_->lifecycle);
    if (!impl_->running) return;
    Impl& m = *impl_;
    const Config& cfg = m.config;
    const auto deadline = std::chrono::steady_clock::now() + milliseconds(cfg.integer("shutdown.timeout_ms"));
    // What is left of shutdown.timeout_ms, at most `limit`.
    auto within = [&](milliseconds limit) {
        auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
        return std::clamp(left, milliseconds(0), limit);
    };
    const milliseconds grace(cfg.integer("shutdown.grace_ms"));
    const milliseconds spread(cfg.boolean("ws.enabled") ? cfg.integer("ws.drain_ms") : 0);
    const milliseconds in_flight(cfg.integer("api.shutdown_timeout_ms"));

    // 1. Unready at once; still serving, so that load balancers notice before connections are refused.
    m.health->set_draining(true);
    Logger().info("draining: /readyz answers 503; accepting " + std::to_string(grace.count()) + " ms more");
    m.wait_unless_hurried(within(grace), [] { return false; });

    // 2. The API and WS listeners stop accepting (the admin listener serves on: probes, operators). WS clients are
    // closed one after the other over ws.drain_ms meanwhile; API requests in flight are answered.
    for (auto& hook : m.stop_hooks) hook(*this);
    Logger().info("draining: no new connections; closing WebSocket clients over " + std::to_string(spread.count()) +
                  " ms");
    if (m.ws) m.ws->drain(m.is_hurried() ? milliseconds(0) : within(spread));
    if (m.api) {
        m.api->wind_down();
        m.wait_unless_hurried(within(in_flight), [&] { return m.api->idle(); });
        m.health->forget(m.api->heartbeats());
        m.api->stop(milliseconds(0));
    }
    m.health->set_listening(false);

    // 3. The WebSocket clients' turns (a second signal: all of them now), then the close handshakes.
    if (m.ws) {
        const milliseconds close_wait(2000);  // ws close_timeout_ms: the last one's answer
        if (!m.wait_unless_hurried(within(spread + close_wait), [&] { return m.ws->open_connections() == 0; }))
            m.ws->hurry();
    }
    // 4. MQC takes nothing more; in-flight handlers finish and their outcome is committed. After the WebSocket
    // clients: until their turn came they could still push (the writer runs until here).
    if (m.queue && cfg.boolean("mqc.enabled")) {
        m.health->forget(m.queue->heartbeats());
        m.queue->stop(m.is_hurried() ? milliseconds(0) : within(in_flight));
    }
    if (m.admin) m.admin->stop(within(in_flight));
    m.finish_stop(milliseconds(0));
    Logger().info("drained");
}

}  // namespace hydra
