// The Kafka side of the cluster: the topics (created with the Admin API), one producer, one consumer thread that
// reads presence from the start and routed messages from now on, and this host's beat. What the records mean is
// the exchange's business (cluster_exchange.h): the bus hands every record it reads to a callback.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "queue/kafka/admin.h"

namespace RdKafka {
class Producer;
class KafkaConsumer;
}  // namespace RdKafka

namespace hydra::cluster {

class Bus {
  public:
    struct Settings {
        std::string node_id;
        std::string brokers;
        std::map<std::string, std::string> properties;  // queue.kafka.properties (without empty values)
        std::string prefix = "hydra";                   // topic prefix: "<plat>.<system>" keeps apps apart
        std::chrono::milliseconds heartbeat{3000};
        bool create_topics = true;  // queue.kafka.topics.create
        int partitions = 1;         // cluster.topics.*
        int replication_factor = -1;
        std::chrono::milliseconds topics_timeout{5000};  // queue.kafka.topics.timeout_ms
    };
    // A record read from one of our topics; `value` is null for a tombstone.
    using OnRecord = std::function<void(const std::string& topic, const std::string& key, const std::string* value)>;

    // Throws std::runtime_error "cluster: ..." on an invalid property.
    explicit Bus(Settings settings);
    ~Bus();

    // Creates the topics, says hello, starts reading (every record goes to `on_record`, on the consumer thread) and
    // beating (`before_beat` runs on the beat thread before each beat). Waits up to 5 s for presence to be read up to
    // date, so that the first routed messages find their hosts (the bus covers what is still unknown).
    void start(OnRecord on_record, std::function<void()> before_beat);
    // Stops the threads, says goodbye (other hosts drop us at once), flushes what is queued.
    void stop();

    // Queues one record. wait=false: one attempt, never blocks (for callers on an I/O loop): a full local queue
    // drops the record and counts it. False when the record was not queued.
    bool produce(const std::string& topic, const std::string& key, const std::string* value, bool wait = true);
    // Records waiting in the producer's local queue (0: delivered or failed).
    int unsent() const;

    const std::string& node_id() const { return settings_.node_id; }
    const std::string& presence_topic() const { return presence_topic_; }
    const std::string& bus_topic() const { return bus_topic_; }
    std::string node_topic(const std::string& node) const { return settings_.prefix + ".node." + node; }
    // Presence has been read up to its end once.
    bool presence_loaded() const { return presence_loaded_; }
    // Records dropped because Kafka's local queue was full (a broker outage).
    std::uint64_t dropped() const { return dropped_; }
    bool running() const { return running_; }

  private:
    void poll_loop();
    // Assigns our three topics' partitions; false while one of them is missing (not created yet).
    bool assign(std::map<std::int32_t, bool>& presence_eof);
    // Creates the topics (waiting at most topics_timeout); returns those that failed, each logged (a warning unless
    // `retry`).
    std::vector<queue::TopicSpec> create_topics(std::vector<queue::TopicSpec> topics, bool retry = false);
    void topics_loop(std::vector<queue::TopicSpec> failed);
    void check_presence_policy();
    // Waits `timeout` or until stop(); false when stopping.
    bool pause(std::chrono::milliseconds timeout);

    Settings settings_;
    std::string presence_topic_, bus_topic_;
    std::unique_ptr<RdKafka::Producer> producer_;
    std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
    std::unique_ptr<queue::KafkaAdmin> admin_;  // null with queue.kafka.topics.create off
    OnRecord on_record_;
    std::function<void()> before_beat_;
    std::thread poller_, heartbeat_, topics_;
    std::atomic<bool> running_{false};
    std::atomic<bool> presence_loaded_{false};
    std::atomic<std::uint64_t> dropped_{0};
    std::mutex mutex_;                 // guards the waits below
    std::condition_variable changed_;  // stop, presence loaded
};

}  // namespace hydra::cluster
