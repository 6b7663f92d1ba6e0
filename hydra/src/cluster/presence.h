// Who holds which connection on the other hosts of the cluster, from the records of the presence topic:
//   "node:<id>" → a beat of host <id> (no value: the host left);
//   "conn:<uuid>" → {"node": <id>, "user": <user>} (no value: the connection closed).
// Pure: no Kafka and no clock of its own (the caller passes the time), so it is tested with invented records.
// Thread-safe: records are applied by the cluster's consumer thread while any thread routes.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>

namespace hydra::cluster {

class Presence {
  public:
    // `self`: this host's id (its own connections are known locally, never from presence). A host is alive while
    // its last beat is at most 3 heartbeats old.
    Presence(std::string self, std::chrono::milliseconds heartbeat);

    // One record of the presence topic, received at `now_ms`. Unknown keys and unreadable values are ignored.
    void apply(std::string_view key, const std::string* value, std::int64_t now_ms);

    // The live host (not this one) holding `uuid`; nullopt when unknown or its host is silent.
    std::optional<std::string> owner(std::string_view uuid, std::int64_t now_ms) const;
    // The live hosts holding connections of `user`, and how many connections they hold.
    struct UserHosts {
        std::set<std::string> hosts;
        std::size_t connections = 0;
    };
    UserHosts hosts_of(std::string_view user, std::int64_t now_ms) const;
    // Connections held by live hosts.
    std::size_t connections(std::int64_t now_ms) const;
    // Live hosts, this one included.
    std::size_t live_hosts(std::int64_t now_ms) const;
    // Connections known (live hosts or not).
    std::size_t entries() const;

  private:
    struct Remote {
        std::string host;
        std::string user;
    };
    bool alive(const std::string& host, std::int64_t now_ms) const;  // with the lock held
    void forget(const std::string& uuid);                            // with the lock held

    const std::string self_;
    const std::int64_t silence_ms_;
    mutable std::shared_mutex mutex_;
    std::unordered_map<std::string, Remote> remote_;                // uuid → host, user
    std::unordered_map<std::string, std::set<std::string>> users_;  // user → uuids
    std::unordered_map<std::string, std::int64_t> last_seen_ms_;    // host → its last beat
};

}  // namespace hydra::cluster
