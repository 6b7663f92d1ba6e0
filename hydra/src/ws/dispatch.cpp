#include "ws/dispatch.h"

#include <chrono>
#include <functional>
#include <optional>

#include "core/chain.h"
#include "core/context_access.h"
#include "ws/loop.h"

namespace hydra::ws {

std::string envelope_text(std::string_view service, int code, std::string_view field, std::string_view value_json) {
    std::string out;
    out.reserve(32 + service.size() + value_json.size());
    out += "{\"service\":";
    append_json_string(out, service);
    out += ",\"code\":";
    out += std::to_string(code);
    out += ",\"";
    out += field;
    out += "\":";
    out += value_json;
    out += '}';
    return out;
}

std::string envelope(std::string_view service, int code, std::string_view field, const Json& value) {
    return envelope_text(service, code, field, dump(value));
}

namespace {

constexpr std::size_t kMaxPendingMessages = 16;  // per connection, before we stop reading from it

// A reply to send back: text unless `binary`.
struct Reply {
    Reply(std::string d, bool b = false) : data(std::move(d)), binary(b) {}
    std::string data;
    bool binary;
};

Frame reply_frame(const Reply& reply) {
    return make_frame(reply.binary ? encode_binary(reply.data) : encode_text(reply.data));
}

// On a raw endpoint under ws.auth=jwt: the message if it is hydra's {"service":"/auth/refresh",...} (taken before the
// endpoint's handler). A cheap scan first: most messages are not.
std::optional<Json> refresh_request(const Context::Init& init) {
    const std::string& body = init.body;
    if (init.binary || body.empty() || body.front() != '{' || body.find(WsServer::kRefreshService) == std::string::npos)
        return std::nullopt;
    try {
        Json doc = parse_json(body);
        auto svc = doc.find("service");
        if (svc != doc.end() && *svc == WsServer::kRefreshService) return doc;
    } catch (const std::exception&) {  // not JSON: the endpoint's message
    }
    return std::nullopt;
}

// The whole life of one message on a worker: context, packet middleware, handler, and the reply as an encoded
// frame (encoding here keeps that work off the I/O loop).
// `loop` (the connection's, with its id) answers /auth/refresh under ws.auth=jwt; null otherwise.
std::optional<Reply> handle_message(const WsRoutes& routes, const WsEndpoint* endpoint, Context::Init init,
                                    const std::function<void(Context&, const std::string&)>& on_error,
                                    const WsServer::Metrics* metrics, WsServer::Loop* loop = nullptr,
                                    std::uint64_t id = 0) {
    std::string service;
    Handler handler;
    if (endpoint == nullptr) {
        Json doc;
        try {
            doc = parse_json(init.body);
        } catch (const Json::parse_error& e) {
            std::string what = e.what();
            if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
            return envelope("init", 406, "err", "invalid JSON: " + what);
        } catch (const JsonTooDeep& e) {
            return envelope("init", 400, "err", e.what());
        }
        auto svc = doc.is_object() ? doc.find("service") : doc.end();
        if (!doc.is_object() || svc == doc.end() || !svc->is_string())
            return envelope("init", 406, "err", "a message is a JSON object with a \"service\" field");
        service = svc->get<std::string>();
        if (loop != nullptr && service == WsServer::kRefreshService) return loop->refresh(doc, init, id);
        doc.erase(svc);
        auto h = routes.services.find(service);
        if (h == routes.services.end()) return envelope(service, 404, "err", "service not found: " + service);
        handler = h->second;
        init.path = service;
        init.route = service;
        init.params = std::move(doc);
    } else {
        if (loop != nullptr)
            if (auto doc = refresh_request(init)) return loop->refresh(*doc, init, id);
        handler = endpoint->on_message;
        if (!handler) return std::nullopt;
    }

    Context ctx = detail::ContextAccess::make(std::move(init));
    // A handler that threw anything but an Error: logged, told to on_error (which may throw too), a 500.
    auto failed = [&](const std::string& what) {
        ctx.log().error("ws: handler " + (endpoint ? ctx.route() : service) + " failed: " + what);
        try {
            on_error(ctx, "handler failed: " + what);
        } catch (...) {
            ctx.log().error("ws: on_error of " + ctx.route() + " threw");
        }
        return Result(Error(500, "internal server error"));
    };
    Result result;
    const auto started = metrics ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
    try {
        result = run_chain(routes.packet_middleware, ctx, handler);
    } catch (const Error& e) {
        result = Result(e);
    } catch (const std::exception& e) {
        result = failed(e.what());
    } catch (...) {
        result = failed("unknown exception");
    }
    if (metrics) {
        if (endpoint != nullptr)
            metrics->endpoint_handlers.at(endpoint)->observe_since(started);
        else if (auto timer = metrics->handlers.find(service); timer != metrics->handlers.end())
            timer->second->observe_since(started);
    }
    switch (result.kind()) {
        case Result::Kind::empty:
            return std::nullopt;
        case Result::Kind::error:
            if (endpoint == nullptr) return envelope(service, result.error_code(), "err", result.text());
            return dump(Json{{"code", result.error_code()}, {"msg", result.text()}});
        case Result::Kind::json:
            if (endpoint == nullptr)
                return envelope_text(service, result.status().value_or(200), "data", result.json_body());
            return result.json_body();
        case Result::Kind::text:
        case Result::Kind::binary:
            if (endpoint == nullptr) return envelope(service, result.status().value_or(200), "data", result.text());
            if (result.kind() == Result::Kind::binary) return Reply{result.text(), true};
            return result.text();
    }
    return std::nullopt;
}

}  // namespace

void WsServer::Loop::dispatch(Connection& c, std::string data, bool binary) {
    if (c.busy) {
        c.pending.push_back({std::move(data), binary});
        if (c.pending.size() >= kMaxPendingMessages && !c.reading_paused) {
            c.reading_paused = true;  // backpressure: the client waits in its own send buffer
            c.update_events();
        }
        return;
    }
    c.busy = true;
    std::string request_id;  // <uuid>.<n>: one allocation
    request_id.reserve(c.uuid.size() + 21);
    request_id.append(c.uuid).append(".").append(std::to_string(++c.seq));
    Context::Init init = server.context_for(c.path, c.uuid, c.headers, std::move(request_id), c.ip, c.claims);
    init.body = std::move(data);
    init.binary = binary;
    WsServer* srv = &server;
    const WsEndpoint* endpoint = c.endpoint;
    std::uint64_t id = c.id;
    Loop* self = this;
    if (endpoint != nullptr && endpoint->run_on_loop) {
        // A handler declared non-blocking runs right here: no hand-off to a worker and back.
        std::optional<Reply> reply = handle_message(
            srv->routes_, endpoint, std::move(init), [&](Context&, const std::string& e) { report_error(c, e); },
            metrics, srv->settings_.auth_jwt ? this : nullptr, id);
        c.busy = false;
        if (reply && !c.close_sent) c.enqueue(reply_frame(*reply));
        return;
    }
    // What reaches the connection while the handler runs waits for its reply (the handler's notify to itself, what
    // a login's bind lets through): the client sees the answer to its message first.
    c.shut_gate();
    server.workers_->post([srv, self, endpoint, id, init = std::move(init)]() mutable {
        auto on_error = [endpoint](Context& ctx, const std::string& error) {
            if (endpoint != nullptr && endpoint->on_error) endpoint->on_error(ctx, error);
        };
        WsServer::Loop* auth = srv->settings_.auth_jwt ? self : nullptr;
        Frame frame;
        // Whatever happens here (an on_error that throws, an exception not derived from std::exception), the loop
        // hears that the message is done: its gate opens and the next message goes.
        try {
            std::optional<Reply> reply =
                handle_message(srv->routes_, endpoint, std::move(init), on_error, srv->metrics_.get(), auth, id);
            if (reply) frame = reply_frame(*reply);
        } catch (const std::exception& e) {
            Logger().error(std::string("ws: a message's reply failed: ") + e.what());
        } catch (...) {
            Logger().error("ws: a message's reply failed: unknown exception");
        }
        self->loop.post([self, id, frame = std::move(frame)]() mutable { self->on_handled(id, std::move(frame)); });
    });
}

void WsServer::Loop::on_handled(std::uint64_t id, Frame reply) {
    Connection* c = find(id);
    if (c == nullptr) return;
    c->reply(std::move(reply));
    c->busy = false;
    if (!c->pending.empty() && !c->close_sent) {
        Connection::Pending next = std::move(c->pending.front());
        c->pending.erase(c->pending.begin());
        dispatch(*c, std::move(next.data), next.binary);
        if (c->pending.empty()) c->pending.shrink_to_fit();
    }
    if (c->reading_paused && c->pending.size() < kMaxPendingMessages / 2) {
        c->reading_paused = false;
        c->update_events();
        c->read();  // data may have arrived while paused (edge cases of level-triggered re-arm)
    }
}

}  // namespace hydra::ws
