#include "services/push/push_service.h"

#include <algorithm>

namespace services::push {

using hydra::Json;

namespace {
// {"msg":...,"uname":...} around a message, for the mailbox check at /msg/send (the MQC handler measures exactly).
constexpr std::size_t kEnvelopeBytes = 24;

// {"msg":<msg>,"<key>":<to>}, written as text: a Json built only to be serialized costs as much as the rest of a
// handler. The queued message (key uname or uuid) and a connection's notification data (uuid).
std::string message_text(std::string_view msg, std::string_view key, std::string_view to) {
    std::string out;
    out.reserve(msg.size() + key.size() + to.size() + 16);
    out += "{\"msg\":";
    hydra::append_json_string(out, msg);
    out += ",\"";
    out += key;
    out += "\":";
    hydra::append_json_string(out, to);
    out += '}';
    return out;
}
}  // namespace

Json config_schema() {
    return Json::parse(R"json({
        "type": "object",
        "description": "hydra's WS push demo",
        "properties": {
            "database": {"type": "string", "minLength": 1, "default": "data/push.db",
                         "description": "SQLite file with the users and their offline mailboxes"},
            "users": {"type": "array", "default": [],
                      "items": {"type": "object", "required": ["uname", "pwd"],
                                "properties": {"uname": {"type": "string", "minLength": 1, "maxLength": 128},
                                               "pwd": {"type": "string", "minLength": 1, "secret": true}}}},
            "password_kdf": {
                "type": "object",
                "description": "scrypt parameters for new password records; a record keeps its own",
                "properties": {
                    "N": {"type": "integer", "minimum": 2, "maximum": 1048576, "default": 16384,
                          "description": "cost, a power of two; memory is 128 × N × r bytes per check"},
                    "r": {"type": "integer", "minimum": 1, "maximum": 64, "default": 8},
                    "p": {"type": "integer", "minimum": 1, "maximum": 16, "default": 1}
                }
            },
            "login_throttle": {
                "type": "object",
                "description": "failed logins per user name, connection and client address before attempts are refused (429)",
                "properties": {
                    "max_failures": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
                    "max_failures_per_address": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 20,
                                                 "description": "failed logins from one client address (IPv4, or IPv6 /64)"},
                    "window_s": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 60,
                                 "description": "failures count within this many seconds"},
                    "block_s": {"type": "integer", "minimum": 1, "maximum": 86400, "default": 60,
                                "description": "how long a user or connection is refused after max_failures"}
                }
            },
            "mailbox": {
                "type": "object",
                "description": "messages kept for a user with no device online",
                "properties": {
                    "max_messages": {"type": "integer", "minimum": 1, "maximum": 1000000, "default": 1000,
                                     "description": "per user; /msg/send answers 429 when full"},
                    "max_bytes": {"type": "integer", "minimum": 1024, "maximum": 1073741824, "default": 10485760,
                                  "description": "per user; /msg/send answers 507 when a message would not fit"},
                    "ttl_s": {"type": "integer", "minimum": 1, "maximum": 31536000, "default": 604800,
                              "description": "older messages are not delivered and are deleted"}
                }
            }
        }
    })json");
}

Settings Settings::from(const hydra::Config& config) {
    Settings s;
    s.database = config.str("services.push.database");
    s.users = config.at("services.push.users");
    s.kdf.n = static_cast<std::uint64_t>(config.integer("services.push.password_kdf.N"));
    s.kdf.r = static_cast<std::uint64_t>(config.integer("services.push.password_kdf.r"));
    s.kdf.p = static_cast<std::uint64_t>(config.integer("services.push.password_kdf.p"));
    if (std::string problem = kdf_problem(s.kdf); !problem.empty())
        throw hydra::ConfigError(config.source() + ": services.push.password_kdf: " + problem);
    s.throttle.max_failures = static_cast<int>(config.integer("services.push.login_throttle.max_failures"));
    s.throttle.max_failures_per_address =
        static_cast<int>(config.integer("services.push.login_throttle.max_failures_per_address"));
    s.throttle.window = std::chrono::seconds(config.integer("services.push.login_throttle.window_s"));
    s.throttle.block = std::chrono::seconds(config.integer("services.push.login_throttle.block_s"));
    s.mailbox.max_messages = static_cast<std::size_t>(config.integer("services.push.mailbox.max_messages"));
    s.mailbox.max_bytes = static_cast<std::size_t>(config.integer("services.push.mailbox.max_bytes"));
    s.mailbox.ttl = std::chrono::seconds(config.integer("services.push.mailbox.ttl_s"));
    s.window.bytes = static_cast<std::size_t>(config.integer("ws.send_queue_bytes")) / 4;
    return s;
}

void Service::start(const Settings& settings) {
    throttle_.set_limits(settings.throttle);
    max_stored_ = settings.window.bytes * 2;
    users_.open(settings.database, settings.users, settings.kdf, settings.mailbox);
    delivery_.start(settings.window, std::min(settings.mailbox.ttl, std::chrono::seconds(60)));
}

void Service::stop() { delivery_.stop(); }

hydra::Result Service::login(hydra::Context& ctx) {
    std::string uname = ctx.require("uname");
    std::string pwd = ctx.require("pwd");
    if (uname.size() > kMaxUname) return hydra::Error(400, "uname over " + std::to_string(kMaxUname) + " bytes");
    if (pwd.size() > kMaxPassword) return hydra::Error(400, "pwd over " + std::to_string(kMaxPassword) + " bytes");
    // Refused without checking the password: a guesser learns nothing while blocked.
    const LoginThrottle::Attempt attempt{uname, ctx.uuid(), ctx.peer_address()};
    if (auto wait = throttle_.blocked(attempt))
        return hydra::Error(429, "too many failed logins: try again in " + std::to_string(wait->count()) + " s");
    if (!users_.check_password(uname, pwd)) {
        throttle_.failed(attempt);
        return hydra::Error(401, "wrong user name or password");
    }
    throttle_.succeeded(attempt);
    hydra::Exchange& ex = ctx.exchange();
    ex.set(ctx.uuid(), "uname", uname);
    // The reply goes first (what reaches this connection while its handler runs waits for the reply), then what
    // arrived while the user was offline, oldest first, then live messages: the connection is bound to the user
    // (live messages) only once its mailbox is delivered.
    {
        std::lock_guard lock(locks_.of(uname));
        if (!delivery_.begin(ex, uname, ctx.uuid(), ctx.log())) ex.bind(uname, ctx.uuid());
    }
    ctx.log().info("push: logged in", {{"user", uname}, {"uuid", ctx.uuid()}});
    return Json{{"uuid", ctx.uuid()}};
}

void Service::send(hydra::Context& ctx, hydra::Reply reply) {
    std::string msg = ctx.require("msg");
    std::string key;        // "uname" or "uuid"
    std::string order_key;  // one user's (or connection's) messages are pushed in the order they were sent
    if (ctx.has("uuid")) {
        key = "uuid";
        order_key = ctx.require("uuid");
    } else if (ctx.has("uname")) {
        std::string uname = ctx.require("uname");
        if (!users_.exists(uname)) throw hydra::Error(404, "no such user");
        // A stored message must fit a connection's send queue at the next login, or no login could ever take it.
        if (msg.size() + uname.size() + kEnvelopeBytes > max_stored_)
            throw hydra::Error(413,
                               "message too large to keep for a user (over " + std::to_string(max_stored_) + " bytes)");
        // A message is stored only while no device is online, and a login empties the mailbox: a full one is
        // refused here, where the sender can be told (the MQC handler drops what would overflow, and logs it).
        switch (users_.room(uname, msg.size() + uname.size() + kEnvelopeBytes)) {
            case Room::ok:
                break;
            case Room::full_count:
                throw hydra::Error(429, "mailbox full: " + uname + " has too many messages waiting");
            case Room::full_bytes:
                throw hydra::Error(507, "mailbox full: no room for this message's size");
        }
        key = "uname";
        order_key = std::move(uname);
    } else {
        throw hydra::Error(400, "missing parameter uname or uuid");
    }
    const std::string payload = message_text(msg, key, order_key);
    // The answer goes out once the message is durable; a failed push becomes 503.
    ctx.queue().push_async(kQueue, std::string_view(payload),
                           [reply = std::move(reply)](const hydra::Error* error) {
                               if (error != nullptr) return reply(*error);
                               reply(hydra::Result::json_text(R"({"code":0,"msg":"success"})"));
                           },
                           {{std::string(hydra::kOrderKeyHeader), std::move(order_key)}});
}

hydra::Result Service::push(hydra::Context& ctx) {
    std::string msg = ctx.require("msg");
    hydra::Exchange& ex = ctx.exchange();
    if (ctx.has("uuid")) {
        std::string uuid = ctx.require("uuid");
        // A connection is not a mailbox: a message for a uuid that is gone is dropped (and logged).
        if (!ex.notify_json(uuid, message_text(msg, "uuid", uuid)))
            ctx.log().warn("push: connection gone; message dropped", {{"uuid", uuid}});
        return {};
    }
    Json data = {{"msg", msg}};
    std::string uname = ctx.require("uname");
    data["uname"] = uname;
    if (!users_.exists(uname)) {  // queued before the check at /msg/send, or the user left the config
        ctx.log().warn("push: no such user; message dropped", {{"user", uname}});
        return {};
    }
    // Under the user's lock: a login delivering the mailbox and binding cannot slip between notify and store.
    std::lock_guard lock(locks_.of(uname));
    if (ex.notify_user(uname, data) > 0) return {};
    std::string text = hydra::dump(data);
    if (text.size() > max_stored_) {
        ctx.log().warn("push: message too large to keep for a user; dropped", {{"user", uname}});
        return {};
    }
    switch (users_.store_offline(uname, text)) {
        case Room::ok:
            ctx.log().info("push: user offline; message kept for the next login", {{"user", uname}});
            break;
        case Room::full_count:
        case Room::full_bytes:
            ctx.log().warn("push: mailbox full; message dropped", {{"user", uname}});
            break;
    }
    return {};
}

Json broadcast(hydra::Context& ctx) {
    std::size_t n = ctx.exchange().broadcast(Json{{"msg", ctx.require("msg")}});
    return Json{{"code", 0}, {"msg", "success"}, {"connections", n}};
}

}  // namespace services::push
