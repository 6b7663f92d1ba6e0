// The operator's HTTP endpoints over the WSExchange (connmix-compatible publish), on the admin listener
// (admin.address; an API key from auth.api_keys when keys are configured):
//   POST /v1/mesh/publish          {"c":"room:1002","d":"<string>"}  → d verbatim to every subscriber of channel c
//   POST /v1/exchange/notify       {"uuid":"...","data":<json>}      → hydra's notify envelope to one connection
//   POST /v1/exchange/notify_user  {"user":"...","data":<json>}      → the notify envelope to the user's devices (404:
//   none) POST /v1/exchange/broadcast    {"data":<json>}                   → the notify envelope to every connection
#pragma once

#include <hydra/app.h>

namespace services::admin {

hydra::Json publish(hydra::Context& ctx);
hydra::Json notify(hydra::Context& ctx);
hydra::Json notify_user(hydra::Context& ctx);
hydra::Json broadcast(hydra::Context& ctx);

// Registers the routes on the admin listener (served unless admin.enabled=false).
void register_routes(hydra::App& app);

}  // namespace services::admin
