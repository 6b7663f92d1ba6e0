// What a queue backend (SQLite, Kafka) provides to the host beyond Queue::push: the messages of a subscription,
// delivered to a consumer (mqc/), and the four ways of settling one. The consumer decides; the backend records.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <hydra/config.h>
#include <hydra/queue.h>

#include "metrics/metrics.h"
#include "net/heartbeat.h"

namespace hydra {

// A queued message as the consumer sees it (an MQC handler sees it as its Context).
struct Message {
    std::string id;
    std::string queue;
    std::string payload;
    Headers headers;
    int attempt = 1;  // 1 on first delivery
};

}  // namespace hydra

namespace hydra::queue {

// One message handed to a consumer, to be settled exactly once: Backend::ack, retry, dead_letter or release.
struct Delivery {
    Message message;  // message.queue is filled in by the consumer (it knows its queue)
    // The headers as the backend stored them (SQLite: a JSON object), decoded into message.headers by
    // decode_headers() on the handler thread rather than on the backend's; empty when message.headers is complete.
    std::string stored_headers;
    std::int64_t key = 0;         // the backend's: SQLite row id, Kafka offset
    std::shared_ptr<void> scope;  // the backend's: the Kafka partition it came from
    // Not to be handled before this time (ms since the epoch, 0: now): a delayed or retried Kafka message.
    std::int64_t visible_at_ms = 0;
    // Not started by then, it is released instead of handled: its lease might run out before its handler finished.
    std::chrono::steady_clock::time_point stale_after = std::chrono::steady_clock::time_point::max();
    // The consumer's: the kOrderKeyHeader header as a hash, taken when delivered (0: none). Two keys with one hash
    // only wait for each other.
    std::size_t order_key = 0;
};

// message.headers from stored_headers (a no-op when that is empty).
void decode_headers(Delivery& delivery);

// A consumer of one subscription, as the backend sees it: the backend delivers what it leased or polled, as long as
// the consumer wants more.
class Sink {
  public:
    virtual ~Sink() = default;
    // How many more messages it takes now (0: none; it has enough waiting, or it stopped).
    virtual std::size_t room() = 0;
    // Waits until it wants more messages (true), or it stopped, or `until` passed (false). "Wants more": its
    // waiting messages are down to half of what it takes ahead, and some are waiting or a handler is idle (a handler
    // that hangs must not keep taking messages whose leases then run out).
    virtual bool wait_wanted(std::chrono::steady_clock::time_point until) = 0;
    // Takes the messages, oldest first (emptying `deliveries`); once stopped it releases them instead.
    virtual void deliver(std::vector<Delivery>& deliveries) = 0;
    // Takes a message back ahead of the others (a Kafka retry, due at its visible_at_ms). False once stopped: the
    // delivery is still the caller's to release.
    virtual bool redeliver(Delivery& delivery) = 0;
    // Releases the messages not yet started for which `which` is true (a Kafka partition revoked).
    virtual void release_if(const std::function<bool(const Delivery&)>& which) = 0;
    // Takes nothing more, releases what waits. Does not wait for running handlers.
    virtual void stop() = 0;
    // After stop(): waits until `deadline` for running handlers; false (logged) if some still run.
    virtual bool wait_idle(std::chrono::steady_clock::time_point deadline) = 0;
    // After stop(): wait_idle(deadline), then waits for the handlers still running to end: their outcomes are
    // recorded before this returns.
    virtual void join(std::chrono::steady_clock::time_point deadline) = 0;
};

struct Subscription {
    std::string queue;  // hydra queue name, e.g. "mall:wsserver:msg"
    std::string group;  // consumer group (Kafka); "<plat>.<system>.<route>" by default
    std::shared_ptr<Sink> sink;
};

class Backend : public Queue {
  public:
    // Register consumers before start().
    virtual void subscribe(Subscription subscription) = 0;
    // Starts delivering to the subscriptions (producing works from construction on).
    virtual void start() = 0;
    // Graceful: stop delivering, stop the sinks and join them (bounded by `grace` for their running handlers),
    // record what they settled, flush pending pushes. Idempotent.
    virtual void stop(std::chrono::milliseconds grace) = 0;

    // Settling a delivery (from the consumer's handler threads; none blocks on the I/O of others' messages).
    // Handled: gone for good.
    virtual void ack(Delivery& delivery) = 0;
    // Failed: delivered again at `at` (ms since the epoch), attempt + 1, with `error` recorded.
    virtual void retry(Delivery& delivery, std::int64_t at_ms, std::string error) = 0;
    // Failed for the last time: to the dead letters (SQLite table / "<topic>.dlq" topic) with `error`.
    virtual void dead_letter(Delivery& delivery, std::string error) = 0;
    // Not handled (stopped, stale, revoked): delivered again later, this attempt not counted.
    virtual void release(Delivery& delivery) = 0;

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
// Milliseconds since the epoch (the clock of visible times).
std::int64_t now_ms();

// The backend named by queue.backend, configured from the `queue` section.
std::unique_ptr<Backend> make_backend(const Config& config);

}  // namespace hydra::queue
