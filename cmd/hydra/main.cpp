// The `hydra` binary: the demo services, registered by route.
#include <hydra/app.h>

#include "services/system/health.h"

int main(int argc, char** argv) {
    hydra::App app{{.plat = "mall", .system = "wsserver"}};

    app.api("/healthz", services::system::Health{app});

    return app.run(argc, argv);
}
