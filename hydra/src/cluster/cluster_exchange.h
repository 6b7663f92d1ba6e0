// The cluster: hosts sharing Kafka reach each other's WebSocket clients. An Exchange that delivers locally when
// it can and otherwise routes over three kinds of topics:
//   <prefix>.presence       who holds which uuid (and its user): one record per open/bind/close, read by all hosts
//   <prefix>.node.<node_id> directed messages for one host (notify/send/kick/bind/... of a uuid it holds)
//   <prefix>.bus            what every host must see (broadcast, publish to a channel)
// A Notify to a uuid on another host is one message to that host only; a publish or broadcast is one message
// that every host reads. A uuid whose owner is unknown (presence still loading) falls back to the bus.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <hydra/config.h>
#include <hydra/exchange.h>

#include "cluster/bus.h"
#include "cluster/presence.h"
#include "metrics/metrics.h"
#include "ws/ws_exchange.h"

namespace hydra::cluster {

class ClusterExchange : public Exchange {
  public:
    struct Settings {
        std::string node_id;  // cluster.node_id, or the one kept in cluster.node_id_file
        std::string brokers;
        std::map<std::string, std::string> properties;  // queue.kafka.properties (without empty values)
        std::string prefix = "hydra";                   // topic prefix: "<plat>.<system>" keeps apps apart
        std::chrono::milliseconds heartbeat{3000};      // a host silent for 3 heartbeats is considered gone
        bool create_topics = true;                      // queue.kafka.topics.create
        int partitions = 1;                             // cluster.topics.*
        int replication_factor = -1;
        std::chrono::milliseconds topics_timeout{5000};  // queue.kafka.topics.timeout_ms
        std::shared_ptr<metrics::Registry> metrics;      // set by the host when admin.metrics is on; null = none

        // Throws ConfigError for a node id file that cannot be read or written, or holds no valid id.
        static Settings from(const Config& config, const std::string& prefix);
    };

    // The id kept in `path`; when there is no such file, a new one, written there atomically (mode 0600). Throws
    // ConfigError when the file holds anything but one valid id (it is not replaced: the operator decides) or
    // cannot be written.
    static std::string node_id_from_file(const std::string& path);

    ClusterExchange(Settings settings, ws::WsExchange& local);
    ~ClusterExchange() override;

    // Connects, loads presence, starts routing. Throws std::runtime_error "cluster: ..." on invalid settings.
    void start();
    void stop();
    const std::string& node_id() const { return settings_.node_id; }

    bool notify(std::string_view uuid, const Json& data) override;
    bool notify_json(std::string_view uuid, std::string_view data_json) override;
    bool notify_confirmed(std::string_view uuid, const Json& data, std::function<void(bool)> written) override;
    std::size_t broadcast(const Json& data) override;
    bool bind(std::string_view user, std::string_view uuid) override;
    std::size_t notify_user(std::string_view user, const Json& data) override;
    bool subscribe(std::string_view uuid, std::string_view channel) override;
    bool unsubscribe(std::string_view uuid, std::string_view channel) override;
    // Delivers on this host and sends one bus message; returns the subscribers on this host.
    std::size_t publish(std::string_view channel, std::string_view payload) override;
    // Per-connection values live on the connection's host: set() of a remote uuid is forwarded, get() is local.
    bool set(std::string_view uuid, std::string_view key, const Json& value) override;
    std::optional<Json> get(std::string_view uuid, std::string_view key) const override;
    bool send(std::string_view uuid, std::string_view text) override;
    bool kick(std::string_view uuid, int code, std::string_view reason) override;
    // Connections on every live host (from presence).
    std::size_t connections() const override;
    std::size_t channels() const override;

    // Status: hosts seen alive, and whether presence has been read up to date.
    std::size_t live_nodes() const;
    bool presence_loaded() const { return bus_.presence_loaded(); }

  private:
    void on_local_presence(const std::string& uuid, const std::string& user, bool open);
    // Before each beat: after a broker outage that dropped presence records, once the local queue has drained,
    // announce every connection of this host again (and the closes that could not be announced).
    void resync_presence();
    void send_to(const std::string& node, const Json& message);
    void to_bus(const Json& message);
    // hydra_cluster_routed_total / route_failures_total for one message sent via "node" or "bus".
    void count(const Json& message, const char* via, bool queued);
    // Where a uuid lives: this host (""), another live host (its id), or unknown (nullopt).
    std::optional<std::string> owner(std::string_view uuid) const;
    bool route(std::string_view uuid, Json message);
    void handle(const std::string& topic, const std::string& key, const std::string* value);
    void apply(const Json& message);

    Settings settings_;
    ws::WsExchange& local_;
    Presence presence_;
    Bus bus_;
    std::uint64_t presence_resynced_ = 0;  // bus_.dropped() when presence was last announced again
    // Connections that closed while their tombstone could not be queued: sent with the resync (bounded).
    static constexpr std::size_t kMaxUnannounced = 1 << 20;
    std::mutex closed_mutex_;
    std::vector<std::string> closed_unannounced_;

    metrics::Family<metrics::Counter>* routed_ = nullptr;  // null: count nothing
    metrics::Counter* route_failures_ = nullptr;
    metrics::Registry::Collector collector_;
};

}  // namespace hydra::cluster
