#include "queue/kafka/conf.h"

#include <algorithm>
#include <stdexcept>

#include <hydra/json.h>
#include <hydra/log.h>

namespace hydra::queue::kafka {

void config_error(const std::string& what) { throw std::runtime_error("queue: kafka: " + what); }

void set(RdKafka::Conf& conf, const std::string& name, const std::string& value) {
    std::string err;
    if (conf.set(name, value, err) != RdKafka::Conf::CONF_OK) config_error(err);
}

rd_kafka_conf_t* new_conf(const std::map<std::string, std::string>& properties, std::string& error) {
    rd_kafka_conf_t* conf = rd_kafka_conf_new();
    char text[512];
    for (const auto& [name, value] : properties) {
        if (rd_kafka_conf_set(conf, name.c_str(), value.c_str(), text, sizeof text) != RD_KAFKA_CONF_OK) {
            rd_kafka_conf_destroy(conf);
            error = text;
            return nullptr;
        }
    }
    return conf;
}

void EventLogger::event_cb(RdKafka::Event& event) {
    switch (event.type()) {
        case RdKafka::Event::EVENT_ERROR:
            Logger().log(event.fatal() ? LogLevel::error : LogLevel::warn,
                         "queue: kafka " + who_ + ": " + RdKafka::err2str(event.err()) + ": " + event.str());
            break;
        case RdKafka::Event::EVENT_LOG: {
            LogLevel level = event.severity() <= RdKafka::Event::EVENT_SEVERITY_ERROR     ? LogLevel::error
                             : event.severity() <= RdKafka::Event::EVENT_SEVERITY_WARNING ? LogLevel::warn
                             : event.severity() <= RdKafka::Event::EVENT_SEVERITY_INFO    ? LogLevel::info
                                                                                          : LogLevel::debug;
            // queue.kafka.properties go to producer and consumers alike: each then warns about the other's
            // properties ("... is a producer property and will be ignored by this consumer instance").
            if (event.fac() == "CONFWARN" && event.str().find("will be ignored") != std::string::npos)
                level = LogLevel::debug;
            // Connection failures and fatal errors also come as error events (above): log them once.
            if (event.fac() == "FAIL" || event.fac() == "FATAL") level = LogLevel::debug;
            // Brokers older than 0.11 (and librdkafka's mock cluster) ignore allow.auto.create.topics=false:
            // said at every metadata request. Topics are created with the Admin API anyway.
            if (event.fac() == "AUTOCREATE") level = LogLevel::debug;
            if (Logger::enabled(level))
                Logger().log(level, "queue: kafka " + who_ + ": " + event.fac() + ": " + event.str());
            break;
        }
        case RdKafka::Event::EVENT_STATS:
            if (lag_ != nullptr) lag_->store(consumer_lag(event.str()), std::memory_order_relaxed);
            break;
        default:
            break;
    }
}

std::int64_t EventLogger::consumer_lag(const std::string& statistics) const {
    const Json stats = Json::parse(statistics, nullptr, false);
    if (!stats.is_object() || !stats.contains("topics")) return -1;
    const Json& topics = stats["topics"];
    auto topic = topics.find(topic_);
    if (topic == topics.end() || !topic->contains("partitions")) return -1;
    std::int64_t sum = -1;
    for (const auto& [id, partition] : (*topic)["partitions"].items()) {
        if (id == "-1" || !partition.is_object()) continue;  // -1: librdkafka's "unassigned" bucket
        const std::int64_t lag = partition.value("consumer_lag", std::int64_t{-1});
        if (lag >= 0) sum = std::max<std::int64_t>(sum, 0) + lag;
    }
    return sum;
}

}  // namespace hydra::queue::kafka
