// Failed logins counted per user name, per connection and per client address: after `max_failures` (per address:
// `max_failures_per_address`) within `window`, further attempts on that user, from that connection or from that
// address are refused for `block` without checking the password.
#pragma once

#include <chrono>
#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace services::push {

class LoginThrottle {
  public:
    using Clock = std::chrono::steady_clock;
    struct Limits {
        int max_failures = 5;
        int max_failures_per_address = 20;  // an address may hold many users' devices (NAT): a higher bar
        std::chrono::seconds window{60};
        std::chrono::seconds block{60};
    };
    // Keys tracked at most (a spray of made-up user names must not grow memory without bound); past it, expired
    // entries are dropped, and if none are, new keys go untracked until some expire.
    static constexpr std::size_t kMaxTracked = 100000;

    void set_limits(Limits limits);

    // A login attempt: who it claims to be, the connection (uuid) and the client's address it comes from.
    struct Attempt {
        const std::string& user;
        const std::string& connection;
        const std::string& address;  // empty: not counted
    };
    // How long the attempt's user, connection or address is still blocked, if it is.
    std::optional<std::chrono::seconds> blocked(const Attempt& a);
    void failed(const Attempt& a);
    // Forgets the user's and the connection's failures (not the address's: a guesser with an account of its own
    // must not be able to reset it).
    void succeeded(const Attempt& a);

  private:
    struct Entry {
        int failures = 0;
        Clock::time_point window_start;
        Clock::time_point blocked_until;
    };
    void fail_one(const std::string& key, int max_failures, Clock::time_point now);
    void sweep(Clock::time_point now);

    std::mutex mutex_;
    Limits limits_;
    std::unordered_map<std::string, Entry> entries_;  // "u:<user>", "c:<connection uuid>", "a:<address>"
};

}  // namespace services::push
