// What a queue backend (SQLite, Kafka) provides to the host beyond Queue::push: consumption for the MQC server,
// with one retry policy for both backends.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <hydra/config.h>
#include <hydra/queue.h>

#include "metrics/metrics.h"
#include "net/heartbeat.h"

namespace hydra::queue {

// Retries after a handler failure: attempt n (1-based) waits backoff * 2^(n-1), capped; after max_attempts the
// message goes to the dead letters (SQLite table / "<topic>.dlq" topic) with the last error.
struct RetryPolicy {
    int max_attempts = 5;
    std::chrono::milliseconds backoff{1000};
    std::chrono::milliseconds max_backoff{std::chrono::minutes(10)};

    std::chrono::milliseconds delay_after(int attempt) const;
};

// A consumer's handler: return normally to acknowledge; throw to fail this attempt (the message is retried
// per the RetryPolicy). Runs on the backend's consumer threads, at most `concurrency` at a time per subscription.
using MessageHandler = std::function<void(const Message&)>;

struct Subscription {
    std::string queue;  // hydra queue name, e.g. "mall:wsserver:msg"
    std::string group;  // consumer group (Kafka); "<plat>.<system>.<route>" by default
    int concurrency = 1;
    MessageHandler handler;
};

class Backend : public Queue {
  public:
    // Register consumers before start().
    virtual void subscribe(Subscription subscription) = 0;
    // Starts consuming the subscriptions (producing works from construction on).
    virtual void start() = 0;
    // Graceful: stop taking new messages, let in-flight handlers finish (bounded by `grace`), record their
    // outcome (ack / retry), release what was not started, flush pending pushes. Idempotent.
    virtual void stop(std::chrono::milliseconds grace) = 0;

    // Liveness (/healthz): the threads the backend cannot do without (the SQLite writer, the Kafka producer's poll
    // thread), each turning at least every kHeartbeatMs.
    virtual Heartbeats heartbeats() const { return {}; }
    // Metrics read at scrape time (SQLite: depth and oldest message per queue; Kafka: consumer lag).
    virtual void collect(metrics::Samples& samples) { (void)samples; }
    // Readiness (/readyz): why messages cannot be taken now, "" when they can. May block up to `timeout` (a
    // round trip to the brokers): called from the host's health thread, never from an I/O loop.
    virtual std::string check_ready(std::chrono::milliseconds timeout) {
        (void)timeout;
        return {};
    }
};

// Queue names follow hydra ("mall:wsserver:msg"): 1..200 characters of [A-Za-z0-9._:-], not "." or "..".
// Throws QueueError (not retryable) naming the problem.
void validate_queue_name(std::string_view name);
// The Kafka topic of a queue name: ':' → '.' ("mall.wsserver.msg").
std::string topic_for(std::string_view queue_name);

// The backend named by queue.backend, configured from the `queue` section.
std::unique_ptr<Backend> make_backend(const Config& config);

}  // namespace hydra::queue
