#include "services/system/whoami.h"

namespace services::system {

hydra::Json whoami(hydra::Context& ctx) { return hydra::Json{{"user", ctx.user()}}; }

}  // namespace services::system
