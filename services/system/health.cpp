#include "services/system/health.h"

namespace services::system {

hydra::Json Health::get(hydra::Context&) {
    hydra::Json servers = hydra::Json::object();
    servers["api"] = app_.api_address();
    if (app_.exchange() != nullptr) servers["ws"] = {{"connections", app_.exchange()->connections()}};
    if (app_.queue() != nullptr) servers["queue"] = app_.queue()->backend();
    return hydra::Json{{"status", "ok"},
                       {"plat", app_.options().plat},
                       {"system", app_.options().system},
                       {"version", app_.options().version},
                       {"servers", servers}};
}

}  // namespace services::system
