#include "services/system/echo.h"

namespace services::system {

hydra::WsEndpoint echo_endpoint() {
    hydra::WsEndpoint ep;
    ep.on_message = [](hydra::Context& ctx) -> hydra::Result {
        return ctx.binary() ? hydra::Result::binary(ctx.body()) : hydra::Result(ctx.body());
    };
    ep.run_on_loop = true;  // copying a buffer back never blocks
    return ep;
}

}  // namespace services::system
