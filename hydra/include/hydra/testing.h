// For unit tests of handlers, without sockets: the Context a server would hand a handler.
#pragma once

#include <hydra/context.h>

namespace hydra::testing {

// `init` as a server fills it in (queue and exchange may be test doubles; they must outlive the context).
Context make_context(Context::Init init);

}  // namespace hydra::testing
