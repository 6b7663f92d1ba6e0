// The config sections of the demo services ("services.push", "services.message_center").
#pragma once

#include <hydra/config.h>

namespace services {

void add_schemas(hydra::ConfigSchema& schema);

// hydra's builtin schema plus the services' sections: what the `hydra` binary validates against.
hydra::ConfigSchema full_schema();

}  // namespace services
