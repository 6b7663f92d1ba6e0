// The queue's Kafka producer: idempotent, acks=all; a push waits for its own delivery report (or gets it as a
// callback), a poll thread serves the reports, and a producer that failed fatally is replaced.
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "net/heartbeat.h"
#include "queue/kafka/conf.h"
#include "queue/kafka/kafka_queue.h"

namespace hydra::queue::kafka {

// The delivery reports awaited by one push or push_batch. Shared by the pushing thread and librdkafka's message
// opaques, so a push that gives up waiting leaves nothing dangling.
struct Reports;

class Producer final : public RdKafka::DeliveryReportCb {
  public:
    explicit Producer(const KafkaQueue::Settings& settings);
    ~Producer() override;

    // Produces and waits for the delivery report; throws a retryable QueueError with librdkafka's reason.
    void send(const std::string& topic, std::string_view payload, const Headers& headers);
    // Produces the messages and waits for all their delivery reports; throws a retryable QueueError with the first
    // failure's reason.
    void send_all(const std::string& topic, std::span<const std::string> payloads, const Headers& headers);
    // Produces without waiting: `done` runs from the delivery report, on the poll thread, or from the poll thread
    // at the push timeout if no report came by then (as send_all: while the partition's broker is down, librdkafka
    // reports its own timeout only after it reconnects). A full local queue fails at once instead of waiting for
    // room: the caller may be an event loop.
    void send_async(const std::string& topic, std::string_view payload, const Headers& headers, Queue::PushDone done);
    void flush(std::chrono::milliseconds timeout);

    // Runs on the poll thread (or in purge/flush), once per produced message.
    void dr_cb(RdKafka::Message& message) override;

    const HeartbeatClock& heartbeat() const { return beat_; }
    // "" when a broker answers a metadata request within `timeout`, else why not.
    std::string reachable(std::chrono::milliseconds timeout);

  private:
    using Clock = std::chrono::steady_clock;

    template <typename Payloads>
    void wait_all(const std::string& topic, Payloads payloads, const Headers& headers);
    template <typename Payloads>
    void produce(const std::string& topic, Payloads payloads, const Headers& headers,
                 const std::shared_ptr<Reports>& reports, bool wait_for_room);
    std::shared_ptr<RdKafka::Producer> create();
    std::shared_ptr<RdKafka::Producer> current();
    bool replace(const std::shared_ptr<RdKafka::Producer>& broken);
    void expire_async();
    void poll_loop();

    HeartbeatClock beat_ = make_heartbeat();  // the poll thread's turns
    std::chrono::milliseconds timeout_;
    EventLogger events_;
    std::unique_ptr<RdKafka::Conf> conf_;

    std::mutex mutex_;
    std::shared_ptr<RdKafka::Producer> handle_;
    std::vector<std::shared_ptr<RdKafka::Producer>> retired_;  // failed fatally, polled until their queue is empty
    std::mutex async_mutex_;
    std::deque<std::pair<Clock::time_point, std::weak_ptr<Reports>>> async_deadlines_;  // send_async, in push order
    Clock::time_point replaced_at_{};

    // Pushers waiting for room in librdkafka's full local queue: delivery reports make room.
    std::mutex room_mutex_;
    std::condition_variable room_cv_;
    std::atomic<int> room_waiters_{0};
    std::atomic<std::uint64_t> reports_seen_{0};  // delivery reports so far (each made room in the local queue)

    std::atomic<bool> done_{false};
    std::thread poller_;
};

}  // namespace hydra::queue::kafka
