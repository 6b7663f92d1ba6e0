#include "core/chain.h"

namespace hydra {

Result run_chain(const std::vector<Middleware>& chain, Context& ctx, const Handler& handler) {
    if (chain.empty()) return handler(ctx);
    // Index-based recursion: each middleware's next() runs the rest of the chain.
    std::function<Result(std::size_t)> step = [&](std::size_t i) -> Result {
        if (i == chain.size()) return handler(ctx);
        return chain[i](ctx, [&step, i] { return step(i + 1); });
    };
    return step(0);
}

}  // namespace hydra
