#include "cluster/bus.h"

#include <librdkafka/rdkafkacpp.h>

#include <set>
#include <stdexcept>

#include <hydra/json.h>
#include <hydra/log.h>

#include "queue/kafka/conf.h"

namespace hydra::cluster {

namespace {

namespace kafka = queue::kafka;  // its setter: one place for librdkafka properties

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

Bus::Bus(Settings settings)
    : settings_(std::move(settings)),
      presence_topic_(settings_.prefix + ".presence"),
      bus_topic_(settings_.prefix + ".bus") {
    std::string err;
    std::unique_ptr<RdKafka::Conf> pconf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    kafka::set(*pconf, "bootstrap.servers", settings_.brokers);
    // Routed messages and presence records are small: batched as the queue's producer batches (5 ms, see
    // queue/kafka/producer.cpp), so that the broker's work per message stays low under load.
    kafka::set(*pconf, "linger.ms", "5");
    for (const auto& [k, v] : settings_.properties) kafka::set(*pconf, k, v);
    producer_.reset(RdKafka::Producer::create(pconf.get(), err));
    if (!producer_) throw std::runtime_error("cluster: cannot create the Kafka producer: " + err);

    std::unique_ptr<RdKafka::Conf> cconf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    kafka::set(*cconf, "bootstrap.servers", settings_.brokers);
    for (const auto& [k, v] : settings_.properties) kafka::set(*cconf, k, v);
    // Partitions are assigned by hand (every host reads everything of its topics): the group only names us.
    kafka::set(*cconf, "group.id", node_topic(settings_.node_id));
    kafka::set(*cconf, "enable.auto.commit", "false");
    kafka::set(*cconf, "enable.partition.eof", "true");
    kafka::set(*cconf, "allow.auto.create.topics", "false");  // created with the Admin API in start()
    consumer_.reset(RdKafka::KafkaConsumer::create(cconf.get(), err));
    if (!consumer_) throw std::runtime_error("cluster: cannot create the Kafka consumer: " + err);

    if (settings_.create_topics) admin_ = std::make_unique<queue::KafkaAdmin>(settings_.brokers, settings_.properties);
}

Bus::~Bus() { stop(); }

bool Bus::produce(const std::string& topic, const std::string& key, const std::string* value, bool wait) {
    for (int attempt = 0; attempt < 100; ++attempt) {
        RdKafka::ErrorCode rc = producer_->produce(topic, RdKafka::Topic::PARTITION_UA, RdKafka::Producer::RK_MSG_COPY,
                                                   value ? const_cast<char*>(value->data()) : nullptr,
                                                   value ? value->size() : 0, key.data(), key.size(), 0, nullptr);
        if (rc == RdKafka::ERR_NO_ERROR) return true;
        if (rc != RdKafka::ERR__QUEUE_FULL) {
            Logger().warn("cluster: produce to " + topic + " failed: " + RdKafka::err2str(rc));
            return false;
        }
        if (!wait) {
            // Presence changes come from the WebSocket I/O loops, which must not wait for a broker that is away.
            // The queue is librdkafka's (queue.buffering.max.messages); what does not fit is dropped and counted.
            const std::uint64_t n = ++dropped_;
            if ((n & (n - 1)) == 0)  // the 1st, 2nd, 4th, 8th... drop: a broker outage does not flood the log
                Logger().warn("cluster: presence update dropped (Kafka's local queue is full)",
                              {{"topic", topic}, {"dropped", std::to_string(n)}});
            return false;
        }
        // The local queue is full: serve delivery reports for up to 10 ms so that it drains (bounded: 1 s in all).
        producer_->poll(10);
    }
    Logger().warn("cluster: produce to " + topic + " dropped: local queue full");
    return false;
}

int Bus::unsent() const { return producer_->outq_len(); }

std::vector<queue::TopicSpec> Bus::create_topics(std::vector<queue::TopicSpec> topics, bool retry) {
    std::vector<queue::TopicSpec> failed;
    auto result = admin_->create(topics, settings_.topics_timeout, [this] { return !running_; });
    for (auto& topic : topics) {
        const std::string& error = result[topic.name];
        if (error.empty()) continue;
        // A warning the first time; the retries (every 30 s) only at debug.
        Logger().log(retry ? LogLevel::debug : LogLevel::warn,
                     "cluster: cannot create topic " + topic.name + " (" + std::to_string(topic.partitions) +
                         " partitions, replication factor " +
                         (topic.replication_factor < 0 ? std::string("of the brokers' default")
                                                       : std::to_string(topic.replication_factor)) +
                         (topic.config.empty() ? "" : ", cleanup.policy=compact") + "): " + error +
                         "; retrying in the background");
        failed.push_back(std::move(topic));
    }
    return failed;
}

// Warns when the presence topic is not compacted: created by someone else, or auto-created by a broker before we
// could create it. A broker that cannot answer DescribeConfigs (or a topic not there yet) is a debug line.
void Bus::check_presence_policy() {
    std::string error;
    auto policy = admin_->topic_config(presence_topic_, "cleanup.policy", settings_.topics_timeout, error,
                                       [this] { return !running_; });
    if (!policy) {
        if (running_) Logger().debug("cluster: cannot read the cleanup.policy of " + presence_topic_ + ": " + error);
    } else if (policy->find("compact") == std::string::npos) {
        Logger().warn("cluster: topic " + presence_topic_ + " has cleanup.policy=" + *policy +
                      ", not compact: the records of closed connections are never forgotten and every host reads "
                      "them all at start (alter it: cleanup.policy=compact)");
    }
}

bool Bus::pause(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return !running_; });
    return running_;
}

// After start: the presence topic's policy is checked, topics not created at start are retried every 30 s (and the
// policy checked again once they are).
void Bus::topics_loop(std::vector<queue::TopicSpec> failed) {
    check_presence_policy();
    while (!failed.empty() && pause(std::chrono::seconds(30))) {
        failed = create_topics(std::move(failed), true);
        if (failed.empty()) check_presence_policy();
    }
}

void Bus::start(OnRecord on_record, std::function<void()> before_beat) {
    if (running_) return;
    on_record_ = std::move(on_record);
    before_beat_ = std::move(before_beat);
    running_ = true;
    // Our topics are created with the Admin API (never left to a broker's auto-creation, which would not compact
    // presence): presence and the bus first, then our beat, then our node topic, so that `hydra cluster gc`, which
    // lists node topics before it reads presence, never finds the topic of a starting host without its beat.
    std::vector<queue::TopicSpec> failed;
    if (admin_)
        failed = create_topics(
            {{presence_topic_, settings_.partitions, settings_.replication_factor, {{"cleanup.policy", "compact"}}},
             {bus_topic_, settings_.partitions, settings_.replication_factor, {}}});
    // A hello on the bus and on our node topic: nobody acts on it; with topics.create off it makes a broker that
    // auto-creates topics create them.
    std::string hello = Json{{"op", "hello"}, {"origin", settings_.node_id}}.dump();
    std::string beat = Json{{"ts", now_ms()}}.dump();
    produce(presence_topic_, "node:" + settings_.node_id, &beat);
    produce(bus_topic_, "", &hello);
    producer_->flush(5000);
    if (admin_) {
        auto node =
            create_topics({{node_topic(settings_.node_id), settings_.partitions, settings_.replication_factor, {}}});
        failed.insert(failed.end(), node.begin(), node.end());
        topics_ = std::thread([this, failed = std::move(failed)]() mutable { topics_loop(std::move(failed)); });
    }
    produce(node_topic(settings_.node_id), "", &hello);
    producer_->flush(5000);
    poller_ = std::thread([this] { poll_loop(); });
    heartbeat_ = std::thread([this] {
        while (pause(settings_.heartbeat)) {
            if (before_beat_) before_beat_();
            std::string value = Json{{"ts", now_ms()}}.dump();
            produce(presence_topic_, "node:" + settings_.node_id, &value);
            producer_->poll(0);
        }
    });
    // Bounded: a cluster whose presence cannot be read yet still starts (routing falls back to the bus meanwhile).
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, std::chrono::seconds(5), [&] { return presence_loaded_ || !running_; });
}

void Bus::stop() {
    {
        std::lock_guard lock(mutex_);
        if (!running_.exchange(false)) return;
    }
    changed_.notify_all();
    if (heartbeat_.joinable()) heartbeat_.join();
    if (poller_.joinable()) poller_.join();
    if (topics_.joinable()) topics_.join();
    produce(presence_topic_, "node:" + settings_.node_id, nullptr);  // others drop us at once
    producer_->flush(3000);
    consumer_->close();
}

bool Bus::assign(std::map<std::int32_t, bool>& presence_eof) {
    RdKafka::Metadata* md = nullptr;
    if (producer_->metadata(true, nullptr, &md, 2000) != RdKafka::ERR_NO_ERROR || md == nullptr) return false;
    std::vector<RdKafka::TopicPartition*> parts;
    std::set<std::string> found;
    presence_eof.clear();
    for (const auto* t : *md->topics()) {
        const std::string& name = t->topic();
        if (name != presence_topic_ && name != bus_topic_ && name != node_topic(settings_.node_id)) continue;
        if (t->err() != RdKafka::ERR_NO_ERROR || t->partitions()->empty()) continue;
        found.insert(name);
        for (const auto* p : *t->partitions()) {
            // Presence from the start (the whole map); routed messages from now on.
            std::int64_t offset =
                name == presence_topic_ ? RdKafka::Topic::OFFSET_BEGINNING : RdKafka::Topic::OFFSET_END;
            parts.push_back(RdKafka::TopicPartition::create(name, p->id(), offset));
            if (name == presence_topic_) presence_eof[p->id()] = false;
        }
    }
    delete md;
    // All three: a topic missing now (not created yet) would never be read.
    const bool complete = found.size() == 3;
    if (complete) consumer_->assign(parts);
    RdKafka::TopicPartition::destroy(parts);
    return complete;
}

void Bus::poll_loop() {
    std::map<std::int32_t, bool> presence_eof;
    // Until our topics exist: metadata again every 500 ms (a broker has no event for "topic created").
    while (!assign(presence_eof))
        if (!pause(std::chrono::milliseconds(500))) return;
    while (running_) {
        // consume() returns at once when a record comes; the 100 ms bound is how soon a stop is noticed.
        std::unique_ptr<RdKafka::Message> msg(consumer_->consume(100));
        producer_->poll(0);
        if (!msg) continue;
        switch (msg->err()) {
            case RdKafka::ERR_NO_ERROR: {
                std::string key = msg->key() ? *msg->key() : std::string();
                std::string value(static_cast<const char*>(msg->payload()), msg->len());
                on_record_(msg->topic_name(), key, msg->payload() ? &value : nullptr);
                break;
            }
            case RdKafka::ERR__PARTITION_EOF:
                if (msg->topic_name() == presence_topic_ && !presence_loaded_) {
                    presence_eof[msg->partition()] = true;
                    bool all = true;
                    for (const auto& [p, eof] : presence_eof) all = all && eof;
                    if (all) {
                        std::lock_guard lock(mutex_);
                        presence_loaded_ = true;
                        changed_.notify_all();
                    }
                }
                break;
            case RdKafka::ERR__TIMED_OUT:
                break;
            default:
                Logger().debug("cluster: consume: " + msg->errstr());
        }
    }
}

}  // namespace hydra::cluster
