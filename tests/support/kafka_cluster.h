// librdkafka's mock cluster inside the test process (one for the whole binary), and plain readers of its topics.
#pragma once

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <librdkafka/rdkafkacpp.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

#include <hydra/queue.h>

namespace test {

// librdkafka starts its threads with C11 thrd_create, which ThreadSanitizer (GCC 12) does not intercept: the first
// of them crashes in TSan's allocator. Skipped in TSan builds.
#if defined(__SANITIZE_THREAD__)
inline constexpr bool under_tsan = true;
#elif defined(__has_feature)
inline constexpr bool under_tsan = __has_feature(thread_sanitizer);
#else
inline constexpr bool under_tsan = false;
#endif

// The mock cluster: one broker listening on 127.0.0.1, created on first use and reused by every case (a consumer
// group's first join takes ~3 s on it, so cases use few groups).
class MockCluster {
  public:
    MockCluster() {
        char err[512];
        rd_kafka_conf_t* conf = rd_kafka_conf_new();
        rd_kafka_conf_set(conf, "log_level", "3", err, sizeof err);
        rk_ = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
        if (!rk_) throw std::runtime_error(std::string("mock cluster handle: ") + err);
        cluster_ = rd_kafka_mock_cluster_new(rk_, 1);
        if (!cluster_) throw std::runtime_error("rd_kafka_mock_cluster_new failed");
        bootstraps_ = rd_kafka_mock_cluster_bootstraps(cluster_);
    }
    ~MockCluster() {
        rd_kafka_mock_cluster_destroy(cluster_);
        rd_kafka_destroy(rk_);
        rd_kafka_wait_destroyed(5000);
    }

    const std::string& bootstraps() const { return bootstraps_; }
    rd_kafka_mock_cluster_t* get() { return cluster_; }

    void create_topic(const std::string& topic, int partitions) {
        BOOST_REQUIRE_EQUAL(rd_kafka_mock_topic_create(cluster_, topic.c_str(), partitions, 1),
                            RD_KAFKA_RESP_ERR_NO_ERROR);
    }

  private:
    rd_kafka_t* rk_ = nullptr;
    rd_kafka_mock_cluster_t* cluster_ = nullptr;
    std::string bootstraps_;
};

inline MockCluster& mock() {
    static MockCluster cluster;
    return cluster;
}

// Reads a topic with a plain consumer: assigned partitions (no group join), from the beginning, or from the
// group's committed offsets when `group` is given.
inline std::vector<hydra::Message> read_topic(const std::string& topic, int partitions, std::size_t expected,
                                              std::chrono::milliseconds timeout, const std::string& group = {}) {
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    conf->set("bootstrap.servers", mock().bootstraps(), err);
    conf->set("group.id", group.empty() ? "reader-" + topic : group, err);
    conf->set("enable.auto.commit", "false", err);
    std::unique_ptr<RdKafka::KafkaConsumer> consumer(RdKafka::KafkaConsumer::create(conf.get(), err));
    BOOST_REQUIRE_MESSAGE(consumer, err);
    std::vector<RdKafka::TopicPartition*> assignment;
    for (int p = 0; p < partitions; ++p) {
        assignment.push_back(RdKafka::TopicPartition::create(
            topic, p, group.empty() ? RdKafka::Topic::OFFSET_BEGINNING : RdKafka::Topic::OFFSET_STORED));
    }
    consumer->assign(assignment);
    RdKafka::TopicPartition::destroy(assignment);
    std::vector<hydra::Message> out;
    auto until = std::chrono::steady_clock::now() + timeout;
    while (out.size() < expected && std::chrono::steady_clock::now() < until) {
        std::unique_ptr<RdKafka::Message> m(consumer->consume(100));
        if (m->err() != RdKafka::ERR_NO_ERROR) continue;
        hydra::Message message;
        message.id = std::to_string(m->partition());  // the partition it was read from
        message.payload.assign(static_cast<const char*>(m->payload()), m->len());
        if (RdKafka::Headers* headers = m->headers()) {
            for (const auto& h : headers->get_all())
                message.headers[h.key()] = std::string(static_cast<const char*>(h.value()), h.value_size());
        }
        out.push_back(std::move(message));
    }
    consumer->close();
    return out;
}

inline std::int64_t high_watermark(const std::string& topic, int partition) {
    std::string err;
    std::unique_ptr<RdKafka::Conf> conf(RdKafka::Conf::create(RdKafka::Conf::CONF_GLOBAL));
    conf->set("bootstrap.servers", mock().bootstraps(), err);
    std::unique_ptr<RdKafka::Producer> producer(RdKafka::Producer::create(conf.get(), err));
    BOOST_REQUIRE_MESSAGE(producer, err);
    std::int64_t low = -1, high = -1;
    BOOST_REQUIRE_EQUAL(producer->query_watermark_offsets(topic, partition, &low, &high, 5000), RdKafka::ERR_NO_ERROR);
    return high;
}

}  // namespace test
