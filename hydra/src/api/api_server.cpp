#include "api/api_server.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <thread>

#include "core/chain.h"
#include "core/context_access.h"
#include "core/request_id.h"
#include "http/message.h"
#include "http/target.h"

namespace hydra {
namespace {

http::Response with_body(int status, const char* content_type, std::string body) {
    http::Response r;
    r.status = status;
    r.headers.emplace_back("Content-Type", content_type);
    r.body = std::move(body);
    return r;
}

http::Response error_reply(int code, const std::string& msg) {
    return with_body(http_status_for(code), "application/json", dump(Json{{"code", code}, {"msg", msg}}));
}

http::Response reply_from(const Result& result) {
    http::Response r;
    switch (result.kind()) {
        case Result::Kind::error:
            return error_reply(result.error_code(), result.text());
        case Result::Kind::json:
            r = with_body(200, "application/json", result.json_body());
            break;
        case Result::Kind::text:
            r = with_body(200, "text/plain; charset=utf-8", result.text());
            break;
        case Result::Kind::binary:
            r = with_body(200, "application/octet-stream", result.text());
            break;
        case Result::Kind::empty:
            r.status = 204;
            break;
    }
    if (result.status()) r.status = *result.status();
    return r;
}

// nlohmann's messages start with "[json.exception.parse_error.101] "; the rest says where it broke.
std::string json_error_text(const std::exception& e) {
    std::string what = e.what();
    if (auto pos = what.find("] "); what.rfind("[json.exception", 0) == 0 && pos != std::string::npos)
        return what.substr(pos + 2);
    return what;
}

bool is_json_content(const std::string& content_type, const std::string& body) {
    if (content_type.find("json") != std::string::npos) return true;
    if (!content_type.empty()) return false;
    auto first = std::find_if(body.begin(), body.end(), [](unsigned char c) { return !std::isspace(c); });
    return first != body.end() && (*first == '{' || *first == '[');
}

bool looks_like_json_object(const std::string& body) {
    auto first = std::find_if(body.begin(), body.end(), [](unsigned char c) { return !std::isspace(c); });
    return first != body.end() && *first == '{';
}

}  // namespace

// Requests by route: series looked up per thread (label values: listener, route pattern, method, status class).
struct ApiServer::Metrics {
    Metrics(metrics::Registry& r, std::string name)
        : listener(std::move(name)),
          requests(r.counter("hydra_http_requests_total", "HTTP requests answered, by route pattern and status class.",
                             {"listener", "route", "method", "code"})),
          duration(r.histogram("hydra_http_request_duration_seconds",
                               "Time from a request's arrival to its answer, by route pattern.",
                               {"listener", "route"})),
          rejected(r.counter("hydra_http_rejected_total",
                             "Requests the transport answered itself, before any route: malformed (400), slow (408), "
                             "too large (413, 431), over the rate limit (429), overloaded (503).",
                             {"listener", "code"})) {}

    void request(const std::string& route, const std::string& method, int status,
                 std::chrono::steady_clock::time_point started) {
        const std::string& r = route.empty() ? kUnmatched : route;
        requests.local({listener, r, metrics::method_label(method), metrics::status_class(status)}).inc();
        duration.local({listener, r}).observe_since(started);
    }

    static inline const std::string kUnmatched = "unmatched";  // 404: no route (the path is the client's choice)
    std::string listener;
    metrics::Family<metrics::Counter>& requests;
    metrics::Family<metrics::Histogram>& duration;
    metrics::Family<metrics::Counter>& rejected;
};

namespace {

// The response to a handler's result (or error), with its headers and X-Request-Id; logs the request and counts it
// (under `route`, the pattern matched). Touches no server state: an async reply may come after the server is gone.
http::Response finish(const Result& result, const std::map<std::string, std::string>& headers, const std::string& rid,
                      const std::string& method, const std::string& target,
                      std::chrono::steady_clock::time_point started, ApiServer::Metrics* metrics,
                      const std::string& route, const std::string& listener) {
    http::Response response = reply_from(result);
    for (auto& [k, v] : headers) {
        // A handler's own Content-Type (static files) replaces the one of its result kind.
        auto same = std::find_if(response.headers.begin(), response.headers.end(),
                                 [&](const auto& h) { return http::iequals(h.first, k); });
        if (same != response.headers.end())
            same->second = v;
        else
            response.headers.emplace_back(k, v);
    }
    response.headers.emplace_back("X-Request-Id", rid);

    // The access line: one per request, its values as fields.
    if (Logger::enabled(LogLevel::info)) {
        double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
        char took[32];
        std::snprintf(took, sizeof took, "%.2f", ms);
        Logger(rid).info("request", {{"logger", listener},
                                     {"method", method},
                                     {"path", target},
                                     {"route", route},
                                     {"status", std::to_string(response.status)},
                                     {"duration_ms", took}});
    }
    if (metrics) metrics->request(route, method, response.status, started);
    return response;
}

}  // namespace

ApiServer::Settings ApiServer::Settings::from(const Config& config) {
    Settings s;
    s.address = config.str("api.address");
    s.io_threads = static_cast<int>(config.integer("api.io_threads"));
    s.io_uring = config.boolean("api.io_uring");
    s.threads = static_cast<int>(config.integer("api.threads"));
    s.max_connections = static_cast<int>(config.integer("api.max_connections"));
    s.max_connections_per_ip = static_cast<int>(config.integer("api.max_connections_per_ip"));
    s.requests_per_s = static_cast<int>(config.integer("api.rate_limit.requests_per_s"));
    s.burst = static_cast<int>(config.integer("api.rate_limit.burst"));
    s.max_pending_output = config.integer("api.max_pending_output");
    s.header_timeout_ms = static_cast<int>(config.integer("api.header_timeout_ms"));
    s.max_queued = static_cast<int>(config.integer("api.max_queued"));
    s.max_body = config.integer("api.max_body");
    s.keep_alive = config.boolean("api.keep_alive");
    s.keep_alive_timeout_ms = static_cast<int>(config.integer("api.keep_alive_timeout_ms"));
    s.request_timeout_ms = static_cast<int>(config.integer("api.request_timeout_ms"));
    s.shutdown_timeout_ms = static_cast<int>(config.integer("api.shutdown_timeout_ms"));
    for (const auto& key : config.at("auth.api_keys")) s.api_keys.push_back(key.get<std::string>());
    return s;
}

ApiServer::Settings ApiServer::Settings::admin_from(const Config& config) {
    Settings s = from(config);
    s.name = "admin";
    s.address = config.str("admin.address");
    s.io_threads = 1;
    s.threads = static_cast<int>(config.integer("admin.threads"));
    s.keys_everywhere = true;
    return s;
}

ApiServer::ApiServer(Settings settings, const Router& router, const std::vector<Middleware>& middleware, Queue* queue,
                     Exchange* exchange)
    : settings_(std::move(settings)),
      router_(router),
      middleware_(middleware),
      queue_(queue),
      exchange_(exchange),
      live_(std::make_shared<const Live>(Live{auth::ApiKeys(settings_.api_keys), settings_.jwt})) {
    if (settings_.metrics) metrics_ = std::make_shared<Metrics>(*settings_.metrics, settings_.name);
}

ApiServer::~ApiServer() {
    if (server_) stop();
}

void ApiServer::start() {
    http::Server::Settings hs;
    hs.address = settings_.address;
    hs.io_threads = settings_.io_threads;
    hs.io_uring = settings_.io_uring;
    hs.workers = settings_.threads;
    hs.max_queued = settings_.max_queued;
    hs.max_connections = settings_.max_connections;
    hs.max_connections_per_ip = settings_.max_connections_per_ip;
    hs.requests_per_s = settings_.requests_per_s;
    hs.burst = settings_.burst;
    hs.max_pending_output = static_cast<std::size_t>(settings_.max_pending_output);
    hs.header_timeout_ms = settings_.header_timeout_ms;
    hs.max_body = static_cast<std::size_t>(settings_.max_body);
    hs.keep_alive = settings_.keep_alive;
    hs.keep_alive_timeout_ms = settings_.keep_alive_timeout_ms;
    hs.request_timeout_ms = settings_.request_timeout_ms;
    hs.software = settings_.software;
    hs.tls = settings_.tls;
    hs.name = settings_.name;
    if (settings_.probe) hs.probe_paths = {"/healthz", "/readyz"};
    // The handlers hold the server: one still running after stop() (past its timeout) finds it, and what it
    // reaches, alive. The cycle (server_ holds them) ends in stop().
    std::shared_ptr<ApiServer> self = shared_from_this();
    auto server = std::make_unique<http::Server>(
        hs, [self](http::Request& request) { return self->handle(request); },
        [metrics = metrics_](int status, const std::string& reason) {
            if (metrics) metrics->rejected.local({metrics->listener, std::to_string(status)}).inc();
            http::Response r = error_reply(status, reason);
            r.headers.emplace_back("X-Request-Id", generate_uuid());
            return r;
        },
        [self](http::Request& request, const http::Server::Responder& respond) {
            return self->handle_on_loop(request, respond);
        });
    try {
        server->start();
    } catch (const std::exception& e) {
        throw std::runtime_error(settings_.name + ": cannot listen on " + settings_.address + ": " + e.what());
    }
    server_ = std::move(server);
}

bool ApiServer::reload(const std::vector<std::string>& api_keys, std::shared_ptr<const JwtVerifier> jwt,
                       int requests_per_s, int burst) {
    live_.store(std::make_shared<const Live>(Live{auth::ApiKeys(api_keys), std::move(jwt)}));
    return server_ && server_->set_rate(requests_per_s, burst);
}

void ApiServer::stop(std::optional<std::chrono::milliseconds> grace) {
    if (!server_) return;
    server_->stop(grace.value_or(std::chrono::milliseconds(settings_.shutdown_timeout_ms)));
    server_.reset();
}

// One request of an async route. Answered once its handler has returned (so that the headers it set go along)
// and its reply came, whichever is last; with a 500 when every copy of the reply was dropped without a call.
struct ApiServer::Pending {
    Pending(http::Server::Responder respond, const http::Request& request, std::string rid,
            std::chrono::steady_clock::time_point started, std::shared_ptr<Metrics> metrics, std::string route,
            std::string listener)
        : respond(respond),
          method(request.method),
          target(request.target),
          rid(std::move(rid)),
          started(started),
          metrics(std::move(metrics)),
          route(std::move(route)),
          listener(std::move(listener)) {}

    ~Pending() {
        if (sent) return;
        if (!result) {
            Logger(rid).error("api: the handler of " + method + " " + target + " dropped its reply");
            result = Result(Error(500, "internal server error: the handler did not reply"));
        }
        send();
    }

    void reply(Result r) {
        std::lock_guard lock(mutex);
        if (result) return;  // answered already
        result = std::move(r);
        if (returned) send();
    }

    // The handler returned (`error`: it threw). Its headers are final now.
    void handler_returned(std::map<std::string, std::string> handler_headers, std::optional<Result> error) {
        std::lock_guard lock(mutex);
        headers = std::move(handler_headers);
        returned = true;
        if (!result && error) result = std::move(error);
        if (result) send();
    }

    // The reply may come on the queue's writer thread: the body is serialized and the access line logged on the
    // API loop instead, so that the writer goes on with the next commit.
    // Called once (then `sent`): what the answer needs moves into it.
    void send() {
        sent = true;
        respond.compose([result = std::move(*result), headers = std::move(headers), rid = std::move(rid),
                         method = std::move(method), target = std::move(target), started = started,
                         metrics = std::move(metrics), route = std::move(route), listener = std::move(listener)] {
            return finish(result, headers, rid, method, target, started, metrics.get(), route, listener);
        });
    }

    http::Server::Responder respond;  // its loop outlives an answer in flight (http::Server::stop)
    std::string method, target, rid;
    std::chrono::steady_clock::time_point started;
    std::shared_ptr<Metrics> metrics;
    std::string route, listener;
    std::mutex mutex;
    std::optional<Result> result;
    std::map<std::string, std::string> headers;
    bool returned = false;
    bool sent = false;
};

namespace {

std::string request_id_of(const http::Request& request) {
    std::string rid(request.header("X-Request-Id").value_or(""));
    if (!valid_request_id(rid)) rid = generate_uuid();
    return rid;
}

// Runs a handler (or the middleware chain around it): an Error passes through, any other exception is logged with
// the request id and becomes a 500 without its message.
template <class F>
auto guarded(const Context& ctx, const std::string& pattern, F&& call) {
    try {
        return call();
    } catch (const Error&) {
        throw;
    } catch (const std::exception& e) {
        ctx.log().error("api: handler " + pattern + " failed: " + e.what());
        throw Error(500, "internal server error");
    }
}

// An async handler called where a Result is needed (behind middleware, on a handler thread): waits for its reply.
Result wait_for_reply(const AsyncHandler& handler, Context& ctx) {
    auto done = std::make_shared<std::promise<Result>>();
    std::future<Result> result = done->get_future();
    auto answered = std::make_shared<std::atomic<bool>>(false);
    // Only the reply holds the promise: dropped without a call, it breaks.
    handler(ctx, [done = std::move(done), answered](Result r) {
        if (!answered->exchange(true)) done->set_value(std::move(r));
    });
    try {
        return result.get();
    } catch (const std::future_error&) {
        throw Error(500, "internal server error: the handler did not reply");
    }
}

}  // namespace

Router::Match ApiServer::route(const http::Request& request, std::map<std::string, std::string>& headers,
                               std::string& pattern) const {
    Router::Match match = router_.match(request.method, request.path);
    if (match.status == Router::Status::not_found) throw Error(404, "no route for " + request.path);
    pattern = match.pattern;
    if (match.status == Router::Status::method_not_allowed) {
        headers["Allow"] = match.allow;
        throw Error(405, "method " + request.method + " not allowed on " + match.pattern);
    }
    return match;
}

std::shared_ptr<const Json> ApiServer::authorize(const http::Request& request, Auth auth,
                                                 std::map<std::string, std::string>& headers) const {
    if (auth == Auth::none && !settings_.keys_everywhere) return nullptr;  // (no atomic load on open routes)
    const std::shared_ptr<const Live> live = live_.load();
    if (!live->keys.empty() && (auth == Auth::api_key || settings_.keys_everywhere)) {
        std::string refused = live->keys.refusal(request.headers);
        if (!refused.empty()) {
            headers["WWW-Authenticate"] = "apikey";
            throw Error(401, refused);
        }
    }
    if (auth != Auth::jwt) return nullptr;
    // App::start refuses an Auth::jwt route without a key; a server built without one refuses every request.
    if (!live->jwt) throw Error(500, "internal server error: no auth.jwt key for this route");
    auto token = http::authorization(request.headers, "Bearer");
    if (!token || token->empty()) {
        headers["WWW-Authenticate"] = "Bearer";
        throw Error(401, "missing token");
    }
    JwtOutcome outcome = live->jwt->verify(*token);
    if (!outcome) {
        headers["WWW-Authenticate"] = "Bearer error=\"invalid_token\"";
        throw Error(401, "invalid token: " + outcome.error);
    }
    return std::make_shared<const Json>(std::move(outcome.claims));
}

Context::Init ApiServer::context_init(http::Request& request, const Router::Match& match,
                                      const std::string& rid) const {
    Context::Init init;
    init.kind = ServerKind::api;
    init.method = request.method;
    init.path = request.path;
    init.route = match.pattern;
    init.request_id = rid;
    init.peer = request.peer;
    init.queue = queue_;
    init.exchange = exchange_;
    auto headers = std::make_shared<Headers>();
    for (const auto& [name, value] : request.headers) {
        auto [it, inserted] = headers->emplace(http::to_lower(name), value);
        if (!inserted) it->second += ", " + value;  // a repeated field is one comma-separated list
    }
    init.headers = std::move(headers);
    http::parse_urlencoded(request.query, init.params);
    std::string content_type(request.header("Content-Type").value_or(""));
    std::string& body = request.body;
    bool form = content_type.find("application/x-www-form-urlencoded") != std::string::npos;
    bool json = !body.empty() && is_json_content(content_type, body);
    // `curl -d '{"a":1}'` sends JSON labelled as a form: a form body that is a JSON object is read as JSON.
    if (form && looks_like_json_object(body) && Json::accept(body)) form = false, json = true;
    if (form) {
        http::parse_urlencoded(body, init.params);
    } else if (json) {
        Json doc;
        try {
            doc = parse_json(body);
        } catch (const Json::parse_error& e) {
            throw Error(400, "malformed JSON body: " + json_error_text(e));
        } catch (const JsonTooDeep& e) {
            throw Error(400, std::string("malformed JSON body: ") + e.what());
        }
        if (doc.is_object()) {
            if (init.params.empty())
                init.params = std::move(doc);  // no query parameters: nothing to merge, nothing to copy
            else
                init.params.update(doc);
        }
    }
    for (auto& [k, v] : match.path_params.items()) init.params[k] = v;
    init.body = std::move(body);
    return init;
}

void ApiServer::answer_probe(const http::Request& request, const http::Server::Responder& respond) const {
    const auto started = std::chrono::steady_clock::now();
    auto [status, body] = settings_.probe(request.path == "/readyz");
    respond(finish(Result::json(std::move(body), status), {}, request_id_of(request), request.method, request.target,
                   started, metrics_.get(), request.path, settings_.name));
}

bool ApiServer::handle_on_loop(http::Request& request, const http::Server::Responder& respond) {
    if (settings_.probe && (request.path == "/healthz" || request.path == "/readyz") &&
        (request.method == "GET" || request.method == "HEAD")) {
        answer_probe(request, respond);
        return true;
    }
    // With middleware, the chain runs on a handler thread (middleware may block).
    if (!middleware_.empty() || !router_.has_async() || request.body.size() > kMaxLoopBody) return false;
    const Router::Match match = router_.match(request.method, request.path);
    if (match.status != Router::Status::found || match.async == nullptr) return false;
    auto started = std::chrono::steady_clock::now();
    auto pending = std::make_shared<Pending>(respond, request, request_id_of(request), started, metrics_, match.pattern,
                                             settings_.name);
    std::optional<Result> error;
    std::map<std::string, std::string> headers;
    try {
        auto claims = authorize(request, match.auth, headers);
        Context::Init init = context_init(request, match, pending->rid);
        init.claims = std::move(claims);
        Context ctx = detail::ContextAccess::make(std::move(init));
        guarded(ctx, match.pattern,
                [&] { (*match.async)(ctx, [pending](Result result) { pending->reply(std::move(result)); }); });
        headers = ctx.response_headers();
    } catch (const Error& e) {
        error = Result(e);
    }
    pending->handler_returned(std::move(headers), std::move(error));
    return true;
}

http::Response ApiServer::handle(http::Request& request) {
    auto started = std::chrono::steady_clock::now();
    std::string rid = request_id_of(request);
    std::map<std::string, std::string> headers;
    Result result;
    std::string pattern;  // the route matched, for the metrics ("" = none)
    try {
        Router::Match match = route(request, headers, pattern);
        auto claims = authorize(request, match.auth, headers);
        Context::Init init = context_init(request, match, rid);
        init.claims = std::move(claims);
        Context ctx = detail::ContextAccess::make(std::move(init));
        // An async route behind middleware: this thread waits for the reply, so next() returns it.
        Handler waiting;
        if (match.async != nullptr) waiting = [&match](Context& c) { return wait_for_reply(*match.async, c); };
        result = guarded(ctx, match.pattern, [&] {
            return run_chain(middleware_, ctx, match.async != nullptr ? waiting : *match.handler);
        });
        for (const auto& [k, v] : ctx.response_headers()) headers[k] = v;
    } catch (const Error& e) {
        result = Result(e);
    } catch (const std::exception& e) {
        Logger(rid).error(std::string("api: request failed: ") + e.what());
        result = Result(Error(500, "internal server error"));
    }
    return finish(result, headers, rid, request.method, request.target, started, metrics_.get(), pattern,
                  settings_.name);
}

}  // namespace hydra
