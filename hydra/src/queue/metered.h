// A queue backend that counts what passes through it (hydra_queue_* metrics) and otherwise forwards to the real one.
#pragma once

#include <memory>

#include "metrics/metrics.h"
#include "queue/backend.h"

namespace hydra::queue {

// `inner` wrapped: pushes by queue and result, push-to-durable latency by queue; with the SQLite backend, the
// depth and oldest-message age of every queue at scrape time (read from `sqlite_path`; "" = none).
std::shared_ptr<Backend> metered(std::shared_ptr<Backend> inner, std::shared_ptr<metrics::Registry> registry,
                                 std::string sqlite_path);

}  // namespace hydra::queue
