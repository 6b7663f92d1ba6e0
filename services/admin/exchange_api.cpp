#include "services/admin/exchange_api.h"

namespace services::admin {

using hydra::Json;

namespace {
const Json& field(hydra::Context& ctx, const char* name) {
    const Json& params = ctx.params();
    auto it = params.find(name);
    if (it == params.end() || it->is_null()) throw hydra::Error(400, std::string("missing parameter ") + name);
    return *it;
}
}  // namespace

Json publish(hydra::Context& ctx) {
    std::string channel = ctx.require("c");
    const Json& d = field(ctx, "d");
    std::string payload = d.is_string() ? d.get<std::string>() : d.dump();
    std::size_t n = ctx.exchange().publish(channel, payload);
    return Json{{"code", 0}, {"msg", "success"}, {"delivered", n}};
}

Json notify(hydra::Context& ctx) {
    std::string uuid = ctx.require("uuid");
    bool found = ctx.exchange().notify(uuid, field(ctx, "data"));
    if (!found) throw hydra::Error(404, "no connection " + uuid);
    return Json{{"code", 0}, {"msg", "success"}};
}

Json notify_user(hydra::Context& ctx) {
    std::string user = ctx.require("user");
    std::size_t n = ctx.exchange().notify_user(user, field(ctx, "data"));
    if (n == 0) throw hydra::Error(404, "no connection of user " + user);
    return Json{{"code", 0}, {"msg", "success"}, {"connections", n}};
}

Json broadcast(hydra::Context& ctx) {
    std::size_t n = ctx.exchange().broadcast(field(ctx, "data"));
    return Json{{"code", 0}, {"msg", "success"}, {"connections", n}};
}

void register_routes(hydra::App& app) {
    const hydra::ApiOptions admin{.methods = {"POST"}, .listener = hydra::Listener::admin};
    app.api("/v1/mesh/publish", publish, admin);
    app.api("/v1/exchange/notify", notify, admin);
    app.api("/v1/exchange/notify_user", notify_user, admin);
    app.api("/v1/exchange/broadcast", broadcast, admin);
}

}  // namespace services::admin
