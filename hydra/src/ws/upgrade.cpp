// The upgrade of a connection, once for every path: parse the request, Origin, route, token (ws.auth=jwt), the
// uuid it is registered under, connection middleware and on_open on a worker, then the 101 or the refusal.
#include <algorithm>
#include <chrono>

#include <hydra/log.h>

#include "core/chain.h"
#include "core/context_access.h"
#include "core/request_id.h"
#include "http/message.h"
#include "http/target.h"
#include "ws/dispatch.h"
#include "ws/loop.h"
#include "ws/resume.h"

namespace hydra::ws {

namespace {

// Handshake mechanics are not kept with the connection: they are large and of no use to handlers.
bool keep_header(const std::string& lower_name) {
    return lower_name != "upgrade" && lower_name != "connection" && lower_name != "sec-websocket-key" &&
           lower_name != "sec-websocket-version" && lower_name != "sec-websocket-extensions" &&
           lower_name != "x-hydra-resume";
}

// The raw value of the first `name=` pair of a query string (resume and JWT tokens are URL-safe: no decoding).
std::optional<std::string_view> query_value(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        std::string_view pair = query.substr(0, query.find('&'));
        query.remove_prefix(std::min(query.size(), pair.size() + 1));
        if (pair.size() > name.size() && pair.substr(0, name.size()) == name && pair[name.size()] == '=')
            return pair.substr(name.size() + 1);
    }
    return std::nullopt;
}

// ws.auth=jwt: the token of an upgrade, from `Authorization: Bearer <t>`, `?token=<t>` or, for browsers that cannot
// set headers, the subprotocol list `Sec-WebSocket-Protocol: bearer, <t>` (`bearer` is echoed, never the token).
// "" when there is none.
std::string bearer_token(const UpgradeRequest& req, bool& offered_bearer) {
    offered_bearer = false;
    std::string_view found;
    for (std::size_t i = 0; i < req.protocols.size(); ++i) {
        if (!iequals(req.protocols[i], "bearer")) continue;
        offered_bearer = true;
        if (i + 1 < req.protocols.size()) found = req.protocols[i + 1];
        break;
    }
    if (auto credentials = http::authorization(req.headers, "Bearer")) return std::string(*credentials);
    if (auto token = query_value(req.query, "token")) return std::string(*token);
    return std::string(found);
}

}  // namespace

// ws.allowed_origins: an upgrade without Origin is not a browser's and passes; one Origin must be allowed; two are not.
bool WsServer::Loop::origin_allowed(const UpgradeRequest& req) const {
    const std::shared_ptr<const Live> live = server.live();
    const OriginPolicy& policy = live->allowed_origins;
    if (policy.allows_any()) return true;
    std::optional<std::string_view> origin;
    for (const auto& [name, value] : req.headers) {
        if (!iequals(name, "origin")) continue;
        if (origin) return false;
        origin = value;
    }
    return !origin || policy.allows(*origin);
}

void WsServer::Loop::handle_handshake(Connection& c) {
    UpgradeParse p = parse_upgrade_request(c.in);
    if (p.status == ParseStatus::need_more) return;
    if (p.status == ParseStatus::error) {
        reject_upgrade(c, p.http_status, p.reason, p.response_headers);
        return;
    }
    const UpgradeRequest& req = p.request;
    if (!origin_allowed(req)) {
        reject_upgrade(c, 403, "origin not allowed");
        return;
    }
    const WsRoutes& routes = server.routes_;
    std::string path = http::normalize_path(req.path);
    const WsEndpoint* endpoint = nullptr;
    if (auto it = routes.endpoints.find(path); it != routes.endpoints.end()) {
        endpoint = &it->second;
    } else if (!(path == "/" && routes.serves_services())) {
        reject_upgrade(c, 404, "no WebSocket endpoint at " + path);
        return;
    }
    c.path = path;
    c.endpoint = endpoint;
    const bool jwt = settings().auth_jwt;
    if (jwt && !authenticate(c, req)) return;
    c.in.erase(0, p.consumed);  // what is left are the first frames

    auto kept = std::make_shared<Headers>();
    Headers all;
    for (const auto& [name, value] : req.headers) {
        std::string key = http::to_lower(name);
        // The token is not kept: ctx.claims() has what it said.
        if (keep_header(key) && !(jwt && (key == "authorization" || key == "sec-websocket-protocol")))
            (*kept)[key] = value;
        all[key] = value;
    }
    c.headers = kept;
    c.accept = accept_key(req.key);
    // The uuid is chosen now so on_open can already use the exchange (set values, subscribe).
    register_uuid(c, claimed_uuid(req, all));
    // A token's connection is its user's from the start: notify_user reaches it, on_open sees it bound.
    if (c.claims) server.exchange_.bind(c.claims->value("sub", std::string()), c.uuid);  // verify() requires a sub

    bool needs_worker = !routes.connection_middleware.empty() || (endpoint && endpoint->on_open);
    if (!needs_worker) {
        accept_upgrade(c);
        return;
    }

    // Connection middleware and on_open may block (auth calls): run them on a worker, then come back.
    c.state = Connection::State::upgrading;
    Context::Init init =
        server.context_for(path, c.uuid, std::make_shared<const Headers>(std::move(all)), c.uuid, c.ip, c.claims);
    init.method = "GET";
    init.params = Json::object();
    try {
        http::parse_urlencoded(req.query, init.params);
    } catch (const Error&) {
        // a malformed query string is not worth refusing the connection for
    }
    WsServer* srv = &server;
    std::uint64_t id = c.id;
    server.workers_->post([srv, id, endpoint, init = std::move(init), loop_index = index]() mutable {
        Context ctx = detail::ContextAccess::make(std::move(init));
        Result result;
        try {
            hydra::Handler final =
                endpoint && endpoint->on_open ? endpoint->on_open : hydra::Handler([](Context&) { return Result(); });
            result = run_chain(srv->routes_.connection_middleware, ctx, final);
        } catch (const Error& e) {
            result = Result(e);
        } catch (const std::exception& e) {
            ctx.log().error(std::string("ws: connection middleware failed: ") + e.what());
            result = Result(Error(500, "internal server error"));
        }
        Loop& l = *srv->loops_[loop_index];
        l.loop.post([&l, id, result = std::move(result)] {
            Connection* c = l.find(id);
            if (c == nullptr || c->state != Connection::State::upgrading) return;
            if (result.is_error())
                l.reject_upgrade(*c, http_status_for(result.error_code()), result.text());
            else
                l.accept_upgrade(*c);
        });
    });
}

std::string WsServer::Loop::claimed_uuid(const UpgradeRequest& req, const Headers& headers) const {
    using ClientUuid = Settings::ClientUuid;
    const Settings& s = settings();
    if (s.client_uuid == ClientUuid::request_id) {
        auto it = headers.find("x-request-id");
        return it != headers.end() && valid_request_id(it->second) ? it->second : std::string();
    }
    if (s.client_uuid != ClientUuid::resume) return {};
    // The token of an earlier 101, in the header or as ?resume=<token> (browsers cannot set headers).
    std::string_view token;
    if (auto it = headers.find("x-hydra-resume"); it != headers.end()) {
        token = it->second;
    } else if (auto value = query_value(req.query, "resume")) {
        token = *value;
    }
    if (token.empty()) return {};
    return resume_uuid(s.resume_secret, token).value_or(std::string());
}

void WsServer::Loop::register_uuid(Connection& c, const std::string& claimed) {
    std::string uuid = claimed.empty() ? generate_uuid() : claimed;
    if (!server.exchange_.add(uuid, c.id)) {  // in use by an open connection: never taken over
        uuid = generate_uuid();
        server.exchange_.add(uuid, c.id);
    }
    c.uuid = std::move(uuid);
    c.registered = true;
}

bool WsServer::Loop::authenticate(Connection& c, const UpgradeRequest& req) {
    // On the loop: an HMAC or one public-key verification of a token of at most 8 KiB, no I/O.
    bool offered_bearer = false;
    const std::string token = bearer_token(req, offered_bearer);
    if (token.empty()) {
        reject_upgrade(c, 401, "missing token", {{"WWW-Authenticate", "Bearer"}});
        return false;
    }
    JwtOutcome outcome = server.live()->jwt->verify(token);
    if (!outcome) {
        Logger(c.uuid).debug("ws: " + c.path + ": token refused: " + outcome.error);
        reject_upgrade(c, 401, "invalid token: " + outcome.error,
                       {{"WWW-Authenticate", "Bearer error=\"invalid_token\""}});
        return false;
    }
    c.claims = std::make_shared<const Json>(std::move(outcome.claims));
    c.expires_ms = expiry_ms(outcome.exp);
    c.echo_bearer = offered_bearer;
    return true;
}

std::int64_t WsServer::Loop::expiry_ms(double exp) const {
    const double deadline_unix_ms = (exp + server.live()->jwt->leeway_s()) * 1000.0;
    const double now_unix_ms =
        std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
    const double left = std::clamp(deadline_unix_ms - now_unix_ms, 0.0, 1e15);
    return std::max<std::int64_t>(1, loop.now_ms() + static_cast<std::int64_t>(left));
}

std::string WsServer::Loop::refresh(const Json& request, const Context::Init& init, std::uint64_t id) {
    auto token = request.find("token");
    if (token == request.end() || !token->is_string())
        return envelope(kRefreshService, 400, "err", "missing parameter token");
    JwtOutcome outcome = server.live()->jwt->verify(token->get_ref<const std::string&>());
    if (!outcome) return envelope(kRefreshService, 401, "err", "invalid token: " + outcome.error);
    const std::string current = init.claims ? init.claims->value("sub", std::string()) : std::string();
    if (outcome.sub != current) return envelope(kRefreshService, 403, "err", "the token is for another user");
    auto claims = std::make_shared<const Json>(std::move(outcome.claims));
    const double exp = outcome.exp;
    // Posted before the reply: the client's next message already sees the new claims.
    loop.post([this, id, claims, exp] {
        if (Connection* c = find(id); c && c->state == Connection::State::open) {
            c->claims = claims;
            c->expires_ms = expiry_ms(exp);
        }
    });
    return envelope(kRefreshService, 200, "data", Json{{"exp", claims->at("exp")}});
}

void WsServer::Loop::accept_upgrade(Connection& c) {
    c.state = Connection::State::open;
    c.decoder = std::make_unique<MessageDecoder>(settings().max_message, Role::server);
    c.last_recv_ms = c.last_ping_ms = c.tokens_ms = loop.now_ms();
    c.tokens = static_cast<std::int64_t>(server.rate_burst_.load(std::memory_order_relaxed)) * kTokenUnits;
    HeaderFields extra{{"X-Request-Id", c.uuid}};
    if (settings().client_uuid == Settings::ClientUuid::resume)
        extra.emplace_back(kResumeHeader, resume_token(settings().resume_secret, c.uuid));
    if (c.echo_bearer) extra.emplace_back("Sec-WebSocket-Protocol", "bearer");
    // Frames queued while upgrading (by on_open) wait behind the gate: they follow the 101.
    c.open_gate(make_frame(handshake_response(c.accept, extra)));
    c.accept = std::string();
    if (metrics) {
        metrics->accepted->inc();
        metrics->connections.at(c.endpoint)->add();
    }
    std::string rest = std::move(c.in);
    c.in = std::string();
    if (!rest.empty()) c.feed(reinterpret_cast<const std::uint8_t*>(rest.data()), rest.size());
}

void WsServer::Loop::reject_upgrade(Connection& c, int status, const std::string& reason, const HeaderFields& extra) {
    if (metrics) metrics->upgrades.local({std::to_string(status)}).inc();
    if (c.registered) {
        server.exchange_.remove(c.uuid);
        c.registered = false;
    }
    // Nothing is read or sent but this answer.
    c.out.clear();
    c.out_offset = 0;
    c.out_bytes = 0;
    c.settle_confirms(0);
    c.in = std::string();
    c.closing(http_error_response(status, reason, extra), close_code::abnormal,
              "upgrade rejected: " + std::to_string(status), true);
}

}  // namespace hydra::ws
