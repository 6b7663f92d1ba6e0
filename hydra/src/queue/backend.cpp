#include "queue/backend.h"

#include <algorithm>
#include <stdexcept>

#include <hydra/json.h>

#include "queue/kafka/kafka_queue.h"
#include "queue/sqlite/sqlite_queue.h"

namespace hydra::queue {

void decode_headers(Delivery& delivery) {
    if (delivery.stored_headers.empty()) return;
    std::string text = std::move(delivery.stored_headers);
    delivery.stored_headers.clear();
    if (text == "{}") return;
    try {
        Json j = parse_json(text);
        for (auto& [k, v] : j.items()) delivery.message.headers[k] = v.is_string() ? v.get<std::string>() : v.dump();
    } catch (const std::exception&) {
        // headers are written by us as JSON; an unreadable row keeps its payload
    }
}

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
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
    if (config.str("queue.backend") == "kafka") return std::make_unique<KafkaQueue>(KafkaQueue::Settings::from(config));
    return std::make_unique<SqliteQueue>(SqliteQueue::Settings::from(config));
}

}  // namespace hydra::queue
