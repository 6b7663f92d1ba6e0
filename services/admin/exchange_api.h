// Admin HTTP endpoints over the WSExchange (connmix-compatible publish), switched off with api.admin=false:
//   POST /v1/mesh/publish        {"c":"room:1002","d":"<string>"}  → d verbatim to every subscriber of channel c
//   POST /v1/exchange/notify     {"uuid":"...","data":<json>}      → hydra's notify envelope to one connection
//   POST /v1/exchange/broadcast  {"data":<json>}                   → the notify envelope to every connection
#pragma once

#include <hydra/app.h>

namespace services::admin {

hydra::Json publish(hydra::Context& ctx);
hydra::Json notify(hydra::Context& ctx);
hydra::Json broadcast(hydra::Context& ctx);

// Registers the three routes when the config allows it (api.admin).
void register_routes(hydra::App& app);

}  // namespace services::admin
