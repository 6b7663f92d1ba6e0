#include "queue/backend.h"

#include <algorithm>
#include <stdexcept>

#include "queue/kafka_queue.h"
#include "queue/sqlite_queue.h"

namespace hydra::queue {

std::chrono::milliseconds RetryPolicy::delay_after(int attempt) const {
    std::int64_t ms = backoff.count();
    for (int i = 1; i < attempt && ms < max_backoff.count(); ++i) ms *= 2;
    return std::chrono::milliseconds(std::min<std::int64_t>(ms, max_backoff.count()));
}

void validate_queue_name(std::string_view name) {
    if (name.empty() || name.size() > 200)
        throw QueueError("invalid queue name \"" + std::string(name) + "\": 1 to 200 characters", false);
    if (name == "." || name == "..") throw QueueError("invalid queue name \"" + std::string(name) + "\"", false);
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == '-' || c == ':';
        if (!ok)
            throw QueueError("invalid queue name \"" + std::string(name) +
                                 "\": only letters, digits and . _ - : (a name must map to a Kafka topic)",
                             false);
    }
}

std::string topic_for(std::string_view queue_name) {
    std::string topic(queue_name);
    std::replace(topic.begin(), topic.end(), ':', '.');
    return topic;
}

std::unique_ptr<Backend> make_backend(const Config& config) {
    RetryPolicy retry;
    retry.max_attempts = static_cast<int>(config.integer("queue.max_attempts"));
    retry.backoff = std::chrono::milliseconds(config.integer("queue.retry_backoff_ms"));
    if (config.str("queue.backend") == "kafka")
        return std::make_unique<KafkaQueue>(KafkaQueue::Settings::from(config), retry);
    return std::make_unique<SqliteQueue>(SqliteQueue::Settings::from(config), retry);
}

}  // namespace hydra::queue
