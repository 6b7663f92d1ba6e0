// The queue interface shared by the embedded SQLite backend and Kafka: push is durable when it returns.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace hydra {

// Headers by name: a queued message's, and a request's (Context::headers(): names lower-case).
using Headers = std::map<std::string, std::string>;

// Messages of one queue pushed with the same value of this header are handled one at a time, in the order they
// were queued, by each MQC route that consumes the queue; messages with other keys, or none, go on beside them. On
// Kafka the key also picks the partition, so one host gets them all. A failed attempt keeps its place on Kafka; on
// SQLite the retry comes after what was queued behind it meanwhile.
inline constexpr std::string_view kOrderKeyHeader = "hydra-order-key";

// Push failed (timeout, backend down, invalid queue name). `retryable` says whether trying again may help.
class QueueError : public std::runtime_error {
  public:
    QueueError(const std::string& msg, bool retryable) : std::runtime_error(msg), retryable_(retryable) {}
    bool retryable() const noexcept { return retryable_; }

  private:
    bool retryable_;
};

class Queue {
  public:
    virtual ~Queue() = default;

    // Returns once the message is durable; throws QueueError otherwise (after queue.push_timeout_ms at most).
    // Concurrent pushes share the backend's commits (SQLite group commit, Kafka produce requests), so many threads
    // pushing at once get far more messages through than one thread pushing in a loop.
    virtual void push(std::string_view queue, std::string_view payload, const Headers& headers = {},
                      std::chrono::milliseconds delay = std::chrono::milliseconds{0}) = 0;

    // Pushes several messages (same headers, no delay) and returns once all of them are durable: one transaction
    // on SQLite, produced together on Kafka. For a thread with many messages to send, it is much faster than a
    // push() per message. They are stored in this order (on Kafka: within each partition). Throws QueueError when any
    // of them failed or timed out; some of them may then be stored (at-least-once: pushing the batch again may
    // duplicate those). An empty batch returns at once.
    // The default pushes one by one (for queues written by users, e.g. test doubles); the backends override it.
    virtual void push_batch(std::string_view queue, std::span<const std::string> payloads,
                            const Headers& headers = {}) {
        for (const auto& payload : payloads) push(queue, payload, headers);
    }

    // Called once when a push_async() ended: `error` is null when the message is durable. It runs on a thread of
    // the backend (the SQLite writer, librdkafka's delivery reports): keep it short and never block in it.
    using PushDone = std::function<void(const QueueError* error)>;

    // Starts a push and returns; `done` tells how it ended (SQLite: when the transaction the push joined commits or
    // fails; Kafka: its delivery report, within queue.push_timeout_ms). No thread waits meanwhile, so an API handler
    // on the I/O loop can answer once the message is durable (App::api_async). Every error, an invalid queue name
    // included, goes to `done`, which may then run before push_async returns.
    // The default (for queues written by users) pushes synchronously and then calls `done`.
    virtual void push_async(std::string_view queue, std::string_view payload, const Headers& headers,
                            std::chrono::milliseconds delay, PushDone done) {
        try {
            push(queue, payload, headers, delay);
        } catch (const QueueError& e) {
            done(&e);
            return;
        }
        done(nullptr);
    }

    // Short name of the backend ("sqlite", "kafka") for logs and status.
    virtual std::string backend() const = 0;
};

}  // namespace hydra
