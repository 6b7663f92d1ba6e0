#include "services/message_center/message_center.h"

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/StreamCopier.h>
#include <Poco/URI.h>

#include <stdexcept>

namespace services::message_center {

using hydra::Json;

namespace {
Json fail(int code, const std::string& msg) { return Json{{"code", code}, {"msg", msg}}; }
const Json kOk = {{"result", true}};
}  // namespace

Json config_schema() {
    return Json::parse(R"({
        "type": "object",
        "description": "the connmix-style message center",
        "properties": {
            "auth_url": {"type": "string", "pattern": "^http://[^/]+(/.*)?$",
                         "default": "http://127.0.0.1:8000/websocket_auth",
                         "description": "the user's own API: POST {\"token\"} → {\"uid\": N}"},
            "auth_timeout_ms": {"type": "integer", "minimum": 1, "maximum": 60000, "default": 3000}
        }
    })");
}

Settings settings_from(const hydra::Config& config) {
    Settings s;
    s.auth_url = config.str("services.message_center.auth_url");
    s.auth_timeout = std::chrono::milliseconds(config.integer("services.message_center.auth_timeout_ms"));
    return s;
}

std::string authenticate(const Settings& settings, const std::string& token) {
    try {
        Poco::URI uri(settings.auth_url);
        Poco::Net::HTTPClientSession session(uri.getHost(), uri.getPort());
        session.setTimeout(Poco::Timespan(std::int64_t(settings.auth_timeout.count()) * 1000));
        std::string path = uri.getPathAndQuery().empty() ? "/" : uri.getPathAndQuery();
        Poco::Net::HTTPRequest req(Poco::Net::HTTPRequest::HTTP_POST, path, Poco::Net::HTTPMessage::HTTP_1_1);
        std::string body = Json{{"token", token}}.dump();
        req.setContentType("application/json");
        req.setContentLength64(static_cast<std::int64_t>(body.size()));
        session.sendRequest(req) << body;
        Poco::Net::HTTPResponse resp;
        std::istream& in = session.receiveResponse(resp);
        std::string answer;
        Poco::StreamCopier::copyToString(in, answer);
        if (resp.getStatus() != Poco::Net::HTTPResponse::HTTP_OK)
            throw std::runtime_error("auth API answered " + std::to_string(resp.getStatus()));
        Json j = hydra::parse_json_or_discarded(answer);
        if (j.is_discarded() || !j.is_object() || !j.contains("uid"))
            throw std::runtime_error("auth API answer has no uid");
        const Json& uid = j["uid"];
        if (uid.is_number_integer()) return std::to_string(uid.get<long long>());
        if (uid.is_string() && !uid.get<std::string>().empty()) return uid.get<std::string>();
        throw std::runtime_error("auth API answered an invalid uid");
    } catch (const Poco::Exception& e) {
        throw std::runtime_error("auth API unreachable: " + e.displayText());
    }
}

hydra::Result on_message(const Settings& settings, hydra::Context& ctx) {
    Json in = hydra::parse_json_or_discarded(ctx.body());
    if (in.is_discarded() || !in.is_object() || !in.contains("op") || !in["op"].is_string())
        return fail(2, "invalid message: expected {\"op\":...}");
    const std::string op = in["op"].get<std::string>();
    hydra::Exchange& ex = ctx.exchange();

    if (op == "auth") {
        if (!in.contains("token") || !in["token"].is_string()) return fail(1, "missing token");
        try {
            std::string uid = authenticate(settings, in["token"].get<std::string>());
            ex.set(ctx.uuid(), "uid", uid);
        } catch (const std::exception& e) {
            ctx.log().warn(std::string("message-center: auth failed: ") + e.what());
            return fail(1, std::string("auth failed: ") + e.what());
        }
        return kOk;
    }
    if (op == "subscribe" || op == "unsubscribe") {
        std::string channel =
            in.contains("channel") && in["channel"].is_string() ? in["channel"].get<std::string>() : "";
        if (channel != "@user") return fail(2, "unknown channel: " + channel);
        auto uid = ex.get(ctx.uuid(), "uid");
        if (!uid) return fail(1, "Not Auth");
        std::string name = "user:" + uid->get<std::string>();
        if (op == "subscribe")
            ex.subscribe(ctx.uuid(), name);
        else
            ex.unsubscribe(ctx.uuid(), name);
        return kOk;
    }
    return fail(2, "unknown op: " + op);
}

}  // namespace services::message_center

namespace services::message_center {

hydra::WsEndpoint endpoint(std::shared_ptr<const Settings> settings) {
    hydra::WsEndpoint ep;
    ep.on_message = [settings](hydra::Context& ctx) { return on_message(*settings, ctx); };
    return ep;
}

}  // namespace services::message_center
