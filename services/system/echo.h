// The raw WS endpoint /echo: every message comes back as it was sent (text or binary). For clients and benchmarks.
#pragma once

#include <hydra/ws.h>

namespace services::system {

hydra::WsEndpoint echo_endpoint();

}  // namespace services::system
