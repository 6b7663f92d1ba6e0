// The message center (connmix) on the raw WS endpoint /message-center:
//   {"op":"auth","token":"..."}             → POST {"token"} to services.message_center.auth_url; its {"uid":N}
//                                              is kept with the connection → {"result":true}
//   {"op":"subscribe","channel":"@user"}    → channel user:<uid> → {"result":true}   (unsubscribe likewise)
// Errors: {"code":1,"msg":"..."} (auth failed, "Not Auth"), {"code":2,"msg":"..."} (unknown op or channel, bad
// JSON). The connection stays open. Messages reach users with POST /v1/mesh/publish {"c":"user:1001","d":"..."}.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <hydra/config.h>
#include <hydra/ws.h>

namespace services::message_center {

struct Settings {
    std::string auth_url = "http://127.0.0.1:8000/websocket_auth";
    std::chrono::milliseconds auth_timeout{3000};
};

// The `services.message_center` config section.
hydra::Json config_schema();
Settings settings_from(const hydra::Config& config);

// Calls the auth API: the uid (as a string) or an exception with a message for the client.
std::string authenticate(const Settings& settings, const std::string& token);

hydra::Result on_message(const Settings& settings, hydra::Context& ctx);

// The endpoint, reading `settings` (filled from config at start) on every message.
hydra::WsEndpoint endpoint(std::shared_ptr<const Settings> settings);

}  // namespace services::message_center
