#include "services/chat/chat_room.h"

namespace services::chat {

using hydra::Json;

namespace {

Json error(const std::string& msg) { return Json{{"status", "error"}, {"msg", msg}}; }
const Json kSuccess = {{"status", "success"}};

// room_id may be a number or a string; channel names are "room:<id>".
std::optional<std::string> room_of(const Json& value) {
    if (value.is_number_integer()) return std::to_string(value.get<long long>());
    if (value.is_string() && !value.get<std::string>().empty() && value.get<std::string>().size() <= 64)
        return value.get<std::string>();
    return std::nullopt;
}

}  // namespace

hydra::Result on_message(hydra::Context& ctx) {
    Json in = hydra::parse_json_or_discarded(ctx.body());
    if (in.is_discarded() || !in.is_object()) return error("invalid JSON: expected an object with \"op\"");
    auto op_it = in.find("op");
    if (op_it == in.end() || !op_it->is_string()) return error("missing field op");
    const std::string op = op_it->get<std::string>();
    hydra::Exchange& ex = ctx.exchange();
    // The room joined ("room" is null after a quit).
    std::optional<Json> value = ex.get(ctx.uuid(), "room");
    const std::optional<std::string> current =
        value && value->is_string() ? std::optional<std::string>(value->get<std::string>()) : std::nullopt;

    // Join and quit answer through the exchange, in line with the rooms' messages: what the old room published
    // before the client left comes before the answer, the new room's messages after it. (A returned answer would
    // go ahead of everything that reached the connection while this handler ran, an old room's messages included.)
    if (op == "join") {
        auto room = in.contains("room_id") ? room_of(in["room_id"]) : std::nullopt;
        if (!room) return error("missing or invalid field room_id");
        if (current == room) return kSuccess;  // already there: nothing to leave, nothing missed
        if (current) ex.unsubscribe(ctx.uuid(), "room:" + *current);
        ex.set(ctx.uuid(), "room", *room);
        ex.send(ctx.uuid(), hydra::dump(kSuccess));
        ex.subscribe(ctx.uuid(), "room:" + *room);
        return {};
    }
    if (op == "send") {
        if (!in.contains("msg") || !in["msg"].is_string()) return error("missing field msg");
        if (!current) return error("not in a room: join one first");
        // The sender is in the room too: its copy follows this answer (a reply goes before what its handler sent).
        ex.publish("room:" + *current, Json{{"client_id", ctx.uuid()}, {"msg", in["msg"]}}.dump());
        return kSuccess;
    }
    if (op == "quit") {
        if (!current) return error("not in a room");
        ex.unsubscribe(ctx.uuid(), "room:" + *current);
        ex.set(ctx.uuid(), "room", nullptr);
        ex.send(ctx.uuid(), hydra::dump(kSuccess));
        return {};
    }
    return error("unknown op: " + op);
}

hydra::WsEndpoint endpoint() {
    hydra::WsEndpoint ep;
    ep.on_message = on_message;
    return ep;
}

}  // namespace services::chat
