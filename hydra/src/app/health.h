// The host's own /healthz (liveness) and /readyz (readiness), answered on both HTTP listeners.
//   /healthz: 200 with what this host runs while every I/O loop and the queue's writer turned within the last
//             second; else 503 {"status":"unhealthy","stuck":["ws-io-1", ...]}.
//   /readyz:  200 {"status":"ready"} while the servers listen, the queue backend can take messages (checked by a
//             thread of its own, at most every second, so probes stay cheap) and the host is not draining; else
//             503 {"status":"unready","reasons":[...]}.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <hydra/app.h>
#include <hydra/exchange.h>
#include <hydra/json.h>

#include "net/heartbeat.h"
#include "queue/backend.h"

namespace hydra {

class HostHealth {
  public:
    // A thread that has not turned for this long is stuck.
    static constexpr std::chrono::milliseconds kStuckAfter{1000};
    // The queue backend's readiness check: its timeout (a round trip to Kafka's brokers) and how often it runs.
    static constexpr std::chrono::milliseconds kQueueCheckTimeout{2000};
    static constexpr std::chrono::milliseconds kQueueCheckEvery{1000};

    explicit HostHealth(AppOptions options) : options_(std::move(options)) {}
    ~HostHealth() { stop_checking(); }
    HostHealth(const HostHealth&) = delete;
    HostHealth& operator=(const HostHealth&) = delete;

    // The status and body of GET /readyz (ready) or /healthz. Thread-safe, never blocks on I/O.
    std::pair<int, Json> probe(bool ready);

    // Threads to watch; forget() them before they stop on purpose.
    void watch(const Heartbeats& beats);
    void forget(const Heartbeats& beats);
    // What the 200 body of /healthz names. `exchange` must stay valid until set to null.
    void describe(std::string api_address, Exchange* exchange, std::string queue_backend);
    void set_exchange(Exchange* exchange);
    void set_listening(bool listening);
    void set_draining(bool draining);
    bool draining() const;

    // Checks `queue` (Backend::check_ready) on a thread of its own until stop_checking(), which must come before
    // `queue` is gone.
    void start_checking(queue::Backend* queue);
    void stop_checking();

  private:
    const AppOptions options_;
    mutable std::mutex mutex_;
    std::map<std::string, std::shared_ptr<const std::atomic<std::int64_t>>> beats_;
    std::string api_address_;
    Exchange* exchange_ = nullptr;
    std::string queue_backend_;
    bool listening_ = false;
    bool draining_ = false;
    std::string queue_unready_;  // the last check's answer

    std::thread checker_;
    std::condition_variable checker_cv_;
    bool checker_stop_ = false;
};

}  // namespace hydra
