#include "cluster/cluster_gc.h"

#include <librdkafka/rdkafka.h>

#include <chrono>
#include <map>
#include <optional>
#include <vector>

#include "queue/kafka/admin.h"
#include "queue/kafka/conf.h"
#include "queue/kafka/kafka_queue.h"

namespace hydra::cluster {
namespace {

using namespace std::chrono_literals;

struct LastSeen {
    std::int64_t at_ms = 0;  // the record's timestamp
    bool stopped = false;    // a tombstone: the host stopped cleanly
};

// The last "node:<id>" record of every host in the presence topic, read from the beginning to the end.
std::optional<std::map<std::string, LastSeen>> read_presence(const Config& config, const std::string& topic,
                                                             int partitions, std::string& error) {
    std::map<std::string, std::string> properties = queue::KafkaQueue::properties_from(config);
    properties["bootstrap.servers"] = config.str("queue.kafka.brokers");
    properties["group.id"] = topic + ".gc";  // partitions are assigned by hand; nothing is committed
    properties["enable.auto.commit"] = "false";
    properties["enable.partition.eof"] = "true";
    properties["allow.auto.create.topics"] = "false";
    rd_kafka_conf_t* conf = queue::kafka::new_conf(properties, error);
    if (!conf) return std::nullopt;
    char text[512];
    rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, text, sizeof text);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        error = text;
        return std::nullopt;
    }
    rd_kafka_topic_partition_list_t* assignment = rd_kafka_topic_partition_list_new(partitions);
    for (int p = 0; p < partitions; ++p)
        rd_kafka_topic_partition_list_add(assignment, topic.c_str(), p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, assignment);
    rd_kafka_topic_partition_list_destroy(assignment);

    std::map<std::string, LastSeen> seen;
    int at_end = 0;
    auto deadline = std::chrono::steady_clock::now() + 60s;
    while (at_end < partitions && std::chrono::steady_clock::now() < deadline) {
        rd_kafka_message_t* m = rd_kafka_consumer_poll(rk, 200);
        if (!m) continue;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            ++at_end;
        } else if (m->err) {
            error = rd_kafka_message_errstr(m);
        } else if (m->key && m->key_len > 5 && std::string_view(static_cast<const char*>(m->key), 5) == "node:") {
            std::string node(static_cast<const char*>(m->key) + 5, m->key_len - 5);
            rd_kafka_timestamp_type_t type;
            seen[node] = {rd_kafka_message_timestamp(m, &type), m->payload == nullptr};
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    if (at_end < partitions) {
        error = "the presence topic " + topic + " was not read to its end within 60 s" +
                (error.empty() ? std::string() : ": " + error);
        return std::nullopt;
    }
    return seen;
}

}  // namespace

int gc(const Config& config, const std::string& prefix, bool dry_run, std::ostream& out, std::ostream& err) {
    const std::string presence = prefix + ".presence", node_prefix = prefix + ".node.";
    const std::int64_t ttl_ms = config.integer("cluster.node_ttl_s") * 1000;
    queue::KafkaAdmin admin(config.str("queue.kafka.brokers"), queue::KafkaQueue::properties_from(config));

    std::string error;
    auto topics = admin.topics(10s, error);
    if (!topics) {
        err << "hydra: cluster gc: cannot list the topics: " << error << "\n";
        return 1;
    }
    auto presence_topic = topics->find(presence);
    if (presence_topic == topics->end()) {
        err << "hydra: cluster gc: no topic " << presence << " (no host of " << prefix << " ever ran here)\n";
        return 1;
    }
    auto seen = read_presence(config, presence, presence_topic->second, error);
    if (!seen) {
        err << "hydra: cluster gc: " << error << "\n";
        return 1;
    }

    const std::int64_t now =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    std::vector<std::string> gone;
    for (const auto& [topic, partitions] : *topics) {
        if (topic.rfind(node_prefix, 0) != 0) continue;
        const std::string node = topic.substr(node_prefix.size());
        auto it = seen->find(node);
        std::string why;
        if (it == seen->end()) {
            why = "no heartbeat in " + presence;
        } else {
            const std::int64_t age_s = (now - it->second.at_ms) / 1000;
            if (!it->second.stopped && now - it->second.at_ms < ttl_ms) {
                out << "live " << topic << " (heartbeat " << age_s << " s ago)\n";
                continue;
            }
            why = (it->second.stopped ? "stopped " : "last heartbeat ") + std::to_string(age_s) + " s ago";
            if (now - it->second.at_ms < ttl_ms) {
                out << "kept " << topic << " (" << why << ", within cluster.node_ttl_s)\n";
                continue;
            }
        }
        out << "gone " << topic << " (" << why << ")\n";
        gone.push_back(topic);
    }
    if (dry_run || gone.empty()) return 0;

    int status = 0;
    for (const auto& [topic, failure] : admin.remove(gone, 30s)) {
        if (failure.empty()) {
            out << "deleted " << topic << "\n";
        } else {
            err << "hydra: cluster gc: cannot delete " << topic << ": " << failure << "\n";
            status = 1;
        }
    }
    return status;
}

}  // namespace hydra::cluster
