// Consumption, the same for every backend: per subscription, `concurrency` handler threads take what the backend
// delivers; the retry policy decides what a failure becomes (a retry after a backoff, or a dead letter), and the
// backend records it.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include <hydra/config.h>
#include <hydra/queue.h>

#include "metrics/metrics.h"
#include "queue/backend.h"

namespace hydra::mqc {

// Retries after a handler failure: attempt n (1-based) is retried after backoff * 2^(n-1), capped; the failure of
// attempt max_attempts sends the message to the dead letters with its error.
struct RetryPolicy {
    int max_attempts = 5;
    std::chrono::milliseconds backoff{1000};
    std::chrono::milliseconds max_backoff{std::chrono::minutes(10)};

    std::chrono::milliseconds delay_after(int attempt) const;
    // queue.max_attempts and queue.retry_backoff_ms.
    static RetryPolicy from(const Config& config);
};

// One attempt at a message: nullopt when it was handled, else why it failed. A handler that throws failed with the
// exception's what().
using MessageHandler = std::function<std::optional<std::string>(const Message&)>;

struct Subscription {
    Subscription() = default;
    Subscription(std::string queue, std::string group, int concurrency, MessageHandler handler, std::string route = {})
        : queue(std::move(queue)),
          group(std::move(group)),
          concurrency(concurrency),
          handler(std::move(handler)),
          route(std::move(route)) {}

    std::string queue;  // hydra queue name, e.g. "mall:wsserver:msg"
    std::string group;  // consumer group (Kafka); "<plat>.<system>.<route>" for a route
    int concurrency = 1;
    MessageHandler handler;
    std::string route;  // the MQC route, for its metrics (hydra_mqc_* by route); "" = the queue
    // The handler never waits for long: what is due and free to run is handled on the delivering thread, in
    // delivery order (MqcOptions::nonblocking).
    bool nonblocking = false;
};

// Subscribes a consumer of `subscription.queue` to `backend`, its handler threads started: messages come once the
// backend starts. `backend` holds it and stops it in Backend::stop (running handlers finish within the grace, their
// outcomes recorded; what waits is released). With `registry`, handling is counted (hydra_mqc_*). Throws what
// Backend::subscribe throws (QueueError on an invalid queue name).
void consume(queue::Backend& backend, Subscription subscription, RetryPolicy retry,
             metrics::Registry* registry = nullptr);

}  // namespace hydra::mqc
