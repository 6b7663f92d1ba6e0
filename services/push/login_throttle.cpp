#include "services/push/login_throttle.h"

#include <algorithm>

namespace services::push {

void LoginThrottle::set_limits(Limits limits) {
    std::lock_guard lock(mutex_);
    limits_ = limits;
}

std::optional<std::chrono::seconds> LoginThrottle::blocked(const Attempt& a) {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    Clock::time_point until = now;
    for (const std::string& key : {"u:" + a.user, "c:" + a.connection, "a:" + a.address}) {
        auto it = entries_.find(key);
        if (it != entries_.end()) until = std::max(until, it->second.blocked_until);
    }
    if (until <= now) return std::nullopt;
    return std::chrono::ceil<std::chrono::seconds>(until - now);
}

void LoginThrottle::failed(const Attempt& a) {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    fail_one("u:" + a.user, limits_.max_failures, now);
    fail_one("c:" + a.connection, limits_.max_failures, now);
    if (!a.address.empty()) fail_one("a:" + a.address, limits_.max_failures_per_address, now);
}

void LoginThrottle::succeeded(const Attempt& a) {
    std::lock_guard lock(mutex_);
    entries_.erase("u:" + a.user);
    entries_.erase("c:" + a.connection);
}

void LoginThrottle::fail_one(const std::string& key, int max_failures, Clock::time_point now) {
    auto it = entries_.find(key);
    if (it == entries_.end()) {
        if (entries_.size() >= kMaxTracked) sweep(now);
        if (entries_.size() >= kMaxTracked) return;
        it = entries_.emplace(key, Entry{0, now, {}}).first;
    }
    Entry& e = it->second;
    if (now - e.window_start > limits_.window) {
        e.failures = 0;
        e.window_start = now;
    }
    if (++e.failures >= max_failures) {
        e.blocked_until = now + limits_.block;
        e.failures = 0;
        e.window_start = e.blocked_until;  // counting starts again when the block ends
    }
}

void LoginThrottle::sweep(Clock::time_point now) {
    std::erase_if(entries_, [&](const auto& kv) {
        return kv.second.blocked_until <= now && now - kv.second.window_start > limits_.window;
    });
}

}  // namespace services::push
