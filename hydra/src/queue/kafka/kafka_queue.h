// The Kafka queue backend (librdkafka): blocking idempotent pushes (producer.h), one consumer group member per
// subscription (consumer.h) with at-least-once handling (offsets committed only behind settled work), retries in
// place and "<topic>.dlq".
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "queue/backend.h"
#include "queue/kafka/admin.h"

namespace hydra::queue {

namespace kafka {
class Producer;
class Consumer;
}  // namespace kafka

// Queue "a:b:c" is topic "a.b.c" (topic_for). A push returns once every in-sync replica has the message
// (acks=all), or throws a retryable QueueError with librdkafka's reason, after push_timeout at most. Delayed pushes
// carry their visible time in the "hydra-visible-at" header (ms since the epoch) and the consumer holds them until
// then: Kafka has no delayed delivery. A retried message goes back to its consumer, held until its time; a dead
// letter is produced to "<topic>.dlq" with headers "hydra-error" and "hydra-attempts".
class KafkaQueue : public Backend {
  public:
    struct Settings {
        std::string brokers;                            // bootstrap.servers
        std::map<std::string, std::string> properties;  // librdkafka properties for producer and consumers
        std::chrono::milliseconds push_timeout{5000};   // message.timeout.ms of the producer
        std::string group_prefix;                       // prepended as is to every subscription's group
        // The topics of pushed and consumed queues (and their ".dlq"), created with the Admin API.
        struct Topics {
            bool create = true;
            int partitions = 3;
            int replication_factor = -1;  // -1: the brokers' default
            std::chrono::milliseconds timeout{5000};
        } topics;
        // statistics.interval.ms of the consumers, for hydra_queue_consumer_lag (admin.metrics on: 5000); 0 = off.
        int statistics_interval_ms = 0;

        // From queue.kafka.* and queue.push_timeout_ms.
        static Settings from(const Config& config);
    };

    // queue.kafka.properties without its empty values ("" = unset). Throws ConfigError naming the keys when only
    // one of sasl.username and sasl.password is set. The cluster's producer and consumer use the same.
    static std::map<std::string, std::string> properties_from(const Config& config);

    // Creates the producer (it connects in the background: a broker that is down is not an error here).
    // Throws std::runtime_error "queue: kafka: <librdkafka's reason>" on an invalid property name or value.
    explicit KafkaQueue(Settings settings);
    ~KafkaQueue() override;

    void push(std::string_view queue, std::string_view payload, const Headers& headers = {},
              std::chrono::milliseconds delay = std::chrono::milliseconds{0}) override;
    // Produces all the messages at once and waits for every delivery report (one wait instead of one per message:
    // librdkafka puts them in as few produce requests as its batch limits allow).
    void push_batch(std::string_view queue, std::span<const std::string> payloads,
                    const Headers& headers = {}) override;
    // Produces and returns; `done` runs from the delivery report (librdkafka's poll thread).
    void push_async(std::string_view queue, std::string_view payload, const Headers& headers,
                    std::chrono::milliseconds delay, PushDone done) override;
    std::string backend() const override { return "kafka"; }

    // Creates the subscription's consumer (not yet joined): throws QueueError on an invalid queue name and
    // std::runtime_error "queue: kafka: ..." when librdkafka refuses the consumer configuration.
    void subscribe(Subscription subscription) override;
    void start() override;
    // Stops polling, waits up to `grace` for running handlers (delays and retry backoffs are cut short: those
    // messages are redelivered), commits what was settled, leaves the groups, then flushes the producer (bounded by
    // push_timeout). Pushes keep working until destruction. A handler still running after `grace` is waited for
    // before the commit. With the brokers unreachable, leaving the group takes up to ~session.timeout.ms more
    // (librdkafka waits for the commit in progress to fail).
    void stop(std::chrono::milliseconds grace) override;
    void ack(Delivery& delivery) override;
    // In place: back to its consumer, held until `at_ms` (the partition's committed offset waits for it).
    void retry(Delivery& delivery, std::int64_t at_ms, std::string error) override;
    // Produced to "<topic>.dlq", tried again (every second) until it is or the consumer stops.
    void dead_letter(Delivery& delivery, std::string error) override;
    // Not committed: delivered again after a restart or a rebalance.
    void release(Delivery& delivery) override;
    Heartbeats heartbeats() const override;
    // Not ready while no broker answers a metadata request within `timeout`.
    std::string check_ready(std::chrono::milliseconds timeout) override;

    // hydra_queue_consumer_lag per consumed queue, from librdkafka's statistics.
    void collect(metrics::Samples& samples) override;

  private:
    void ensure_topic(const std::string& topic);

    Settings settings_;
    std::unique_ptr<kafka::Producer> producer_;
    std::shared_ptr<KafkaAdmin> admin_;    // null with topics.create off
    std::unique_ptr<TopicKeeper> keeper_;  // creates the topics of new queue names in the background

    std::mutex mutex_;  // guards the lifecycle below (subscribe/start/stop from the host's thread)
    std::vector<std::unique_ptr<kafka::Consumer>> consumers_;
    bool started_ = false;
    bool stopped_ = false;
};

}  // namespace hydra::queue
