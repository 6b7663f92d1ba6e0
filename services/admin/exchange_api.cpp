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

Json broadcast(hydra::Context& ctx) {
    std::size_t n = ctx.exchange().broadcast(field(ctx, "data"));
    return Json{{"code", 0}, {"msg", "success"}, {"connections", n}};
}

void register_routes(hydra::App& app) {
    // The routes exist always; with api.admin=false they answer 404 like any unknown path.
    auto guarded = [&app](Json (*handler)(hydra::Context&)) {
        return [&app, handler](hydra::Context& ctx) -> Json {
            if (!app.config().boolean("api.admin")) throw hydra::Error(404, "no route for " + ctx.path());
            return handler(ctx);
        };
    };
    app.api("/v1/mesh/publish", guarded(publish), {.methods = {"POST"}});
    app.api("/v1/exchange/notify", guarded(notify), {.methods = {"POST"}});
    app.api("/v1/exchange/broadcast", guarded(broadcast), {.methods = {"POST"}});
}

}  // namespace services::admin
