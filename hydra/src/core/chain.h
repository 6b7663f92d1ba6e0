// Middleware around a handler, as every server runs it.
#pragma once

#include <vector>

#include <hydra/handler.h>

namespace hydra {

// Runs middleware[0] around middleware[1] ... around the handler.
Result run_chain(const std::vector<Middleware>& chain, Context& ctx, const Handler& handler);

}  // namespace hydra
