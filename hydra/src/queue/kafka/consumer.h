// One subscription on Kafka: a consumer group member whose poll thread delivers the assigned partitions' messages
// to the subscription's sink while it wants more, and commits, per partition, the offset below which every
// message was settled (at-least-once). Retries go back to the sink at their time (in place: the partition's
// committed offset waits for them); dead letters are produced to "<topic>.dlq".
#pragma once

#include <librdkafka/rdkafkacpp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "queue/kafka/conf.h"
#include "queue/kafka/kafka_queue.h"

namespace hydra::queue::kafka {

class Producer;

class Consumer final : public RdKafka::RebalanceCb, public RdKafka::OffsetCommitCb {
  public:
    // Throws std::runtime_error "queue: kafka: ..." when librdkafka refuses the configuration.
    Consumer(const KafkaQueue::Settings& settings, Subscription subscription, Producer& producer);

    const std::string& topic() const { return topic_; }
    const Subscription& subscription() const { return sub_; }
    std::int64_t lag() const { return lag_.load(std::memory_order_relaxed); }
    // How many of the topic's partitions this host holds now (0 while its group rebalances).
    std::size_t assigned();

    void start();
    // Stops delivering and stops the sink (what waits in it is released); the poll thread then joins the sink until
    // `deadline`, commits what was settled and leaves the group.
    void request_stop(std::chrono::steady_clock::time_point deadline);
    // Returns once the poll thread closed the consumer.
    void join();

    // The consumer a delivery came from.
    static Consumer& of(const Delivery& delivery);
    // Settling (from the sink's handler threads).
    void ack(Delivery& delivery);
    void retry(Delivery& delivery, std::int64_t at_ms);
    void dead_letter(Delivery& delivery, const std::string& error);
    void release(Delivery& delivery);

    void rebalance_cb(RdKafka::KafkaConsumer* consumer, RdKafka::ErrorCode err,
                      std::vector<RdKafka::TopicPartition*>& partitions) override;
    // A failed commit is repeated by the next one (a later commit covers an earlier one anyway).
    void offset_commit_cb(RdKafka::ErrorCode err, std::vector<RdKafka::TopicPartition*>& offsets) override;

    struct Partition;  // offsets of an assigned partition (consumer.cpp)

  private:
    using Clock = std::chrono::steady_clock;
    using Partitions = std::vector<std::pair<std::int32_t, std::shared_ptr<Partition>>>;

    void poll_loop();
    void serve_consumer_queue();
    void handle(RdKafka::Message& message);
    void accept(RdKafka::Message& message);
    void shutdown();
    // The message is settled: `finished` (acknowledged or dead-lettered) lets the committed offset pass it.
    void settle(Delivery& delivery, bool finished);
    // Sleeps until `until`; false when interrupted by stop or the partition's revocation.
    bool wait_until(Clock::time_point until, const Partition& partition);
    Partitions all_partitions();
    void commit(bool sync, const Partitions& partitions);
    void revoke(const std::vector<RdKafka::TopicPartition*>& revoked, bool lost);

    Producer& producer_;
    Subscription sub_;
    std::string topic_;
    std::atomic<std::int64_t> lag_{-1};  // from librdkafka's statistics (events_); -1 = not known
    EventLogger events_;
    std::unique_ptr<RdKafka::KafkaConsumer> consumer_;
    std::unique_ptr<RdKafka::Queue> messages_;  // the assigned partitions' messages (forwarded partition queues)
    std::vector<Delivery> taken_;               // poll thread only: accepted, not yet delivered
    std::string last_error_;                    // poll thread only
    Clock::time_point last_error_at_{};

    std::mutex mutex_;
    std::condition_variable wake_cv_;                                // dead letter pauses: stop or revoke
    std::condition_variable settled_cv_;                             // revoke: a message was settled
    std::map<std::int32_t, std::shared_ptr<Partition>> partitions_;  // the assignment
    bool stopping_ = false;
    Clock::time_point deadline_{};
    RdKafka::ErrorCode last_commit_error_ = RdKafka::ERR_NO_ERROR;

    std::thread poller_;
};

}  // namespace hydra::queue::kafka
