#include "net/client_limits.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace hydra {
ClientKey client_key(const sockaddr_storage& addr) {
    ClientKey key{};
    if (addr.ss_family == AF_INET) {
        const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
        key[10] = key[11] = 0xff;
        std::memcpy(key.data() + 12, &a->sin_addr, 4);
    } else if (addr.ss_family == AF_INET6) {
        const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
        std::memcpy(key.data(), &a->sin6_addr, 16);
        const bool v4_mapped = std::all_of(key.begin(), key.begin() + 10, [](std::uint8_t b) { return b == 0; }) &&
                               key[10] == 0xff && key[11] == 0xff;
        if (!v4_mapped) std::fill(key.begin() + 8, key.end(), 0);
    }
    return key;
}

std::string client_key_text(const ClientKey& key) {
    char buf[INET6_ADDRSTRLEN];
    const bool v4 = std::all_of(key.begin(), key.begin() + 10, [](std::uint8_t b) { return b == 0; }) &&
                    key[10] == 0xff && key[11] == 0xff;
    if (v4) {
        inet_ntop(AF_INET, key.data() + 12, buf, sizeof buf);
        return buf;
    }
    inet_ntop(AF_INET6, key.data(), buf, sizeof buf);
    return std::string(buf) + "/64";
}

std::size_t ClientLimits::KeyHash::operator()(const ClientKey& k) const {
    std::uint64_t a = 0, b = 0;
    std::memcpy(&a, k.data(), 8);
    std::memcpy(&b, k.data() + 8, 8);
    return std::hash<std::uint64_t>()(a * 0x9E3779B97F4A7C15ull ^ b);
}

ClientLimits::ClientLimits(Settings settings) : settings_(settings) {
    set_rate(settings_.requests_per_s, settings_.burst);
}

void ClientLimits::set_rate(int requests_per_s, int burst) {
    const std::int64_t interval = requests_per_s > 0 ? std::max<std::int64_t>(1, 1000000 / requests_per_s) : 0;
    window_us_.store(interval * std::max(1, burst), std::memory_order_relaxed);
    interval_us_.store(interval, std::memory_order_relaxed);
    requests_per_s_.store(requests_per_s, std::memory_order_relaxed);
}

ClientLimits::Client* ClientLimits::open(const ClientKey& key) {
    std::lock_guard lock(mutex_);
    auto [it, inserted] = clients_.try_emplace(key);
    if (inserted) {
        it->second = std::make_unique<Client>();
        it->second->key = key;
    }
    Client& client = *it->second;
    if (settings_.max_connections_per_ip > 0 && client.connections >= settings_.max_connections_per_ip) return nullptr;
    ++client.connections;
    return &client;
}

void ClientLimits::close(Client* client, std::int64_t now_us) {
    std::lock_guard lock(mutex_);
    if (--client->connections > 0 || client->tat_us.load(std::memory_order_relaxed) > now_us) return;
    const auto key = client->key;  // (not a reference into the node being erased)
    clients_.erase(key);
}

int ClientLimits::admit(Client& client, std::int64_t now_us) const {
    const std::int64_t interval_us = interval_us_.load(std::memory_order_relaxed);
    const std::int64_t window_us = window_us_.load(std::memory_order_relaxed);
    if (interval_us == 0) return 0;
    std::int64_t tat = client.tat_us.load(std::memory_order_relaxed);
    for (;;) {
        const std::int64_t next = std::max(tat, now_us) + interval_us;
        if (next - now_us > window_us) {
            // The bucket is empty: one token comes back after `interval`; whole seconds, rounded up.
            const std::int64_t wait_us = next - now_us - window_us;
            return static_cast<int>(std::max<std::int64_t>(1, (wait_us + 999999) / 1000000));
        }
        if (client.tat_us.compare_exchange_weak(tat, next, std::memory_order_relaxed)) return 0;
    }
}

void ClientLimits::sweep(std::int64_t now_us) {
    std::lock_guard lock(mutex_);
    for (auto it = clients_.begin(); it != clients_.end();) {
        const Client& c = *it->second;
        if (c.connections == 0 && c.tat_us.load(std::memory_order_relaxed) <= now_us)
            it = clients_.erase(it);
        else
            ++it;
    }
}

std::size_t ClientLimits::size() const {
    std::lock_guard lock(mutex_);
    return clients_.size();
}

}  // namespace hydra
