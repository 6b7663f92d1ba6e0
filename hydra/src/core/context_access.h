// The one way to make a Context (its constructor is private): the servers, and hydra::testing::make_context.
#pragma once

#include <utility>

#include <hydra/context.h>

namespace hydra::detail {

struct ContextAccess {
    static Context make(Context::Init init) { return Context(std::move(init)); }
};

}  // namespace hydra::detail
