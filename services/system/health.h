// GET /healthz: liveness and what this host runs, for load balancers and operators.
#pragma once

#include <hydra/app.h>

namespace services::system {

class Health {
  public:
    explicit Health(const hydra::App& app) : app_(app) {}
    hydra::Json get(hydra::Context& ctx);

  private:
    const hydra::App& app_;
};

}  // namespace services::system
