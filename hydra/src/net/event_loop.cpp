#include "net/event_loop.h"

#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <hydra/log.h>

namespace hydra {

namespace {
// Marks the eventfd in epoll's user data; handlers are never at this address.
EventLoop::Handler* const kWakeMarker = nullptr;
}  // namespace

EventLoop::EventLoop(std::string name, int index, int tick_ms, std::function<void()> on_tick)
    : name_(std::move(name)), index_(index), tick_ms_(std::max(1, tick_ms)), on_tick_(std::move(on_tick)) {
    update_clock();
    epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll_fd_ < 0 || wake_fd_ < 0) throw std::runtime_error(name_ + ": epoll/eventfd: " + strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.ptr = kWakeMarker;
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev);
}

EventLoop::~EventLoop() {
    stop();
    if (wake_fd_ >= 0) close(wake_fd_);
    if (epoll_fd_ >= 0) close(epoll_fd_);
}

void EventLoop::start() {
    thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), thread_name().c_str());
        run();
    });
}

void EventLoop::stop() {
    {
        std::lock_guard lock(tasks_mutex_);
        stop_requested_ = true;
    }
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
    if (thread_.joinable() && !in_loop_thread()) thread_.join();
}

void EventLoop::add(int fd, std::uint32_t events, Handler* handler) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = handler;
    if (epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0)
        throw std::runtime_error(name_ + ": epoll add: " + strerror(errno));
}

void EventLoop::modify(int fd, std::uint32_t events, Handler* handler) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = handler;
    epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &ev);
}

void EventLoop::remove(int fd) { epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, nullptr); }

void EventLoop::post(std::function<void()> task) {
    bool wake;
    {
        std::lock_guard lock(tasks_mutex_);
        wake = tasks_.empty();
        tasks_.push_back(std::move(task));
    }
    if (wake) {
        std::uint64_t one = 1;
        [[maybe_unused]] ssize_t n = write(wake_fd_, &one, sizeof one);
    }
}

void EventLoop::set_tick_ms(int tick_ms) {
    tick_ms_ = std::max(1, tick_ms);
    next_tick_ms_ = std::min(next_tick_ms_, now_ms_ + tick_ms_);
}

void EventLoop::update_clock() {
    now_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
                  .count();
    heartbeat_->store(now_ms_, std::memory_order_relaxed);
}

void EventLoop::run_tasks() {
    {
        std::lock_guard lock(tasks_mutex_);
        running_.swap(tasks_);
        if (stop_requested_) stopping_ = true;
    }
    for (auto& task : running_) {
        try {
            task();
        } catch (const std::exception& e) {
            Logger().error(name_ + ": loop task failed: " + e.what());
        }
    }
    running_.clear();
}

void EventLoop::run() {
    thread_id_ = std::this_thread::get_id();
    update_clock();
    next_tick_ms_ = now_ms_ + tick_ms_;
    constexpr int kMaxEvents = 256;
    epoll_event events[kMaxEvents];
    while (!stopping_) {
        // At least every kHeartbeatMs, so that an idle loop still shows it is alive.
        int timeout = static_cast<int>(std::clamp<std::int64_t>(next_tick_ms_ - now_ms_, 0, kHeartbeatMs));
        int n = epoll_wait(epoll_fd_, events, kMaxEvents, timeout);
        update_clock();
        if (n < 0 && errno != EINTR) {
            Logger().error(name_ + ": epoll_wait: " + strerror(errno));
            break;
        }
        bool woken = false;
        for (int i = 0; i < n; ++i) {
            auto* handler = static_cast<Handler*>(events[i].data.ptr);
            if (handler == kWakeMarker) {
                woken = true;
                continue;
            }
            // One connection's failure (out of memory, a bug) ends that connection, never the loop.
            guarded(*handler, [&] { handler->on_events(events[i].events); });
        }
        if (woken) {
            std::uint64_t count;
            [[maybe_unused]] ssize_t r = read(wake_fd_, &count, sizeof count);
        }
        run_tasks();
        if (now_ms_ >= next_tick_ms_) {
            next_tick_ms_ = now_ms_ + tick_ms_;
            try {
                on_tick_();
            } catch (const std::exception& e) {
                Logger().error(name_ + ": tick failed: " + e.what());
            }
        }
        run_deferred();
    }
    // The last tasks (answers that came while stopping) write what they produce.
    run_tasks();
    run_deferred();
}

void EventLoop::failed(Handler& handler, const std::exception& e) noexcept {
    try {
        Logger().error(name_ + ": event handling failed: " + e.what());
    } catch (...) {  // (out of memory even for the line)
    }
    handler.on_failure();
}

void EventLoop::run_deferred() {
    // Deferred work may defer more (a flush that closes): drain until quiet.
    while (!deferred_.empty()) {
        auto batch = std::move(deferred_);
        deferred_.clear();
        for (auto& fn : batch) {
            try {
                fn();
            } catch (const std::exception& e) {
                Logger().error(name_ + ": deferred task failed: " + e.what());
            }
        }
    }
}

}  // namespace hydra
