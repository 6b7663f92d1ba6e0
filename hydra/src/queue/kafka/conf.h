// librdkafka configuration helpers shared by the queue's producer, consumers and admin handle and the cluster's bus:
// setting properties (the one place that does), and librdkafka's logs, errors and statistics routed to hydra's log.
#pragma once

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

namespace hydra::queue::kafka {

// A delayed message's visible time (ms since the epoch): Kafka has no delayed delivery, the consumer holds it.
constexpr const char* kVisibleAtHeader = "hydra-visible-at";

// Throws std::runtime_error "queue: kafka: <what>".
[[noreturn]] void config_error(const std::string& what);

// Sets a property; config_error() with librdkafka's reason when it refuses it.
void set(RdKafka::Conf& conf, const std::string& name, const std::string& value);

// The same for librdkafka's C API (the Admin API, plain readers): a new configuration with `properties` set, or null
// with librdkafka's reason in `error` when it refuses one.
rd_kafka_conf_t* new_conf(const std::map<std::string, std::string>& properties, std::string& error);

template <typename Callback>
void set_callback(RdKafka::Conf& conf, const std::string& name, Callback* callback) {
    std::string err;
    if (conf.set(name, callback, err) != RdKafka::Conf::CONF_OK) config_error(err);
}

// librdkafka's logs and errors go to hydra's log instead of stderr.
class EventLogger : public RdKafka::EventCb {
  public:
    // With `lag`: librdkafka's statistics (statistics.interval.ms) update it with the consumer lag of `topic`.
    explicit EventLogger(std::string who, std::atomic<std::int64_t>* lag = nullptr, std::string topic = {})
        : who_(std::move(who)), lag_(lag), topic_(std::move(topic)) {}

    void event_cb(RdKafka::Event& event) override;

  private:
    // The sum of consumer_lag over the assigned partitions of topic_ (-1: none known yet).
    std::int64_t consumer_lag(const std::string& statistics) const;

    std::string who_;
    std::atomic<std::int64_t>* lag_;
    std::string topic_;
};

}  // namespace hydra::queue::kafka
