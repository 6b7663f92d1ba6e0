#include "cluster/presence.h"

#include <mutex>

#include <hydra/json.h>

namespace hydra::cluster {

Presence::Presence(std::string self, std::chrono::milliseconds heartbeat)
    : self_(std::move(self)), silence_ms_(3 * heartbeat.count()) {}

bool Presence::alive(const std::string& host, std::int64_t now_ms) const {
    auto seen = last_seen_ms_.find(host);
    return seen != last_seen_ms_.end() && now_ms - seen->second <= silence_ms_;
}

void Presence::forget(const std::string& uuid) {
    auto old = remote_.find(uuid);
    if (old == remote_.end()) return;
    if (!old->second.user.empty()) {
        auto u = users_.find(old->second.user);
        if (u != users_.end()) {
            u->second.erase(uuid);
            if (u->second.empty()) users_.erase(u);
        }
    }
    remote_.erase(old);
}

void Presence::apply(std::string_view key, const std::string* value, std::int64_t now_ms) {
    if (key.starts_with("node:")) {
        std::string host(key.substr(5));
        std::unique_lock lock(mutex_);
        if (value)
            last_seen_ms_[host] = now_ms;
        else
            last_seen_ms_.erase(host);
        return;
    }
    if (!key.starts_with("conn:")) return;
    std::string uuid(key.substr(5));
    Json v = value ? parse_json_or_discarded(*value) : Json();  // parsed before taking the lock
    std::unique_lock lock(mutex_);
    forget(uuid);
    if (!v.is_object()) return;
    auto host = v.find("node");
    if (host == v.end() || !host->is_string()) return;
    std::string node = host->get<std::string>();
    if (node.empty() || node == self_) return;  // our own connections are known locally
    auto u = v.find("user");
    std::string user = u != v.end() && u->is_string() ? u->get<std::string>() : std::string();
    if (!user.empty()) users_[user].insert(uuid);
    remote_[std::move(uuid)] = Remote{std::move(node), std::move(user)};
}

std::optional<std::string> Presence::owner(std::string_view uuid, std::int64_t now_ms) const {
    std::shared_lock lock(mutex_);
    auto it = remote_.find(std::string(uuid));
    if (it == remote_.end() || !alive(it->second.host, now_ms)) return std::nullopt;
    return it->second.host;
}

Presence::UserHosts Presence::hosts_of(std::string_view user, std::int64_t now_ms) const {
    UserHosts found;
    std::shared_lock lock(mutex_);
    auto u = users_.find(std::string(user));
    if (u == users_.end()) return found;
    for (const auto& uuid : u->second) {
        const std::string& host = remote_.at(uuid).host;
        if (!alive(host, now_ms)) continue;
        found.hosts.insert(host);
        ++found.connections;
    }
    return found;
}

std::size_t Presence::connections(std::int64_t now_ms) const {
    std::shared_lock lock(mutex_);
    std::size_t n = 0;
    for (const auto& [uuid, r] : remote_)
        if (alive(r.host, now_ms)) ++n;
    return n;
}

std::size_t Presence::live_hosts(std::int64_t now_ms) const {
    std::shared_lock lock(mutex_);
    std::size_t n = 1;
    for (const auto& [host, seen] : last_seen_ms_)
        if (host != self_ && now_ms - seen <= silence_ms_) ++n;
    return n;
}

std::size_t Presence::entries() const {
    std::shared_lock lock(mutex_);
    return remote_.size();
}

}  // namespace hydra::cluster
