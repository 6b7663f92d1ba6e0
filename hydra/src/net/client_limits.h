// Per-client-address limits of a server (API, WS), shared by its I/O loops: open connections per address, and a request
// rate per address (a token bucket of `burst` requests refilled at `requests_per_s`, kept as one atomic "theoretical
// arrival time", GCRA, so a request's check takes no lock). An IPv6 client is its /64 (one host usually owns one).
// The table forgets an address once it has no connection open and its bucket is full again: its size is bounded by
// the open connections plus the addresses that made requests within the last burst / requests_per_s seconds.
#pragma once

#include <sys/socket.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace hydra {

// A client as the per-address limits count it: an IPv6 address cut to its /64, or an IPv4 address as its
// IPv4-mapped IPv6 address (::ffff:a.b.c.d, also when it came IPv4-mapped), so that both families share one table.
using ClientKey = std::array<std::uint8_t, 16>;
ClientKey client_key(const sockaddr_storage& addr);
// As text: "203.0.113.7", or "2001:db8:1:2::/64". What handlers see as Context::peer_address().
std::string client_key_text(const ClientKey& key);

class ClientLimits {
  public:
    struct Settings {
        int max_connections_per_ip = 0;  // 0: no limit
        int requests_per_s = 0;          // 0: no limit
        int burst = 1;                   // requests allowed at once (the bucket's size)
    };
    // One address: held by its open connections (and valid while one is open).
    struct Client {
        ClientKey key{};
        int connections = 0;                  // guarded by ClientLimits::mutex_
        std::atomic<std::int64_t> tat_us{0};  // when the bucket is full again (microseconds, steady clock)
    };

    explicit ClientLimits(Settings settings);
    // Whether any limit is on (else the server need not look at addresses at all).
    bool enabled() const { return settings_.max_connections_per_ip > 0 || settings_.requests_per_s > 0; }
    bool rate_limited() const { return interval_us_.load(std::memory_order_relaxed) > 0; }
    int requests_per_s() const { return requests_per_s_.load(std::memory_order_relaxed); }
    // A new rate (SIGHUP): from the next request on; buckets keep what they hold. 0 turns the rate limit off.
    void set_rate(int requests_per_s, int burst);
    const Settings& settings() const { return settings_; }

    // A new connection from `key`: its client, or nullptr when the address has max_connections_per_ip open.
    Client* open(const ClientKey& key);
    // That connection closed.
    void close(Client* client, std::int64_t now_us);
    // One request of `client` at `now_us`: 0 when it may go on, else the seconds to wait before the next one.
    int admit(Client& client, std::int64_t now_us) const;
    // Forgets idle addresses whose bucket is full again.
    void sweep(std::int64_t now_us);
    std::size_t size() const;

  private:
    struct KeyHash {
        std::size_t operator()(const ClientKey& k) const;
    };
    Settings settings_;
    std::atomic<int> requests_per_s_{0};
    std::atomic<std::int64_t> interval_us_{0};  // between two requests at the sustained rate
    std::atomic<std::int64_t> window_us_{0};    // interval × burst: how far ahead of now the bucket may be drawn
    mutable std::mutex mutex_;
    std::unordered_map<ClientKey, std::unique_ptr<Client>, KeyHash> clients_;
};

}  // namespace hydra
