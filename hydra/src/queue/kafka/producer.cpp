#include "queue/kafka/producer.h"

#include <librdkafka/rdkafka.h>

#include <hydra/log.h>

namespace hydra::queue::kafka {

using namespace std::chrono_literals;

namespace {

constexpr auto kPollInterval = 100ms;     // the poll thread's longest wait for librdkafka's events
constexpr auto kFatalRetryInterval = 1s;  // a fatal producer is replaced at most this often

QueueError push_error(const std::string& topic, const std::string& reason) {
    return QueueError("queue: push to " + topic + " failed: " + reason, true);
}

}  // namespace

struct Reports {
    std::mutex mutex;
    std::condition_variable cv;
    std::size_t pending = 0;                         // reports still to come
    RdKafka::ErrorCode err = RdKafka::ERR_NO_ERROR;  // the first failure
    std::string reason;
    Queue::PushDone done;  // push_async(): called after the last report, outside the mutex
    std::string topic;     // for done's error message
};

Producer::Producer(const KafkaQueue::Settings& settings) : timeout_(settings.push_timeout), events_("producer") {
    conf_.reset(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    set(*conf_, "bootstrap.servers", settings.brokers);
    // No duplicates or reordering from internal retries; durable on all in-sync replicas. A push blocks until
    // acknowledged, so lingering adds up to linger.ms to it when traffic is light; under load it makes the batches
    // that keep the broker's work per message low. librdkafka's default, 5 ms: on the two-host send benchmark (mock
    // broker sharing the servers' core) it holds 10,000 msg/s at p99 27-42 ms where 1 ms gave 0.2-1.8 s — small
    // batches cost the broker more per message, and the idempotent producer (at most 5 requests in flight per
    // partition) polls without sleeping while a slow broker holds them all. 256 blocking pushers in a closed loop
    // get ~20 % fewer pushes/s than with 1 ms (hydra-bench queue). push_batch() produces its messages at once.
    // queue.kafka.properties.linger.ms wins.
    set(*conf_, "enable.idempotence", "true");
    set(*conf_, "acks", "all");
    set(*conf_, "linger.ms", "5");
    for (const auto& [name, value] : settings.properties) set(*conf_, name, value);
    // queue.push_timeout_ms is the one knob for how long a push may take.
    set(*conf_, "message.timeout.ms", std::to_string(settings.push_timeout.count()));
    set_callback(*conf_, "dr_cb", static_cast<RdKafka::DeliveryReportCb*>(this));
    set_callback(*conf_, "event_cb", static_cast<RdKafka::EventCb*>(&events_));
    handle_ = create();
    poller_ = std::thread([this] { poll_loop(); });
}

Producer::~Producer() {
    done_ = true;
    current()->yield();  // out of its poll() now
    poller_.join();
    flush(timeout_);
    // Whatever is left fails now, so that every delivery report (and its opaque) is served.
    std::vector<std::shared_ptr<RdKafka::Producer>> all = std::move(retired_);
    all.push_back(std::move(handle_));
    for (auto& handle : all) {
        handle->purge(RdKafka::Producer::PURGE_QUEUE | RdKafka::Producer::PURGE_INFLIGHT);
        // poll() returns as soon as reports were served; bounded, for a handle librdkafka would not drain.
        auto until = Clock::now() + 5s;
        while (handle->outq_len() > 0 && Clock::now() < until) handle->poll(10);
        handle->poll(0);
    }
}

void Producer::send(const std::string& topic, std::string_view payload, const Headers& headers) {
    wait_all(topic, std::span<const std::string_view>(&payload, 1), headers);
}

void Producer::send_all(const std::string& topic, std::span<const std::string> payloads, const Headers& headers) {
    wait_all(topic, payloads, headers);
}

// `Payloads` is a span of strings or of string views.
template <typename Payloads>
void Producer::wait_all(const std::string& topic, Payloads payloads, const Headers& headers) {
    if (payloads.empty()) return;
    auto reports = std::make_shared<Reports>();
    reports->pending = payloads.size();
    auto started = Clock::now();
    produce(topic, payloads, headers, reports, true);
    // librdkafka fails the message itself at message.timeout.ms (= push_timeout), but only notices from a
    // periodic scan: up to a second later, and while the partition's broker is down only after its reconnect
    // backoff (up to 10 s). The push does not wait for that: the message is as good as timed out.
    std::unique_lock lock(reports->mutex);
    if (!reports->cv.wait_until(lock, started + timeout_, [&] { return reports->pending == 0; }))
        throw push_error(topic, RdKafka::err2str(RdKafka::ERR__MSG_TIMED_OUT));
    if (reports->err != RdKafka::ERR_NO_ERROR) throw push_error(topic, reports->reason);
}

void Producer::send_async(const std::string& topic, std::string_view payload, const Headers& headers,
                          Queue::PushDone done) {
    auto reports = std::make_shared<Reports>();
    reports->pending = 1;
    reports->topic = topic;
    reports->done = std::move(done);
    try {
        produce(topic, std::span<const std::string_view>(&payload, 1), headers, reports, false);
    } catch (const QueueError& e) {
        // Not produced: no report will come.
        Queue::PushDone d = std::move(reports->done);
        d(&e);
        return;
    }
    std::lock_guard lock(async_mutex_);
    async_deadlines_.emplace_back(Clock::now() + timeout_, reports);
}

// Hands the messages to librdkafka, each with an opaque pointing to `reports`. Throws QueueError when one
// cannot be produced (what was produced before it may still be delivered: at-least-once). `wait_for_room`:
// wait for room in a full local queue (the poll thread's delivery reports make some) until the push timeout instead
// of failing at once.
template <typename Payloads>
void Producer::produce(const std::string& topic, Payloads payloads, const Headers& headers,
                       const std::shared_ptr<Reports>& reports, bool wait_for_room) {
    auto started = Clock::now();
    auto fail = [&](const std::string& reason) { return push_error(topic, reason); };
    // The C API with one topic handle for the whole batch: the C++ produce() looks the topic up by name for
    // every message.
    std::shared_ptr<RdKafka::Producer> handle = current();
    std::unique_ptr<rd_kafka_topic_t, decltype(&rd_kafka_topic_destroy)> rkt(
        rd_kafka_topic_new(handle->c_ptr(), topic.c_str(), nullptr), &rd_kafka_topic_destroy);
    // An order key is the Kafka message key: one partition (and so one consumer) gets all of a key's messages.
    auto order_key = headers.find(std::string(kOrderKeyHeader));
    const std::string_view key = order_key == headers.end() ? std::string_view() : std::string_view(order_key->second);
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
            auto* opaque = new std::shared_ptr<Reports>(reports);
            const std::uint64_t reports_before = reports_seen_.load();
            auto err = static_cast<RdKafka::ErrorCode>(
                rd_kafka_producev(handle->c_ptr(), RD_KAFKA_V_RKT(rkt.get()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                  RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                                  RD_KAFKA_V_KEY(key.empty() ? nullptr : key.data(), key.size()),
                                  RD_KAFKA_V_HEADERS(kafka_headers), RD_KAFKA_V_OPAQUE(opaque), RD_KAFKA_V_END));
            if (err == RdKafka::ERR_NO_ERROR) break;  // librdkafka owns the headers and the opaque now
            if (kafka_headers) rd_kafka_headers_destroy(kafka_headers);
            delete opaque;
            if (err == RdKafka::ERR__QUEUE_FULL && wait_for_room && Clock::now() - started < timeout_) {
                // Until a delivery report makes room: every queued message gets one within the push timeout. One
                // that came since the attempt made room already (the report counts before it looks for waiters,
                // a waiter counts itself before it looks at the reports: one of the two sees the other).
                std::unique_lock lock(room_mutex_);
                ++room_waiters_;
                room_cv_.wait_until(lock, started + timeout_, [&] { return reports_seen_.load() != reports_before; });
                --room_waiters_;
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

void Producer::flush(std::chrono::milliseconds timeout) { current()->flush(static_cast<int>(timeout.count())); }

void Producer::dr_cb(RdKafka::Message& message) {
    std::unique_ptr<std::shared_ptr<Reports>> opaque(static_cast<std::shared_ptr<Reports>*>(message.msg_opaque()));
    if (!opaque) return;
    reports_seen_.fetch_add(1);
    if (room_waiters_.load() > 0) {  // a pusher waits for room in the local queue: this report made some
        std::lock_guard lock(room_mutex_);
        room_cv_.notify_all();
    }
    Reports& reports = **opaque;
    Queue::PushDone done;
    std::string reason;
    {
        std::lock_guard lock(reports.mutex);
        if (message.err() != RdKafka::ERR_NO_ERROR && reports.err == RdKafka::ERR_NO_ERROR) {
            reports.err = message.err();
            reports.reason = message.errstr();
        }
        if (--reports.pending > 0) return;
        reports.cv.notify_all();
        done = std::move(reports.done);
        if (reports.err != RdKafka::ERR_NO_ERROR) reason = reports.reason.empty() ? "failed" : reports.reason;
    }
    if (!done) return;
    if (reason.empty()) return done(nullptr);
    QueueError error = push_error(reports.topic, reason);
    done(&error);
}

std::shared_ptr<RdKafka::Producer> Producer::create() {
    std::string err;
    std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf_.get(), err));
    if (!producer) config_error(err);
    return std::shared_ptr<RdKafka::Producer>(std::move(producer));
}

std::shared_ptr<RdKafka::Producer> Producer::current() {
    std::lock_guard lock(mutex_);
    return handle_;
}

// An idempotent producer that hit a fatal error (e.g. a sequence desynchronization with the broker) refuses
// every further message: replace it by a fresh one, and let the poll thread fail what the old one still
// holds. False when `broken` cannot be replaced yet (replaced less than kFatalRetryInterval ago).
bool Producer::replace(const std::shared_ptr<RdKafka::Producer>& broken) {
    std::lock_guard lock(mutex_);
    if (handle_ != broken) return true;  // another thread did it
    if (Clock::now() - replaced_at_ < kFatalRetryInterval) return false;
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
void Producer::expire_async() {
    std::vector<std::shared_ptr<Reports>> expired;
    {
        std::lock_guard lock(async_mutex_);
        const auto now = Clock::now();
        while (!async_deadlines_.empty()) {
            auto& [deadline, weak] = async_deadlines_.front();
            std::shared_ptr<Reports> reports = weak.lock();
            if (reports && deadline > now) break;
            if (reports) expired.push_back(std::move(reports));
            async_deadlines_.pop_front();
        }
    }
    for (auto& reports : expired) {
        Queue::PushDone done;
        {
            std::lock_guard lock(reports->mutex);
            if (reports->pending == 0) continue;
            done = std::move(reports->done);
        }
        if (!done) continue;
        QueueError error = push_error(reports->topic, RdKafka::err2str(RdKafka::ERR__MSG_TIMED_OUT));
        done(&error);
    }
}

void Producer::poll_loop() {
    while (!done_) {
        beat(beat_);
        try {
            std::shared_ptr<RdKafka::Producer> handle = current();
            handle->poll(static_cast<int>(kPollInterval.count()));
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
            std::this_thread::sleep_for(kPollInterval);  // a pause before trying again, not spinning on an error
        }
    }
}

std::string Producer::reachable(std::chrono::milliseconds timeout) {
    RdKafka::Metadata* metadata = nullptr;
    RdKafka::ErrorCode err = current()->metadata(false, nullptr, &metadata, static_cast<int>(timeout.count()));
    delete metadata;
    if (err == RdKafka::ERR_NO_ERROR) return {};
    return "queue: kafka: no metadata from the brokers within " + std::to_string(timeout.count()) +
           " ms: " + RdKafka::err2str(err);
}

}  // namespace hydra::queue::kafka
