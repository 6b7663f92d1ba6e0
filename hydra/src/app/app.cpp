// App: the registries of routes and the lifecycle of the servers they are served by.
#include <hydra/app.h>

#include <malloc.h>

#include <csignal>
#include <mutex>
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
    impl_->mqc_routes.push_back(
        {route, std::move(handler), std::move(options.queue), options.concurrency, options.nonblocking});
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
    // (The hydra binary links mimalloc, which ignores these: they tune glibc's allocator, for a binary built with
    // HYDRA_ALLOCATOR=system or an application that embeds hydra. mimalloc showed no such faults: README "Building
    // by hand".)
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
        // The API and the admin listener: one HTTP server each, made the same way.
        auto listen = [&](ApiServer::Settings settings, const Router& routes, std::shared_ptr<TlsContext> tls,
                          const std::string& name, const std::string& note) {
            settings.probe = probe;
            settings.handlers_reach = reach;
            settings.tls = tls;
            settings.software = "hydra/" + impl_->options.version;
            settings.jwt = impl_->jwt;
            settings.metrics = impl_->metrics;
            auto server =
                std::make_shared<ApiServer>(settings, routes, impl_->api_middleware, impl_->queue.get(), exchange());
            server->start();
            health->watch(server->heartbeats());
            impl_->banner.push_back(name + " listening on " + (tls ? "https://" : "http://") + server->address() +
                                    " (" + std::to_string(routes.size()) + " routes" + note + ")");
            return server;
        };
        if (cfg.boolean("api.enabled"))
            impl_->api = listen(ApiServer::Settings::from(cfg), impl_->api_routes, api_tls, "api", "");
        // After the API: its line comes first in the banner.
        if (cfg.boolean("admin.enabled"))
            impl_->admin = listen(ApiServer::Settings::admin_from(cfg), impl_->admin_routes, admin_tls, "admin",
                                  cfg.at("auth.api_keys").empty() ? ", no API keys" : ", API keys required");
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

}  // namespace hydra
