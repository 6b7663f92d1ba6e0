#include "queue/kafka/consumer.h"

#include <algorithm>
#include <charconv>

#include <hydra/log.h>

#include "queue/kafka/producer.h"

namespace hydra::queue::kafka {

using namespace std::chrono_literals;

namespace {

constexpr const char* kErrorHeader = "hydra-error";
constexpr const char* kAttemptsHeader = "hydra-attempts";

// consume() timeout: how long the poll thread waits for messages before serving the consumer queue (rebalances,
// commit results: librdkafka has no wait on both queues at once), and so how soon it notices a stop (the C++
// Queue has no yield()).
constexpr auto kPollInterval = 100ms;
constexpr auto kCommitInterval = 200ms;  // async commits of settled work at most this often
// How long a revoke waits for running handlers of the revoked partitions before giving them up (their messages
// are then redelivered to the new owner). The group's rebalance waits for us meanwhile.
constexpr auto kRevokeGrace = 10s;
// Between attempts to produce a dead letter.
constexpr auto kDeadLetterPause = 1s;

Headers headers_of(RdKafka::Message& message) {
    Headers headers;
    if (const RdKafka::Headers* kafka_headers = message.headers()) {
        for (const RdKafka::Headers::Header& h : kafka_headers->get_all()) {
            const char* value = static_cast<const char*>(h.value());
            headers[h.key()] = value ? std::string(value, h.value_size()) : std::string();
        }
    }
    return headers;
}

// The ms-since-epoch time of the "hydra-visible-at" header; 0 when absent or unreadable.
std::int64_t visible_at_of(const Headers& headers) {
    auto it = headers.find(kVisibleAtHeader);
    if (it == headers.end()) return 0;
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), value);
    return ec == std::errc() && end == it->second.data() + it->second.size() ? value : 0;
}

}  // namespace

// Offsets of one assigned partition. Kafka's committed offset is the next one to read: we commit the lowest
// offset not yet finished, or one past the highest taken when everything taken is finished.
struct Consumer::Partition {
    explicit Partition(Consumer& c) : consumer(c) {}

    Consumer& consumer;
    std::set<std::int64_t> pending;    // taken, not finished (waiting, running, retried or given up)
    std::int64_t next = -1;            // highest offset taken + 1
    std::int64_t committed = -1;       // last commit requested
    int outstanding = 0;               // delivered to the sink, not yet settled
    std::atomic<bool> revoked{false};  // no longer ours: what waits is released, pauses are cut short
};

namespace {
Consumer::Partition* partition_of(const Delivery& d) { return static_cast<Consumer::Partition*>(d.scope.get()); }
}  // namespace

Consumer& Consumer::of(const Delivery& delivery) { return partition_of(delivery)->consumer; }

Consumer::Consumer(const KafkaQueue::Settings& settings, Subscription subscription, Producer& producer)
    : producer_(producer),
      sub_(std::move(subscription)),
      topic_(topic_for(sub_.queue)),
      events_("consumer " + sub_.group + "/" + topic_, &lag_, topic_) {
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    set(*conf, "bootstrap.servers", settings.brokers);
    set(*conf, "auto.offset.reset", "earliest");
    set(*conf, "session.timeout.ms", "6000");
    // Topics are created with the Admin API (KafkaQueue::start, TopicKeeper), never by a subscription.
    set(*conf, "allow.auto.create.topics", "false");
    for (const auto& [name, value] : settings.properties) set(*conf, name, value);
    set(*conf, "group.id", settings.group_prefix + sub_.group);
    // We commit explicit offsets, only behind finished work: at-least-once.
    set(*conf, "enable.auto.commit", "false");
    set(*conf, "enable.auto.offset.store", "false");
    if (settings.statistics_interval_ms > 0 && !settings.properties.count("statistics.interval.ms"))
        set(*conf, "statistics.interval.ms", std::to_string(settings.statistics_interval_ms));
    set_callback(*conf, "rebalance_cb", static_cast<RdKafka::RebalanceCb*>(this));
    set_callback(*conf, "offset_commit_cb", static_cast<RdKafka::OffsetCommitCb*>(this));
    set_callback(*conf, "event_cb", static_cast<RdKafka::EventCb*>(&events_));
    std::string err;
    consumer_.reset(RdKafka::KafkaConsumer::create(conf.get(), err));
    if (!consumer_) config_error("consumer of " + topic_ + ": " + err);
    messages_.reset(RdKafka::Queue::create(consumer_.get()));
}

void Consumer::start() {
    RdKafka::ErrorCode err = consumer_->subscribe({topic_});
    if (err != RdKafka::ERR_NO_ERROR) config_error("cannot subscribe to " + topic_ + ": " + RdKafka::err2str(err));
    poller_ = std::thread([this] { poll_loop(); });
}

void Consumer::request_stop(Clock::time_point deadline) {
    {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
        stopping_ = true;
        deadline_ = deadline;
        wake_cv_.notify_all();
    }
    sub_.sink->stop();
}

void Consumer::join() {
    if (poller_.joinable()) poller_.join();
    messages_.reset();
    consumer_.reset();
}

std::size_t Consumer::assigned() {
    std::lock_guard lock(mutex_);
    return partitions_.size();
}

namespace {

std::string partition_list(const std::vector<RdKafka::TopicPartition*>& partitions) {
    std::string text;
    for (const auto* tp : partitions) {
        if (!text.empty()) text += ',';
        text += std::to_string(tp->partition());
    }
    return text.empty() ? "none" : text;
}

}  // namespace

void Consumer::rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode err,
                            std::vector<RdKafka::TopicPartition*>& partitions) {
    bool cooperative = consumer->rebalance_protocol() == "COOPERATIVE";
    // A rebalance pauses consumption of the partitions it moves (seconds on some brokers): worth a line.
    if (err == RdKafka::ERR__ASSIGN_PARTITIONS || err == RdKafka::ERR__REVOKE_PARTITIONS)
        Logger().info("queue: kafka consumer " + sub_.group + "/" + topic_ + ": " +
                      (err == RdKafka::ERR__ASSIGN_PARTITIONS ? "assigned" : "revoked") + " partitions " +
                      partition_list(partitions));
    if (err == RdKafka::ERR__ASSIGN_PARTITIONS) {
        {
            std::lock_guard lock(mutex_);
            for (auto* tp : partitions) partitions_[tp->partition()] = std::make_shared<Partition>(*this);
        }
        if (cooperative) {
            std::unique_ptr<RdKafka::Error> error(consumer->incremental_assign(partitions));
            if (error) Logger().warn("queue: kafka consumer " + topic_ + ": assign: " + error->str());
        } else {
            consumer->assign(partitions);
        }
        // Fetching starts once the committed offsets are known, normally after this: messages go to
        // messages_ from the start (any that went to the consumer queue before are handled as well).
        for (auto* tp : partitions) {
            std::unique_ptr<RdKafka::Queue> queue(consumer->get_partition_queue(tp));
            if (queue) queue->forward(messages_.get());
        }
    } else if (err == RdKafka::ERR__REVOKE_PARTITIONS) {
        revoke(partitions, consumer->assignment_lost());
        if (cooperative) {
            std::unique_ptr<RdKafka::Error> error(consumer->incremental_unassign(partitions));
            if (error) Logger().warn("queue: kafka consumer " + topic_ + ": unassign: " + error->str());
        } else {
            consumer->unassign();
        }
    } else {
        Logger().warn("queue: kafka consumer " + topic_ + ": rebalance failed: " + RdKafka::err2str(err));
        revoke(partitions, true);
        consumer->unassign();
    }
}

// A failed commit is repeated by the next one (a later commit covers an earlier one anyway).
void Consumer::offset_commit_cb(RdKafka::ErrorCode err, std::vector<RdKafka::TopicPartition*>& offsets) {
    std::lock_guard lock(mutex_);
    if (err == RdKafka::ERR_NO_ERROR || err == RdKafka::ERR__NO_OFFSET) {
        last_commit_error_ = RdKafka::ERR_NO_ERROR;
        return;
    }
    for (auto* tp : offsets) {
        auto it = partitions_.find(tp->partition());
        if (it != partitions_.end() && it->second->committed == tp->offset()) it->second->committed = -1;
    }
    if (err != last_commit_error_) {
        last_commit_error_ = err;
        // Commits fail while the group rebalances: what was not committed is redelivered to the next owner.
        bool rebalancing = err == RdKafka::ERR_REBALANCE_IN_PROGRESS || err == RdKafka::ERR_ILLEGAL_GENERATION ||
                           err == RdKafka::ERR_UNKNOWN_MEMBER_ID;
        Logger().log(rebalancing ? LogLevel::info : LogLevel::warn,
                     "queue: kafka consumer " + topic_ + ": commit failed: " + RdKafka::err2str(err));
    }
}

// Messages are taken from messages_ only while the sink wants more: meanwhile librdkafka keeps prefetching into
// that queue up to queued.max.messages.kbytes and then stops fetching. (pause()/resume() would do too, but librdkafka
// 2.0 resumes fetching up to a second late.) Rebalances, errors and commit results come on the consumer queue,
// served in between.
void Consumer::poll_loop() {
    Sink& sink = *sub_.sink;
    auto last_commit = Clock::now();
    for (;;) {
        try {
            {
                std::lock_guard lock(mutex_);
                if (stopping_) break;
            }
            std::size_t room = sink.room();
            if (room > 0) {
                std::unique_ptr<RdKafka::Message> message(messages_->consume(static_cast<int>(kPollInterval.count())));
                handle(*message);
                // Take what else is fetched already (while there is room) before serving the consumer queue.
                while (message->err() == RdKafka::ERR_NO_ERROR && taken_.size() < room) {
                    message.reset(messages_->consume(0));
                    handle(*message);
                }
                if (!taken_.empty()) sink.deliver(taken_);
                serve_consumer_queue();
            } else {
                serve_consumer_queue();
                // Timed: the consumer queue needs serving meanwhile. A stop wakes it (the sink stops).
                sink.wait_wanted(Clock::now() + kPollInterval);
            }
            if (!taken_.empty()) sink.deliver(taken_);  // taken from the consumer queue
            if (Clock::now() - last_commit >= kCommitInterval) {
                commit(false, all_partitions());
                last_commit = Clock::now();
            }
        } catch (const std::exception& e) {
            Logger().error("queue: kafka consumer " + topic_ + ": " + e.what());
            std::this_thread::sleep_for(kPollInterval);  // a pause before trying again, not spinning on an error
        }
    }
    try {
        shutdown();
    } catch (const std::exception& e) {
        Logger().error("queue: kafka consumer " + topic_ + ": stop: " + e.what());
    }
}

// Runs the callbacks (rebalance, commit results, errors) waiting on the consumer queue.
void Consumer::serve_consumer_queue() {
    for (;;) {
        std::unique_ptr<RdKafka::Message> message(consumer_->consume(0));
        if (message->err() == RdKafka::ERR__TIMED_OUT) return;
        handle(*message);
    }
}

void Consumer::handle(RdKafka::Message& message) {
    switch (message.err()) {
        case RdKafka::ERR_NO_ERROR:
            accept(message);
            break;
        case RdKafka::ERR__TIMED_OUT:
        case RdKafka::ERR__PARTITION_EOF:
            break;
        default: {
            // Broker trouble repeats: log a change, or the same error every 30 s.
            std::string text = message.errstr();
            if (text != last_error_ || Clock::now() - last_error_at_ > 30s) {
                Logger().warn("queue: kafka consumer " + topic_ + ": " + text);
                last_error_ = text;
                last_error_at_ = Clock::now();
            }
        }
    }
}

// Stop: running handlers get until the deadline (what waited was released by the sink's stop), then what was
// settled is committed and the group left — a handler that hangs does not hold its partitions: its message goes to
// their next owner. Its thread is joined last.
void Consumer::shutdown() {
    if (!taken_.empty()) sub_.sink->deliver(taken_);  // stopped: it releases them
    sub_.sink->wait_idle(deadline_);
    commit(true, all_partitions());
    // Revokes (rebalance_cb) and leaves the group. With the coordinator unreachable, librdkafka holds a commit
    // in progress until it fails (~session.timeout.ms): closing (or destroying) the consumer waits for it.
    consumer_->close();
    sub_.sink->join(deadline_);
}

void Consumer::accept(RdKafka::Message& kafka_message) {
    std::lock_guard lock(mutex_);
    auto it = partitions_.find(kafka_message.partition());
    if (it == partitions_.end()) return;  // not (or no longer) ours: whoever owns it gets it
    Partition& partition = *it->second;
    Delivery d;
    d.key = kafka_message.offset();
    d.scope = it->second;
    d.message.id = topic_ + "/" + std::to_string(kafka_message.partition()) + "/" + std::to_string(d.key);
    d.message.payload.assign(static_cast<const char*>(kafka_message.payload()), kafka_message.len());
    d.message.headers = headers_of(kafka_message);
    d.visible_at_ms = visible_at_of(d.message.headers);
    partition.pending.insert(d.key);
    partition.next = std::max(partition.next, d.key + 1);
    ++partition.outstanding;
    taken_.push_back(std::move(d));
}

void Consumer::settle(Delivery& d, bool finished) {
    Partition& partition = *partition_of(d);
    std::lock_guard lock(mutex_);
    if (finished) partition.pending.erase(d.key);
    if (--partition.outstanding == 0 && partition.revoked) settled_cv_.notify_all();
}

void Consumer::ack(Delivery& d) { settle(d, true); }

void Consumer::release(Delivery& d) { settle(d, false); }

// In place: back to the sink, held there until `at_ms`; the partition's committed offset waits for it.
void Consumer::retry(Delivery& d, std::int64_t at_ms) {
    {
        // Under the lock: a revoke or stop that comes after this finds it in the sink, one that came before
        // prevents the retry.
        std::lock_guard lock(mutex_);
        if (!stopping_ && !partition_of(d)->revoked) {
            d.message.attempt += 1;
            d.visible_at_ms = at_ms;
            if (sub_.sink->redeliver(d)) return;
        }
    }
    release(d);
}

// Produced to "<topic>.dlq" with the error and the attempts as headers; tried again until it is, or until stopped
// or revoked (then it is not finished: redelivered).
void Consumer::dead_letter(Delivery& d, const std::string& error) {
    const Message& message = d.message;
    Headers headers = message.headers;
    headers[kErrorHeader] = error;
    headers[kAttemptsHeader] = std::to_string(message.attempt);
    for (;;) {
        try {
            producer_.send(topic_ + ".dlq", message.payload, headers);
            Logger().error("mqc: " + sub_.queue + " message " + message.id + " dead-lettered to " + topic_ +
                           ".dlq after " + std::to_string(message.attempt) + " attempts: " + error);
            return settle(d, true);
        } catch (const QueueError& e) {
            Logger().error("mqc: " + sub_.queue + " message " + message.id + ": " + e.what());
        }
        if (!wait_until(Clock::now() + kDeadLetterPause, *partition_of(d))) return settle(d, false);
    }
}

bool Consumer::wait_until(Clock::time_point until, const Partition& partition) {
    std::unique_lock lock(mutex_);
    return !wake_cv_.wait_until(lock, until, [&] { return stopping_ || partition.revoked; });
}

Consumer::Partitions Consumer::all_partitions() {
    std::lock_guard lock(mutex_);
    return {partitions_.begin(), partitions_.end()};
}

// Commits, for each partition, the offset below which everything is finished, when it moved.
void Consumer::commit(bool sync, const Partitions& partitions) {
    std::vector<RdKafka::TopicPartition*> offsets;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [id, partition] : partitions) {
            if (partition->next < 0) continue;
            std::int64_t offset = partition->pending.empty() ? partition->next : *partition->pending.begin();
            if (offset <= partition->committed) continue;
            partition->committed = offset;
            offsets.push_back(RdKafka::TopicPartition::create(topic_, id, offset));
        }
    }
    if (offsets.empty()) return;
    RdKafka::ErrorCode err = sync ? consumer_->commitSync(offsets) : consumer_->commitAsync(offsets);
    if (err != RdKafka::ERR_NO_ERROR) offset_commit_cb(err, offsets);
    RdKafka::TopicPartition::destroy(offsets);
}

// The partitions leave: what waits for them in the sink is released, pauses are cut short, running handlers get
// some time, and what was settled is committed (unless the partitions were lost: then another member may own them
// already).
void Consumer::revoke(const std::vector<RdKafka::TopicPartition*>& revoked, bool lost) {
    if (!taken_.empty()) sub_.sink->deliver(taken_);  // released below with the rest, if theirs
    Partitions gone;
    {
        std::lock_guard lock(mutex_);
        for (auto* tp : revoked) {
            auto it = partitions_.find(tp->partition());
            if (it == partitions_.end()) continue;
            it->second->revoked = true;
            gone.emplace_back(*it);
            partitions_.erase(it);
        }
        wake_cv_.notify_all();
    }
    sub_.sink->release_if([](const Delivery& d) { return partition_of(d)->revoked.load(); });
    {
        std::unique_lock lock(mutex_);
        auto deadline = stopping_ ? deadline_ : Clock::now() + kRevokeGrace;
        settled_cv_.wait_until(lock, deadline, [&] {
            return std::all_of(gone.begin(), gone.end(), [](const auto& p) { return p.second->outstanding == 0; });
        });
    }
    if (!lost) commit(true, gone);
}

}  // namespace hydra::queue::kafka
