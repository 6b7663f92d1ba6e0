#include "services/push/push_service.h"

namespace services::push {

using hydra::Json;

Json config_schema() {
    return Json::parse(R"({
        "type": "object",
        "description": "hydra's WS push demo",
        "properties": {
            "database": {"type": "string", "minLength": 1, "default": "data/push.db",
                         "description": "SQLite file with the users and their offline mailboxes"},
            "users": {"type": "array", "default": [],
                      "items": {"type": "object", "required": ["uname", "pwd"],
                                "properties": {"uname": {"type": "string", "minLength": 1},
                                               "pwd": {"type": "string", "minLength": 1, "secret": true}}}}
        }
    })");
}

hydra::Result Login::handle(hydra::Context& ctx) {
    std::string uname = ctx.require("uname");
    std::string pwd = ctx.require("pwd");
    if (!users_->check_password(uname, pwd)) return hydra::Error(401, "wrong user name or password");
    hydra::Exchange& ex = ctx.exchange();
    ex.bind(uname, ctx.uuid());
    ex.set(ctx.uuid(), "uname", uname);
    // The reply goes first, then what arrived while the user was offline, oldest first (same connection queue).
    ex.send(ctx.uuid(), Json{{"service", ctx.path()}, {"code", 200}, {"data", {{"uuid", ctx.uuid()}}}}.dump());
    for (const auto& data : users_->take_offline(uname)) ex.notify(ctx.uuid(), data);
    ctx.log().info("push: " + uname + " logged in on " + ctx.uuid());
    return {};
}

void send(hydra::Context& ctx, hydra::Reply reply) {
    std::string msg = ctx.require("msg");
    Json message = {{"msg", msg}};
    if (ctx.has("uuid")) {
        message["uuid"] = ctx.require("uuid");
    } else if (ctx.has("uname")) {
        message["uname"] = ctx.require("uname");
    } else {
        throw hydra::Error(400, "missing parameter uname or uuid");
    }
    // The answer goes out once the message is durable; a failed push becomes 503.
    ctx.queue().push_async(kQueue, message, [reply = std::move(reply)](const hydra::Error* error) {
        if (error != nullptr) return reply(*error);
        reply(Json{{"code", 0}, {"msg", "success"}});
    });
}

hydra::Result Push::handle(hydra::Context& ctx) {
    std::string msg = ctx.require("msg");
    Json data = {{"msg", msg}};
    hydra::Exchange& ex = ctx.exchange();
    if (ctx.has("uuid")) {
        std::string uuid = ctx.require("uuid");
        data["uuid"] = uuid;
        // A connection is not a mailbox: a message for a uuid that is gone is dropped (and logged).
        if (!ex.notify(uuid, data)) ctx.log().warn("push: connection " + uuid + " is gone; message dropped");
        return {};
    }
    std::string uname = ctx.require("uname");
    data["uname"] = uname;
    if (ex.notify_user(uname, data) == 0) {
        users_->store_offline(uname, data);  // a message center loses nothing: delivered at the next login
        ctx.log().info("push: " + uname + " is offline; message kept for the next login");
    }
    return {};
}

Json broadcast(hydra::Context& ctx) {
    std::size_t n = ctx.exchange().broadcast(Json{{"msg", ctx.require("msg")}});
    return Json{{"code", 0}, {"msg", "success"}, {"connections", n}};
}

}  // namespace services::push
