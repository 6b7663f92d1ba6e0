// The Kafka queue backend: a shared idempotent producer whose pushes wait for their own delivery report, and per
// subscription a KafkaConsumer, a poll thread and `concurrency` handler threads committing behind finished work.
#include "queue/kafka_queue.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafkacpp.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <set>
#include <span>
#include <stdexcept>
#include <thread>
#include <utility>

#include <hydra/log.h>

namespace hydra::queue {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* visible_at_header = "hydra-visible-at";
constexpr const char* error_header = "hydra-error";
constexpr const char* attempts_header = "hydra-attempts";

constexpr auto poll_interval = 100ms;    // consume()/poll() timeout: how soon the poll threads notice a stop
constexpr auto commit_interval = 200ms;  // async commits of finished work at most this often
// How long a revoke waits for running handlers of the revoked partitions before giving them up (their messages
// are then redelivered to the new owner). The group's rebalance waits for us meanwhile.
constexpr auto revoke_grace = 10s;
constexpr auto fatal_retry_interval = 1s;  // a fatal producer is replaced at most this often

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

[[noreturn]] void config_error(const std::string& what) { throw std::runtime_error("queue: kafka: " + what); }

void set(RdKafka::Conf& conf, const std::string& name, const std::string& value) {
    std::string err;
    if (conf.set(name, value, err) != RdKafka::Conf::CONF_OK) config_error(err);
}

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

    void event_cb(RdKafka::Event& event) override {
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

  private:
    // The sum of consumer_lag over the assigned partitions of topic_ (-1: none known yet).
    std::int64_t consumer_lag(const std::string& statistics) const {
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

    std::string who_;
    std::atomic<std::int64_t>* lag_;
    std::string topic_;
};

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
    auto it = headers.find(visible_at_header);
    if (it == headers.end()) return 0;
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), value);
    return ec == std::errc() && end == it->second.data() + it->second.size() ? value : 0;
}

// The delivery reports awaited by one push or push_batch. Shared by the pushing thread and librdkafka's message
// opaques, so a push that gives up waiting leaves nothing dangling.
struct Delivery {
    std::mutex mutex;
    std::condition_variable cv;
    std::size_t pending = 0;                         // reports still to come
    RdKafka::ErrorCode err = RdKafka::ERR_NO_ERROR;  // the first failure
    std::string reason;
    Queue::PushDone done;  // push_async(): called after the last report, outside the mutex
    std::string topic;     // for done's error message
};

}  // namespace

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

// ---------------------------------------------------------------------------------------------------------------
// Producer

class KafkaQueue::Producer final : public RdKafka::DeliveryReportCb {
  public:
    explicit Producer(const Settings& settings) : timeout_(settings.push_timeout), events_("producer") {
        conf_.reset(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
        set(*conf_, "bootstrap.servers", settings.brokers);
        // No duplicates or reordering from internal retries; durable on all in-sync replicas. A push blocks until
        // acknowledged, so lingering adds to its latency; but 1 ms lets concurrent pushes share produce requests
        // (pushes that arrive while a request is in flight share the next one anyway). With 256 pushing threads on
        // the mock cluster, 1 ms gives 1.4-2x the pushes per second of 0 and keeps the consumer's fetches full.
        // push_batch() does not need it: it produces its messages at once. queue.kafka.properties.linger.ms wins.
        set(*conf_, "enable.idempotence", "true");
        set(*conf_, "acks", "all");
        set(*conf_, "linger.ms", "1");
        for (const auto& [name, value] : settings.properties) set(*conf_, name, value);
        // queue.push_timeout_ms is the one knob for how long a push may take.
        set(*conf_, "message.timeout.ms", std::to_string(settings.push_timeout.count()));
        set_callback(*conf_, "dr_cb", static_cast<RdKafka::DeliveryReportCb*>(this));
        set_callback(*conf_, "event_cb", static_cast<RdKafka::EventCb*>(&events_));
        handle_ = create();
        poller_ = std::thread([this] { poll_loop(); });
    }

    ~Producer() override {
        done_ = true;
        poller_.join();
        flush(timeout_);
        // Whatever is left fails now, so that every delivery report (and its opaque) is served.
        std::vector<std::shared_ptr<RdKafka::Producer>> all = std::move(retired_);
        all.push_back(std::move(handle_));
        for (auto& handle : all) {
            handle->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
            auto until = Clock::now() + 5s;
            while (handle->outq_len() > 0 && Clock::now() < until) handle->poll(10);
            handle->poll(0);
        }
    }

    // Produces and waits for the delivery report; throws a retryable QueueError with librdkafka's reason.
    void send(const std::string& topic, std::string_view payload, const Headers& headers) {
        send_all(topic, std::span<const std::string_view>(&payload, 1), headers);
    }

    // Produces the messages and waits for all their delivery reports; throws a retryable QueueError with the first
    // failure's reason. `Payloads` is a span of strings or of string views.
    template <typename Payloads>
    void send_all(const std::string& topic, Payloads payloads, const Headers& headers) {
        if (payloads.empty()) return;
        auto delivery = std::make_shared<Delivery>();
        delivery->pending = payloads.size();
        auto started = Clock::now();
        produce(topic, payloads, headers, delivery, true);
        // librdkafka fails the message itself at message.timeout.ms (= push_timeout), but only notices from a
        // periodic scan: up to a second later, and while the partition's broker is down only after its reconnect
        // backoff (up to 10 s). The push does not wait for that: the message is as good as timed out.
        std::unique_lock lock(delivery->mutex);
        if (!delivery->cv.wait_until(lock, started + timeout_, [&] { return delivery->pending == 0; }))
            throw push_error(topic, RdKafka::err2str(RdKafka::ERR__MSG_TIMED_OUT));
        if (delivery->err != RdKafka::ERR_NO_ERROR) throw push_error(topic, delivery->reason);
    }

    // Produces without waiting: `done` runs from the delivery report, on the poll thread, or from the poll thread
    // at the push timeout if no report came by then (as send_all: while the partition's broker is down, librdkafka
    // reports its own timeout only after it reconnects). A full local queue fails at once instead of waiting for
    // room: the caller may be an event loop.
    void send_async(const std::string& topic, std::string_view payload, const Headers& headers, Queue::PushDone done) {
        auto delivery = std::make_shared<Delivery>();
        delivery->pending = 1;
        delivery->topic = topic;
        delivery->done = std::move(done);
        try {
            produce(topic, std::span<const std::string_view>(&payload, 1), headers, delivery, false);
        } catch (const QueueError& e) {
            // Not produced: no report will come.
            Queue::PushDone d = std::move(delivery->done);
            d(&e);
            return;
        }
        std::lock_guard lock(async_mutex_);
        async_deadlines_.emplace_back(Clock::now() + timeout_, delivery);
    }

    static QueueError push_error(const std::string& topic, const std::string& reason) {
        return QueueError("queue: push to " + topic + " failed: " + reason, true);
    }

    // Hands the messages to librdkafka, each with an opaque pointing to `delivery`. Throws QueueError when one
    // cannot be produced (what was produced before it may still be delivered: at-least-once). `wait_for_room`:
    // retry a full local queue until the push timeout instead of failing at once.
    template <typename Payloads>
    void produce(const std::string& topic, Payloads payloads, const Headers& headers,
                 const std::shared_ptr<Delivery>& delivery, bool wait_for_room) {
        auto started = Clock::now();
        auto fail = [&](const std::string& reason) { return push_error(topic, reason); };
        // The C API with one topic handle for the whole batch: the C++ produce() looks the topic up by name for
        // every message.
        std::shared_ptr<RdKafka::Producer> handle = current();
        std::unique_ptr<rd_kafka_topic_t, decltype(&rd_kafka_topic_destroy)> rkt(
            rd_kafka_topic_new(handle->c_ptr(), topic.c_str(), nullptr), &rd_kafka_topic_destroy);
        for (std::string_view payload : payloads) {
            for (;;) {
                if (!rkt) throw fail(rd_kafka_err2str(rd_kafka_last_error()));
                rd_kafka_headers_t* kafka_headers = nullptr;
                if (!headers.empty()) {
                    kafka_headers = rd_kafka_headers_new(headers.size());
                    for (const auto& [key, value] : headers)
                        rd_kafka_header_add(kafka_headers, key.data(), static_cast<ssize_t>(key.size()), value.data(),
                                            static_cast<ssize_t>(value.size()));
                }
                auto* opaque = new std::shared_ptr<Delivery>(delivery);
                auto err = static_cast<RdKafka::ErrorCode>(rd_kafka_producev(
                    handle->c_ptr(), RD_KAFKA_V_RKT(rkt.get()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                    RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                    RD_KAFKA_V_HEADERS(kafka_headers), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END));
                if (err == RdKafka::ERR_NO_ERROR) break;  // librdkafka owns the headers and the opaque now
                if (kafka_headers) rd_kafka_headers_destroy(kafka_headers);
                delete opaque;
                if (err == RdKafka::ERR__QUEUE_FULL && wait_for_room && Clock::now() - started < timeout_) {
                    std::this_thread::sleep_for(5ms);  // the poll thread drains the queue
                    continue;
                }
                if (err == RdKafka::ERR__FATAL && replace(handle)) {
                    rkt.reset();  // before the old handle may go
                    handle = current();
                    rkt.reset(rd_kafka_topic_new(handle->c_ptr(), topic.c_str(), nullptr));
                    continue;
                }
                std::string reason = RdKafka::err2str(err);
                if (err == RdKafka::ERR__FATAL) handle->fatal_error(reason);
                throw fail(reason);
            }
        }
    }

    void flush(std::chrono::milliseconds timeout) { current()->flush(static_cast<int>(timeout.count())); }

    // Runs on the poll thread (or in purge/flush), once per produced message.
    void dr_cb(RdKafka::Message& message) override {
        std::unique_ptr<std::shared_ptr<Delivery>> opaque(
            static_cast<std::shared_ptr<Delivery>*>(message.msg_opaque()));
        if (!opaque) return;
        Delivery& delivery = **opaque;
        Queue::PushDone done;
        std::string reason;
        {
            std::lock_guard lock(delivery.mutex);
            if (message.err() != RdKafka::ERR_NO_ERROR && delivery.err == RdKafka::ERR_NO_ERROR) {
                delivery.err = message.err();
                delivery.reason = message.errstr();
            }
            if (--delivery.pending > 0) return;
            delivery.cv.notify_all();
            done = std::move(delivery.done);
            if (delivery.err != RdKafka::ERR_NO_ERROR) reason = delivery.reason.empty() ? "failed" : delivery.reason;
        }
        if (!done) return;
        if (reason.empty()) return done(nullptr);
        QueueError error = push_error(delivery.topic, reason);
        done(&error);
    }

  private:
    std::shared_ptr<RdKafka::Producer> create() {
        std::string err;
        std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf_.get(), err));
        if (!producer) config_error(err);
        return std::shared_ptr<RdKafka::Producer>(std::move(producer));
    }

    std::shared_ptr<RdKafka::Producer> current() {
        std::lock_guard lock(mutex_);
        return handle_;
    }

    // An idempotent producer that hit a fatal error (e.g. a sequence desynchronization with the broker) refuses
    // every further message: replace it by a fresh one, and let the poll thread fail what the old one still
    // holds. False when `broken` cannot be replaced yet (replaced less than fatal_retry_interval ago).
    bool replace(const std::shared_ptr<RdKafka::Producer>& broken) {
        std::lock_guard lock(mutex_);
        if (handle_ != broken) return true;  // another thread did it
        if (Clock::now() - replaced_at_ < fatal_retry_interval) return false;
        std::string reason;
        broken->fatal_error(reason);
        try {
            handle_ = create();
        } catch (const std::exception& e) {
            Logger().error(std::string("queue: kafka producer: cannot replace the failed producer: ") + e.what());
            return false;
        }
        replaced_at_ = Clock::now();
        Logger().warn("queue: kafka producer: fatal error, replaced by a new producer: " + reason);
        broken->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
        retired_.push_back(broken);
        return true;
    }

    // Fails the asynchronous pushes still unreported at their deadline (their later report finds `done` gone).
    // Deadlines are in push order (one timeout for all); reported pushes at the front are dropped on the way.
    void expire_async() {
        std::vector<std::shared_ptr<Delivery>> expired;
        {
            std::lock_guard lock(async_mutex_);
            const auto now = Clock::now();
            while (!async_deadlines_.empty()) {
                auto& [deadline, weak] = async_deadlines_.front();
                std::shared_ptr<Delivery> delivery = weak.lock();
                if (delivery && deadline > now) break;
                if (delivery) expired.push_back(std::move(delivery));
                async_deadlines_.pop_front();
            }
        }
        for (auto& delivery : expired) {
            Queue::PushDone done;
            {
                std::lock_guard lock(delivery->mutex);
                if (delivery->pending == 0) continue;
                done = std::move(delivery->done);
            }
            if (!done) continue;
            QueueError error = push_error(delivery->topic, RdKafka::err2str(RdKafka::ERR__MSG_TIMED_OUT));
            done(&error);
        }
    }

    void poll_loop() {
        while (!done_) {
            beat(beat_);
            try {
                std::shared_ptr<RdKafka::Producer> handle = current();
                handle->poll(static_cast<int>(poll_interval.count()));
                expire_async();
                std::string reason;
                if (handle->fatal_error(reason) != RdKafka::ERR_NO_ERROR) replace(handle);
                std::vector<std::shared_ptr<RdKafka::Producer>> retired;
                {
                    std::lock_guard lock(mutex_);
                    retired = retired_;
                }
                for (auto& old : retired) {
                    old->poll(0);
                    if (old->outq_len() == 0) {
                        std::lock_guard lock(mutex_);
                        std::erase(retired_, old);
                    }
                }
            } catch (const std::exception& e) {
                Logger().error(std::string("queue: kafka producer poll: ") + e.what());
                std::this_thread::sleep_for(poll_interval);
            }
        }
    }

  public:
    const HeartbeatClock& heartbeat() const { return beat_; }

    // "" when a broker answers a metadata request within `timeout`, else why not.
    std::string reachable(std::chrono::milliseconds timeout) {
        RdKafka::Metadata* metadata = nullptr;
        RdKafka::ErrorCode err = current()->metadata(false, nullptr, &metadata, static_cast<int>(timeout.count()));
        delete metadata;
        if (err == RdKafka::ERR_NO_ERROR) return {};
        return "queue: kafka: no metadata from the brokers within " + std::to_string(timeout.count()) +
               " ms: " + RdKafka::err2str(err);
    }

  private:
    HeartbeatClock beat_ = make_heartbeat();  // the poll thread's turns
    std::chrono::milliseconds timeout_;
    EventLogger events_;
    std::unique_ptr<RdKafka::Conf> conf_;

    std::mutex mutex_;
    std::shared_ptr<RdKafka::Producer> handle_;
    std::vector<std::shared_ptr<RdKafka::Producer>> retired_;  // failed fatally, polled until their queue is empty
    std::mutex async_mutex_;
    std::deque<std::pair<Clock::time_point, std::weak_ptr<Delivery>>> async_deadlines_;  // send_async, in push order
    Clock::time_point replaced_at_{};

    std::atomic<bool> done_{false};
    std::thread poller_;
};

// ---------------------------------------------------------------------------------------------------------------
// Consumer

class KafkaQueue::Consumer final : public RdKafka::RebalanceCb, public RdKafka::OffsetCommitCb {
  public:
    Consumer(KafkaQueue& owner, Subscription subscription)
        : owner_(owner),
          sub_(std::move(subscription)),
          topic_(topic_for(sub_.queue)),
          events_("consumer " + sub_.group + "/" + topic_, &lag_, topic_),
          prefetch_(static_cast<std::size_t>(2 * sub_.concurrency)) {
        std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
        set(*conf, "bootstrap.servers", owner.settings_.brokers);
        set(*conf, "auto.offset.reset", "earliest");
        set(*conf, "session.timeout.ms", "6000");
        // Topics are created with the Admin API (KafkaQueue::start, TopicKeeper), never by a subscription.
        set(*conf, "allow.auto.create.topics", "false");
        for (const auto& [name, value] : owner.settings_.properties) set(*conf, name, value);
        set(*conf, "group.id", owner.settings_.group_prefix + sub_.group);
        // We commit explicit offsets, only behind finished work: at-least-once.
        set(*conf, "enable.auto.commit", "false");
        set(*conf, "enable.auto.offset.store", "false");
        if (owner.settings_.statistics_interval_ms > 0 && !owner.settings_.properties.count("statistics.interval.ms"))
            set(*conf, "statistics.interval.ms", std::to_string(owner.settings_.statistics_interval_ms));
        set_callback(*conf, "rebalance_cb", static_cast<RdKafka::RebalanceCb*>(this));
        set_callback(*conf, "offset_commit_cb", static_cast<RdKafka::OffsetCommitCb*>(this));
        set_callback(*conf, "event_cb", static_cast<RdKafka::EventCb*>(&events_));
        std::string err;
        consumer_.reset(RdKafka::KafkaConsumer::create(conf.get(), err));
        if (!consumer_) config_error("consumer of " + topic_ + ": " + err);
        messages_.reset(RdKafka::Queue::create(consumer_.get()));
    }

    const std::string& topic() const { return topic_; }
    const Subscription& subscription() const { return sub_; }
    std::int64_t lag() const { return lag_.load(std::memory_order_relaxed); }

    void start() {
        RdKafka::ErrorCode err = consumer_->subscribe({topic_});
        if (err != RdKafka::ERR_NO_ERROR) config_error("cannot subscribe to " + topic_ + ": " + RdKafka::err2str(err));
        for (int i = 0; i < sub_.concurrency; ++i) workers_.emplace_back([this] { worker_loop(); });
        poller_ = std::thread([this] { poll_loop(); });
    }

    void request_stop(Clock::time_point deadline) {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
        stopping_ = true;
        deadline_ = deadline;
        wake_cv_.notify_all();
        work_cv_.notify_all();
        room_cv_.notify_all();
    }

    // Returns once the poll thread closed the consumer and every handler thread ended.
    void join() {
        if (poller_.joinable()) poller_.join();
        for (auto& worker : workers_) worker.join();
        workers_.clear();
        messages_.reset();
        consumer_.reset();
    }

    void rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode err,
                      std::vector<RdKafka::TopicPartition*>& partitions) override {
        bool cooperative = consumer->rebalance_protocol() == "COOPERATIVE";
        if (err == RdKafka::ERR__ASSIGN_PARTITIONS) {
            {
                std::lock_guard lock(mutex_);
                for (auto* tp : partitions) partitions_[tp->partition()] = std::make_shared<Partition>();
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
    void offset_commit_cb(RdKafka::ErrorCode err, std::vector<RdKafka::TopicPartition*>& offsets) override {
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

  private:
    // Offsets of one assigned partition. Kafka's committed offset is the next one to read: we commit the lowest
    // offset not yet finished, or one past the highest taken when everything taken is finished.
    struct Partition {
        std::set<std::int64_t> pending;  // taken, not finished (waiting, running or given up)
        std::int64_t next = -1;          // highest offset taken + 1
        std::int64_t committed = -1;     // last commit requested
        int running = 0;                 // handler threads working on it
        bool revoked = false;            // no longer ours: delays and backoffs are cut short
    };

    struct Work {
        std::shared_ptr<Partition> partition;
        Message message;
        std::int64_t offset = 0;
        std::int64_t visible_at = 0;
    };

    enum class Outcome { finished, abandoned };

    // Messages are taken from messages_ only while fewer than prefetch_ wait for a handler thread: meanwhile
    // librdkafka keeps prefetching into that queue up to queued.max.messages.kbytes and then stops fetching.
    // (pause()/resume() would do too, but librdkafka 2.0 resumes fetching up to a second late.) Rebalances,
    // errors and commit results come on the consumer queue, served in between.
    void poll_loop() {
        auto last_commit = Clock::now();
        for (;;) {
            try {
                bool room;
                {
                    std::unique_lock lock(mutex_);
                    if (stopping_) break;
                    room = ready_.size() < prefetch_;
                }
                if (room) {
                    std::unique_ptr<RdKafka::Message> message(
                        messages_->consume(static_cast<int>(poll_interval.count())));
                    handle(*message);
                    // Take what else is fetched already (while there is room) before serving the consumer queue.
                    while (message->err() == RdKafka::ERR_NO_ERROR && has_room()) {
                        message.reset(messages_->consume(0));
                        handle(*message);
                    }
                    serve_consumer_queue();
                } else {
                    serve_consumer_queue();
                    std::unique_lock lock(mutex_);
                    room_cv_.wait_for(lock, poll_interval, [&] { return stopping_ || ready_.size() < prefetch_; });
                }
                if (Clock::now() - last_commit >= commit_interval) {
                    commit(false, all_partitions());
                    last_commit = Clock::now();
                }
            } catch (const std::exception& e) {
                Logger().error("queue: kafka consumer " + topic_ + ": " + e.what());
                std::this_thread::sleep_for(poll_interval);
            }
        }
        try {
            shutdown();
        } catch (const std::exception& e) {
            Logger().error("queue: kafka consumer " + topic_ + ": stop: " + e.what());
        }
        std::lock_guard lock(mutex_);
        quit_ = true;
        work_cv_.notify_all();
    }

    bool has_room() {
        std::lock_guard lock(mutex_);
        return !stopping_ && ready_.size() < prefetch_;
    }

    // Runs the callbacks (rebalance, commit results, errors) waiting on the consumer queue.
    void serve_consumer_queue() {
        for (;;) {
            std::unique_ptr<RdKafka::Message> message(consumer_->consume(0));
            if (message->err() == RdKafka::ERR__TIMED_OUT) return;
            handle(*message);
        }
    }

    void handle(RdKafka::Message& message) {
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

    // Stop: running handlers get until the deadline, then what finished is committed and the group left.
    void shutdown() {
        {
            std::unique_lock lock(mutex_);
            ready_.clear();  // not started: stays uncommitted, redelivered
            done_cv_.wait_until(lock, deadline_, [&] { return running_ == 0; });
            if (running_ > 0)
                Logger().warn("queue: kafka consumer " + topic_ + ": " + std::to_string(running_) +
                              " handler(s) still running after the grace period: their messages will be redelivered");
        }
        commit(true, all_partitions());
        // Revokes (rebalance_cb) and leaves the group. With the coordinator unreachable, librdkafka holds a commit
        // in progress until it fails (~session.timeout.ms): closing (or destroying) the consumer waits for it.
        consumer_->close();
    }

    void worker_loop() {
        std::unique_lock lock(mutex_);
        for (;;) {
            work_cv_.wait(lock, [&] { return quit_ || (!stopping_ && !ready_.empty()); });
            if (quit_) return;
            Work work = std::move(ready_.front());
            ready_.pop_front();
            room_cv_.notify_one();
            ++running_;
            ++work.partition->running;
            lock.unlock();
            Outcome outcome = Outcome::abandoned;
            try {
                outcome = process(work);
            } catch (const std::exception& e) {
                Logger().error("queue: kafka consumer " + topic_ + ": " + e.what());
            }
            lock.lock();
            --running_;
            --work.partition->running;
            if (outcome == Outcome::finished) work.partition->pending.erase(work.offset);
            done_cv_.notify_all();
        }
    }

    // Delay, handler attempts with backoff, dead letter. Abandoned when stopped or revoked while waiting.
    Outcome process(Work& work) {
        Message& message = work.message;
        if (work.visible_at > now_ms()) {
            auto until = Clock::now() + std::chrono::milliseconds(work.visible_at - now_ms());
            if (!wait_until(until, *work.partition)) return Outcome::abandoned;
        }
        int max_attempts = std::max(1, owner_.retry_.max_attempts);
        std::string error;
        for (int attempt = 1;; ++attempt) {
            message.attempt = attempt;
            try {
                sub_.handler(message);
                return Outcome::finished;
            } catch (const std::exception& e) {
                error = e.what();
            } catch (...) {
                error = "unknown exception";
            }
            Logger().warn("mqc: " + sub_.queue + " message " + message.id + " attempt " + std::to_string(attempt) +
                          "/" + std::to_string(max_attempts) + " failed: " + error);
            if (attempt >= max_attempts) break;
            if (!wait_until(Clock::now() + owner_.retry_.delay_after(attempt), *work.partition))
                return Outcome::abandoned;
        }
        Headers headers = message.headers;
        headers[error_header] = error;
        headers[attempts_header] = std::to_string(message.attempt);
        for (;;) {
            try {
                owner_.producer_->send(topic_ + ".dlq", message.payload, headers);
                Logger().error("mqc: " + sub_.queue + " message " + message.id + " dead-lettered to " + topic_ +
                               ".dlq after " + std::to_string(message.attempt) + " attempts: " + error);
                return Outcome::finished;
            } catch (const QueueError& e) {
                Logger().error("mqc: " + sub_.queue + " message " + message.id + ": " + e.what());
            }
            auto pause = std::max<std::chrono::milliseconds>(owner_.retry_.backoff, 1s);
            if (!wait_until(Clock::now() + pause, *work.partition)) return Outcome::abandoned;
        }
    }

    // Sleeps until `until`; false when interrupted by stop() or the partition's revocation.
    bool wait_until(Clock::time_point until, const Partition& partition) {
        std::unique_lock lock(mutex_);
        return !wake_cv_.wait_until(lock, until, [&] { return stopping_ || partition.revoked; });
    }

    void accept(RdKafka::Message& kafka_message) {
        std::lock_guard lock(mutex_);
        auto it = partitions_.find(kafka_message.partition());
        if (it == partitions_.end()) return;  // not (or no longer) ours: whoever owns it gets it
        Work work;
        work.partition = it->second;
        work.offset = kafka_message.offset();
        work.message.id = topic_ + "/" + std::to_string(kafka_message.partition()) + "/" + std::to_string(work.offset);
        work.message.queue = sub_.queue;
        work.message.payload.assign(static_cast<const char*>(kafka_message.payload()), kafka_message.len());
        work.message.headers = headers_of(kafka_message);
        work.visible_at = visible_at_of(work.message.headers);
        work.partition->pending.insert(work.offset);
        work.partition->next = std::max(work.partition->next, work.offset + 1);
        ready_.push_back(std::move(work));
        work_cv_.notify_one();
    }

    std::vector<std::pair<std::int32_t, std::shared_ptr<Partition>>> all_partitions() {
        std::lock_guard lock(mutex_);
        return {partitions_.begin(), partitions_.end()};
    }

    // Commits, for each partition, the offset below which everything is finished, when it moved.
    void commit(bool sync, const std::vector<std::pair<std::int32_t, std::shared_ptr<Partition>>>& partitions) {
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

    // The partitions leave: waiting work is dropped, waits are interrupted, running handlers get some time, and
    // what finished is committed (unless the partitions were lost: then another member may own them already).
    void revoke(const std::vector<RdKafka::TopicPartition*>& revoked, bool lost) {
        std::vector<std::pair<std::int32_t, std::shared_ptr<Partition>>> gone;
        {
            std::unique_lock lock(mutex_);
            for (auto* tp : revoked) {
                auto it = partitions_.find(tp->partition());
                if (it == partitions_.end()) continue;
                it->second->revoked = true;
                gone.emplace_back(*it);
                partitions_.erase(it);
            }
            std::erase_if(ready_, [](const Work& work) { return work.partition->revoked; });
            wake_cv_.notify_all();
            auto deadline = stopping_ ? deadline_ : Clock::now() + revoke_grace;
            done_cv_.wait_until(lock, deadline, [&] {
                return std::all_of(gone.begin(), gone.end(), [](const auto& p) { return p.second->running == 0; });
            });
        }
        if (!lost) commit(true, gone);
    }

    KafkaQueue& owner_;
    Subscription sub_;
    std::string topic_;
    std::atomic<std::int64_t> lag_{-1};  // from librdkafka's statistics (events_); -1 = not known
    EventLogger events_;
    std::size_t prefetch_;  // messages taken ahead of the handler threads
    std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
    std::unique_ptr<RdKafka::Queue> messages_;  // the assigned partitions' messages (forwarded partition queues)
    std::string last_error_;                    // poll thread only
    Clock::time_point last_error_at_{};

    std::mutex mutex_;
    std::condition_variable work_cv_;                                // handler threads: work arrived, or quit
    std::condition_variable wake_cv_;                                // delays and backoffs: stop or revoke
    std::condition_variable done_cv_;                                // poll thread: a handler finished
    std::condition_variable room_cv_;                                // poll thread: a handler thread took a message
    std::map<std::int32_t, std::shared_ptr<Partition>> partitions_;  // the assignment
    std::deque<Work> ready_;                                         // taken, waiting for a handler thread
    int running_ = 0;
    bool stopping_ = false;
    bool quit_ = false;
    Clock::time_point deadline_{};
    RdKafka::ErrorCode last_commit_error_ = RdKafka::ERR_NO_ERROR;

    std::thread poller_;
    std::vector<std::thread> workers_;
};

// ---------------------------------------------------------------------------------------------------------------
// KafkaQueue

KafkaQueue::KafkaQueue(Settings settings, RetryPolicy retry) : settings_(std::move(settings)), retry_(retry) {
    if (settings_.brokers.empty()) config_error("queue.kafka.brokers is empty");
    producer_ = std::make_unique<Producer>(settings_);
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
    delayed[visible_at_header] = std::to_string(now_ms() + delay.count());
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
    delayed[visible_at_header] = std::to_string(now_ms() + delay.count());
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
    if (!subscription.handler) throw std::invalid_argument("queue: kafka: subscription without a handler");
    subscription.concurrency = std::max(1, subscription.concurrency);
    if (subscription.group.empty()) subscription.group = topic_for(subscription.queue);
    std::lock_guard lock(mutex_);
    if (started_) throw std::logic_error("queue: kafka: subscribe() after start()");
    consumers_.push_back(std::make_unique<Consumer>(*this, std::move(subscription)));
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
    auto deadline = Clock::now() + grace;
    for (auto& consumer : consumers_) consumer->request_stop(deadline);
    for (auto& consumer : consumers_) consumer->join();
    consumers_.clear();
    producer_->flush(settings_.push_timeout);
}

void KafkaQueue::collect(metrics::Samples& samples) {
    std::lock_guard lock(mutex_);
    for (const auto& consumer : consumers_) {
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
