// Liveness of the threads that must keep going (I/O loops, the queue's writer): each stores its clock on every turn
// and turns at least every kHeartbeatMs; /healthz compares with now.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace hydra {

constexpr int kHeartbeatMs = 250;

// Steady clock in milliseconds: what heartbeats hold.
inline std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// Shared: a health check may hold it after its thread is gone.
using HeartbeatClock = std::shared_ptr<std::atomic<std::int64_t>>;
inline HeartbeatClock make_heartbeat() { return std::make_shared<std::atomic<std::int64_t>>(steady_ms()); }
inline void beat(const HeartbeatClock& clock) { clock->store(steady_ms(), std::memory_order_relaxed); }

// A thread's name ("ws-io-1", "queue-writer") and its heartbeat.
using Heartbeat = std::pair<std::string, std::shared_ptr<const std::atomic<std::int64_t>>>;
using Heartbeats = std::vector<Heartbeat>;

}  // namespace hydra
