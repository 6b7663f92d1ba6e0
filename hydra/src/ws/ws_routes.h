// What the WS server serves: services routed on "/", raw endpoints by path, and both middleware chains.
#pragma once

#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include <hydra/handler.h>
#include <hydra/ws.h>

namespace hydra::ws {

struct WsRoutes {
    std::unordered_map<std::string, Handler> services;  // "/member/login" → handler (path "/")
    std::map<std::string, WsEndpoint> endpoints;        // "/chat" → raw endpoint
    std::vector<Middleware> connection_middleware;
    std::vector<Middleware> packet_middleware;

    bool serves_services() const { return !services.empty(); }
};

}  // namespace hydra::ws
