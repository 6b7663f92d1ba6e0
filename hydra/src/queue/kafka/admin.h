// Kafka topics hydra needs, created with the Admin API instead of leaving them to the brokers' auto-creation.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

struct rd_kafka_s;

namespace hydra::queue {

struct TopicSpec {
    std::string name;
    int partitions = 1;
    int replication_factor = -1;                // -1: the brokers' default.replication.factor
    std::map<std::string, std::string> config;  // e.g. cleanup.policy=compact
};

// An Admin API client: its own librdkafka handle with the queue's connection properties (bootstrap servers,
// security.protocol, SASL...). Every call is bounded by its timeout; none throws on a broker's refusal.
class KafkaAdmin {
  public:
    // Throws std::runtime_error "kafka admin: ..." on an invalid property.
    KafkaAdmin(const std::string& brokers, const std::map<std::string, std::string>& properties);
    ~KafkaAdmin();
    KafkaAdmin(const KafkaAdmin&) = delete;
    KafkaAdmin& operator=(const KafkaAdmin&) = delete;

    // Creates the topics. Per topic: "" when created or when it already existed, else the reason. `cancelled`,
    // checked every 100 ms while waiting, gives up early (the topics then fail with "cancelled").
    std::map<std::string, std::string> create(const std::vector<TopicSpec>& topics, std::chrono::milliseconds timeout,
                                              const std::function<bool()>& cancelled = {});
    // The value of one config entry of a topic (DescribeConfigs); nullopt with `error` set when it cannot be read.
    std::optional<std::string> topic_config(const std::string& topic, const std::string& name,
                                            std::chrono::milliseconds timeout, std::string& error,
                                            const std::function<bool()>& cancelled = {});
    // Deletes the topics. Per topic: "" when deleted or already gone, else the reason.
    std::map<std::string, std::string> remove(const std::vector<std::string>& topics,
                                              std::chrono::milliseconds timeout);
    // Names of all topics with their partition counts (metadata); nullopt with `error` set when unreachable.
    std::optional<std::map<std::string, int>> topics(std::chrono::milliseconds timeout, std::string& error);

  private:
    std::string controller_problem(std::chrono::milliseconds timeout);

    rd_kafka_s* rk_ = nullptr;
};

// Creates queue topics in the background, each name once: a push or subscription names its topic with ensure()
// and does not wait (librdkafka holds its messages until the topic exists). A failed creation is logged (a warning
// the first time for a topic) and retried every `retry` until it succeeds or the keeper stops.
class TopicKeeper {
  public:
    struct Settings {
        int partitions = 3;
        int replication_factor = -1;
        std::chrono::milliseconds timeout{5000};  // one CreateTopics request
        std::chrono::milliseconds retry{30000};
    };

    TopicKeeper(std::shared_ptr<KafkaAdmin> admin, Settings settings);
    ~TopicKeeper();

    // Asks for `topic` once; later calls with the same name cost a lookup.
    void ensure(const std::string& topic);
    // Records `topic` as existing (created by the caller): ensure() will not ask for it.
    void created(const std::string& topic);
    // True once every topic asked for so far was created (or found existing).
    bool settled() const;

  private:
    void run();

    std::shared_ptr<KafkaAdmin> admin_;
    Settings settings_;
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::unordered_set<std::string> asked_;
    std::set<std::string> pending_;  // asked, not yet created
    std::set<std::string> warned_;   // failures already logged at warn
    bool fresh_ = false;             // asked for since the last attempt
    bool stop_ = false;
    std::thread thread_;
};

}  // namespace hydra::queue
