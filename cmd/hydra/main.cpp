// The `hydra` binary: the demo services, registered by route.
#include <hydra/app.h>

#include "services/admin/exchange_api.h"
#include "services/system/echo.h"
#include "services/system/health.h"

int main(int argc, char** argv) {
    hydra::App app{{.plat = "mall", .system = "wsserver"}};

    app.api("/healthz", services::system::Health{app});
    services::admin::register_routes(app);  // /v1/mesh/publish, /v1/exchange/notify, /v1/exchange/broadcast
    app.ws_endpoint("/echo", services::system::echo_endpoint());

    return app.run(argc, argv);
}
