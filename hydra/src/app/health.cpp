#include "app/health.h"

#include <pthread.h>

#include <hydra/log.h>

namespace hydra {

std::pair<int, Json> HostHealth::probe(bool ready) {
    std::lock_guard lock(mutex_);
    if (ready) {
        Json reasons = Json::array();
        if (!listening_) reasons.push_back("not listening");
        if (draining_) reasons.push_back("draining");
        if (!queue_unready_.empty()) reasons.push_back(queue_unready_);
        if (reasons.empty()) return {200, Json{{"status", "ready"}}};
        return {503, Json{{"status", "unready"}, {"reasons", std::move(reasons)}}};
    }
    const std::int64_t now = steady_ms();
    Json stuck = Json::array();
    for (const auto& [name, beat] : beats_)
        if (now - beat->load(std::memory_order_relaxed) > kStuckAfter.count()) stuck.push_back(name);
    if (!stuck.empty()) return {503, Json{{"status", "unhealthy"}, {"stuck", std::move(stuck)}}};
    Json servers = Json::object();
    servers["api"] = api_address_;
    if (exchange_ != nullptr) servers["ws"] = {{"connections", exchange_->connections()}};
    if (!queue_backend_.empty()) servers["queue"] = queue_backend_;
    return {200, Json{{"status", "ok"},
                      {"plat", options_.plat},
                      {"system", options_.system},
                      {"version", options_.version},
                      {"servers", std::move(servers)}}};
}

void HostHealth::watch(const Heartbeats& beats) {
    std::lock_guard lock(mutex_);
    for (const auto& [name, beat] : beats) beats_[name] = beat;
}

void HostHealth::forget(const Heartbeats& beats) {
    std::lock_guard lock(mutex_);
    for (const auto& [name, beat] : beats) beats_.erase(name);
}

void HostHealth::describe(std::string api_address, Exchange* exchange, std::string queue_backend) {
    std::lock_guard lock(mutex_);
    api_address_ = std::move(api_address);
    exchange_ = exchange;
    queue_backend_ = std::move(queue_backend);
}

void HostHealth::set_exchange(Exchange* exchange) {
    std::lock_guard lock(mutex_);
    exchange_ = exchange;
}

void HostHealth::set_listening(bool listening) {
    std::lock_guard lock(mutex_);
    listening_ = listening;
}

void HostHealth::set_draining(bool draining) {
    std::lock_guard lock(mutex_);
    draining_ = draining;
}

bool HostHealth::draining() const {
    std::lock_guard lock(mutex_);
    return draining_;
}

void HostHealth::start_checking(queue::Backend* queue) {
    stop_checking();
    {
        std::lock_guard lock(mutex_);
        checker_stop_ = false;
        queue_unready_.clear();
    }
    checker_ = std::thread([this, queue] {
        pthread_setname_np(pthread_self(), "health-check");
        std::unique_lock lock(mutex_);
        while (!checker_stop_) {
            lock.unlock();
            std::string unready;
            try {
                unready = queue->check_ready(kQueueCheckTimeout);
            } catch (const std::exception& e) {
                unready = std::string("queue: ") + e.what();
            }
            lock.lock();
            if (unready != queue_unready_) {
                if (unready.empty())
                    Logger().info("ready again: the queue backend takes messages");
                else
                    Logger().warn("not ready: " + unready);
                queue_unready_ = std::move(unready);
            }
            checker_cv_.wait_for(lock, kQueueCheckEvery, [&] { return checker_stop_; });
        }
    });
}

void HostHealth::stop_checking() {
    {
        std::lock_guard lock(mutex_);
        checker_stop_ = true;
    }
    checker_cv_.notify_all();
    if (checker_.joinable()) checker_.join();
}

}  // namespace hydra
