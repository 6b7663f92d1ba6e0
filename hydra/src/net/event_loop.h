// One epoll I/O loop on its own thread: fd readiness callbacks, tasks posted from any thread (eventfd
// wake-up), and a periodic tick. Everything registered with a loop is touched only by that loop's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "net/heartbeat.h"

namespace hydra {

class EventLoop {
  public:
    // Called with the epoll events (EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP...) of a registered fd.
    class Handler {
      public:
        virtual ~Handler() = default;
        virtual void on_events(std::uint32_t events) = 0;
        // on_events threw (bad_alloc, a bug): the loop logged it and goes on; a connection closes itself here.
        // Must not throw.
        virtual void on_failure() noexcept {}
    };

    // `name` prefixes log lines ("ws: epoll_wait: ...") and the thread name ("ws-io-0").
    EventLoop(std::string name, int index, int tick_ms, std::function<void()> on_tick);
    ~EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    void start();
    // Stops after the current iteration; joins the thread. Tasks still queued are run first.
    void stop();

    // From the loop thread only.
    void add(int fd, std::uint32_t events, Handler* handler);
    void modify(int fd, std::uint32_t events, Handler* handler);
    void remove(int fd);
    // Runs `step`, work for `handler` (e.g. its part of a batched read or write), as the loop runs its events: a
    // failure (bad_alloc, a bug) is logged and ends that handler (on_failure), never the loop nor the others' work.
    template <class Step>
    void guarded(Handler& handler, Step&& step) noexcept {
        try {
            step();
        } catch (const std::exception& e) {
            failed(handler, e);
        }
    }
    // Runs at the end of the current iteration, after all events and tasks (used to batch writes).
    void defer(std::function<void()> fn) { deferred_.push_back(std::move(fn)); }
    std::int64_t now_ms() const { return now_ms_; }
    bool in_loop_thread() const { return std::this_thread::get_id() == thread_id_; }

    // From any thread: run `task` on the loop thread soon. Wakes the loop only when its queue was empty.
    void post(std::function<void()> task);

    // From the loop thread: tick every `tick_ms` from now on (e.g. finer while a drain spreads closes).
    void set_tick_ms(int tick_ms);
    int tick_ms() const { return tick_ms_; }

    // Liveness: the loop stores its clock on every iteration, and iterates at least every kHeartbeatMs even
    // without traffic.
    std::shared_ptr<const std::atomic<std::int64_t>> heartbeat() const { return heartbeat_; }
    // The thread's name: "<name>-io-<index>" ("ws-io-1").
    std::string thread_name() const { return name_ + "-io-" + std::to_string(index_); }

  private:
    void run();
    void run_tasks();
    void run_deferred();
    void failed(Handler& handler, const std::exception& e) noexcept;
    void update_clock();

    std::string name_;
    int index_;
    int tick_ms_;
    std::function<void()> on_tick_;
    int epoll_fd_ = -1;
    int wake_fd_ = -1;
    std::thread thread_;
    std::thread::id thread_id_;
    bool stopping_ = false;  // loop thread's copy
    std::int64_t now_ms_ = 0;
    std::int64_t next_tick_ms_ = 0;
    HeartbeatClock heartbeat_ = make_heartbeat();

    std::mutex tasks_mutex_;
    std::vector<std::function<void()>> tasks_;
    bool stop_requested_ = false;                 // guarded by tasks_mutex_
    std::vector<std::function<void()>> running_;  // swapped with tasks_ on the loop thread
    std::vector<std::function<void()>> deferred_;
};

}  // namespace hydra
