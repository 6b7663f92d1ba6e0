// Failed logins counted per user name and per connection: after `max_failures` within `window`, further attempts
// on that user or from that connection are refused for `block` without checking the password.
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
        std::chrono::seconds window{60};
        std::chrono::seconds block{60};
    };
    // Keys tracked at most (a spray of made-up user names must not grow memory without bound); past it, expired
    // entries are dropped, and if none are, new keys go untracked until some expire.
    static constexpr std::size_t kMaxTracked = 100000;

    void set_limits(Limits limits);

    // How long `user` or `connection` is still blocked, if it is.
    std::optional<std::chrono::seconds> blocked(const std::string& user, const std::string& connection);
    void failed(const std::string& user, const std::string& connection);
    void succeeded(const std::string& user, const std::string& connection);

  private:
    struct Entry {
        int failures = 0;
        Clock::time_point window_start;
        Clock::time_point blocked_until;
    };
    void fail_one(const std::string& key, Clock::time_point now);
    void sweep(Clock::time_point now);

    std::mutex mutex_;
    Limits limits_;
    std::unordered_map<std::string, Entry> entries_;  // "u:<user>" and "c:<connection uuid>"
};

}  // namespace services::push
