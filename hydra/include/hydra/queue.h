// The queue interface shared by the embedded SQLite backend and Kafka: push is durable when it returns.
#pragma once

#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <string_view>

namespace hydra {

using Headers = std::map<std::string, std::string>;

// Push failed (timeout, backend down, invalid queue name). `retryable` says whether trying again may help.
class QueueError : public std::runtime_error {
  public:
    QueueError(const std::string& msg, bool retryable) : std::runtime_error(msg), retryable_(retryable) {}
    bool retryable() const noexcept { return retryable_; }

  private:
    bool retryable_;
};

// A message as a consumer sees it.
struct Message {
    std::string id;
    std::string queue;
    std::string payload;
    Headers headers;
    int attempt = 1;  // 1 on first delivery
};

class Queue {
  public:
    virtual ~Queue() = default;

    // Returns once the message is durable; throws QueueError otherwise (after queue.push_timeout_ms at most).
    virtual void push(std::string_view queue, std::string_view payload, const Headers& headers = {},
                      std::chrono::milliseconds delay = std::chrono::milliseconds{0}) = 0;

    // Short name of the backend ("sqlite", "kafka") for logs and status.
    virtual std::string backend() const = 0;
};

}  // namespace hydra
