// A queue backend that counts what passes through it (hydra_queue_* metrics) and otherwise forwards to the real one.
#pragma once

#include <memory>

#include "metrics/metrics.h"
#include "queue/backend.h"

namespace hydra::queue {

// `inner` wrapped: pushes by queue and result, push-to-durable latency by queue, and at scrape time what the
// backend collects itself (Backend::collect).
std::shared_ptr<Backend> metered(std::shared_ptr<Backend> inner, std::shared_ptr<metrics::Registry> registry);

}  // namespace hydra::queue
