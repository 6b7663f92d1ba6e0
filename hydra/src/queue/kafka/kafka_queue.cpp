#include "queue/kafka/kafka_queue.h"

#include <hydra/log.h>

#include "queue/kafka/conf.h"
#include "queue/kafka/consumer.h"
#include "queue/kafka/producer.h"

namespace hydra::queue {

using kafka::config_error;
using kafka::kVisibleAtHeader;

KafkaQueue::Settings KafkaQueue::Settings::from(const Config& config) {
    Settings settings;
    settings.brokers = config.str("queue.kafka.brokers");
    settings.group_prefix = config.str("queue.kafka.group_prefix");
    settings.push_timeout = std::chrono::milliseconds(config.integer("queue.push_timeout_ms"));
    settings.properties = properties_from(config);
    settings.topics.create = config.boolean("queue.kafka.topics.create");
    settings.topics.partitions = static_cast<int>(config.integer("queue.kafka.topics.partitions"));
    settings.topics.replication_factor = static_cast<int>(config.integer("queue.kafka.topics.replication_factor"));
    settings.topics.timeout = std::chrono::milliseconds(config.integer("queue.kafka.topics.timeout_ms"));
    if (config.boolean("admin.enabled") && config.boolean("admin.metrics")) settings.statistics_interval_ms = 5000;
    return settings;
}

std::map<std::string, std::string> KafkaQueue::properties_from(const Config& config) {
    std::map<std::string, std::string> properties;
    for (const auto& [name, value] : config.at("queue.kafka.properties").items()) {
        if (!value.is_string()) config_error("queue.kafka.properties." + name + ": expected a string");
        // "" = unset: a profile maps optional environment variables ("${KAFKA_USERNAME:-}") to properties.
        if (!value.get_ref<const std::string&>().empty()) properties[name] = value.get<std::string>();
    }
    // SASL credentials come in pairs: one without the other is a deployment mistake that librdkafka would only
    // report as an authentication failure at every connection attempt.
    const bool user = properties.count("sasl.username") > 0, password = properties.count("sasl.password") > 0;
    if (user != password)
        throw ConfigError(config.source() + ": queue.kafka.properties." +
                          (password ? "sasl.password is set but queue.kafka.properties.sasl.username is empty"
                                    : "sasl.username is set but queue.kafka.properties.sasl.password is empty") +
                          " (prod: KAFKA_USERNAME and KAFKA_PASSWORD go together)");
    return properties;
}

KafkaQueue::KafkaQueue(Settings settings) : settings_(std::move(settings)) {
    if (settings_.brokers.empty()) config_error("queue.kafka.brokers is empty");
    producer_ = std::make_unique<kafka::Producer>(settings_);
    if (settings_.topics.create) {
        admin_ = std::make_shared<KafkaAdmin>(settings_.brokers, settings_.properties);
        keeper_ = std::make_unique<TopicKeeper>(
            admin_, TopicKeeper::Settings{.partitions = settings_.topics.partitions,
                                          .replication_factor = settings_.topics.replication_factor,
                                          .timeout = settings_.topics.timeout});
    }
}

KafkaQueue::~KafkaQueue() {
    stop(std::chrono::seconds(5));
    keeper_.reset();
    admin_.reset();
    producer_.reset();
}

void KafkaQueue::ensure_topic(const std::string& topic) {
    if (keeper_) keeper_->ensure(topic);
}

// Kafka has no delayed delivery. A delayed message is produced at once with its visible time (ms since the epoch)
// in the "hydra-visible-at" header, and the consuming handler thread waits until then before calling the handler.
// Simple and durable, at a cost: the waiting message holds a handler thread and, until it is done, the committed
// offset of its partition (messages behind it are handled meanwhile, but redelivered if the consumer stops); the
// producer's and consumer's clocks must agree. Meant for short postponements, not for scheduling.
void KafkaQueue::push(std::string_view queue, std::string_view payload, const Headers& headers,
                      std::chrono::milliseconds delay) {
    validate_queue_name(queue);
    const std::string topic = topic_for(queue);
    ensure_topic(topic);
    if (delay.count() <= 0) return producer_->send(topic, payload, headers);
    Headers delayed = headers;
    delayed[kVisibleAtHeader] = std::to_string(now_ms() + delay.count());
    producer_->send(topic, payload, delayed);
}

void KafkaQueue::push_async(std::string_view queue, std::string_view payload, const Headers& headers,
                            std::chrono::milliseconds delay, PushDone done) {
    std::string topic;
    try {
        validate_queue_name(queue);
        topic = topic_for(queue);
    } catch (const QueueError& e) {
        done(&e);
        return;
    }
    ensure_topic(topic);
    if (delay.count() <= 0) return producer_->send_async(topic, payload, headers, std::move(done));
    Headers delayed = headers;
    delayed[kVisibleAtHeader] = std::to_string(now_ms() + delay.count());
    producer_->send_async(topic, payload, delayed, std::move(done));
}

void KafkaQueue::push_batch(std::string_view queue, std::span<const std::string> payloads, const Headers& headers) {
    validate_queue_name(queue);
    const std::string topic = topic_for(queue);
    ensure_topic(topic);
    producer_->send_all(topic, payloads, headers);
}

Heartbeats KafkaQueue::heartbeats() const { return {{"kafka-producer", producer_->heartbeat()}}; }

std::string KafkaQueue::check_ready(std::chrono::milliseconds timeout) { return producer_->reachable(timeout); }

void KafkaQueue::subscribe(Subscription subscription) {
    validate_queue_name(subscription.queue);
    if (!subscription.sink) throw std::invalid_argument("queue: kafka: subscription without a consumer");
    if (subscription.group.empty()) subscription.group = topic_for(subscription.queue);
    std::lock_guard lock(mutex_);
    if (started_) throw std::logic_error("queue: kafka: subscribe() after start()");
    consumers_.push_back(std::make_unique<kafka::Consumer>(settings_, std::move(subscription), *producer_));
}

void KafkaQueue::start() {
    std::lock_guard lock(mutex_);
    if (started_ || stopped_) return;
    started_ = true;
    // The consumed topics and their dead letter topics exist before the consumers join (they do not create
    // them). Not fatal: brokers briefly away at start, or refusing CreateTopics (no permission, an operator who
    // creates topics himself), leave the host running; the keeper retries what failed.
    if (admin_ && !consumers_.empty()) {
        std::vector<TopicSpec> specs;
        for (auto& consumer : consumers_)
            for (const std::string& topic : {consumer->topic(), consumer->topic() + ".dlq"})
                specs.push_back({topic, settings_.topics.partitions, settings_.topics.replication_factor, {}});
        auto result = admin_->create(specs, settings_.topics.timeout);
        for (const auto& [topic, error] : result) {
            if (error.empty()) {
                keeper_->created(topic);
                continue;
            }
            Logger().debug("queue: kafka: topic " + topic + " not created at start: " + error);
            keeper_->ensure(topic);  // warns and retries in the background
        }
    }
    for (auto& consumer : consumers_) consumer->start();
}

void KafkaQueue::stop(std::chrono::milliseconds grace) {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopped_ = true;
    auto deadline = std::chrono::steady_clock::now() + grace;
    for (auto& consumer : consumers_) consumer->request_stop(deadline);
    for (auto& consumer : consumers_) consumer->join();
    consumers_.clear();
    producer_->flush(settings_.push_timeout);
}

void KafkaQueue::ack(Delivery& delivery) { kafka::Consumer::of(delivery).ack(delivery); }

void KafkaQueue::retry(Delivery& delivery, std::int64_t at_ms, std::string) {
    kafka::Consumer::of(delivery).retry(delivery, at_ms);
}

void KafkaQueue::dead_letter(Delivery& delivery, std::string error) {
    kafka::Consumer::of(delivery).dead_letter(delivery, error);
}

void KafkaQueue::release(Delivery& delivery) { kafka::Consumer::of(delivery).release(delivery); }

void KafkaQueue::collect(metrics::Samples& samples) {
    std::lock_guard lock(mutex_);
    for (const auto& consumer : consumers_) {
        samples.add("hydra_queue_partitions_assigned",
                    "Kafka: partitions of a consumed queue this host holds (0 while its consumer group rebalances).",
                    metrics::Type::gauge, {"queue", "group"},
                    {consumer->subscription().queue, settings_.group_prefix + consumer->subscription().group},
                    static_cast<double>(consumer->assigned()));
        const std::int64_t lag = consumer->lag();
        if (lag < 0) continue;  // no statistics yet
        samples.add("hydra_queue_consumer_lag",
                    "Kafka: messages of a consumed queue not yet committed by its consumer group (librdkafka's "
                    "consumer_lag, summed over the partitions this host holds).",
                    metrics::Type::gauge, {"queue", "group"},
                    {consumer->subscription().queue, settings_.group_prefix + consumer->subscription().group},
                    static_cast<double>(lag));
    }
}

}  // namespace hydra::queue
