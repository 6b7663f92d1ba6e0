// GET /auth/whoami: who the caller's JSON Web Token says they are, {"user": sub} (a route with Auth::jwt).
#pragma once

#include <hydra/app.h>

namespace services::system {

hydra::Json whoami(hydra::Context& ctx);

}  // namespace services::system
