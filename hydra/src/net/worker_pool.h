// A fixed pool of threads running posted tasks in FIFO order; for handlers that may block.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace hydra {

class WorkerPool {
  public:
    WorkerPool(std::size_t threads, std::string name);
    ~WorkerPool();
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    // Tasks must not throw (exceptions are caught and logged). Ignored after stop().
    void post(std::function<void()> task);
    // Runs what is queued, then joins the threads.
    void stop();
    // As stop(), waiting for the threads only until `deadline`: those still busy then (a handler that outlives a
    // shutdown timeout) are let go, and end by themselves once the queue is empty; they hold the pool's state, and
    // their tasks hold what they use. True when every thread ended in time.
    bool stop(std::chrono::steady_clock::time_point deadline);

  private:
    // Shared with the threads, so that a thread let go by stop() still has it.
    struct State {
        std::string name;
        std::mutex mutex;
        std::condition_variable work;   // a task or stopping, for the threads
        std::condition_variable ended;  // a thread ended, for stop()
        std::deque<std::function<void()>> tasks;
        bool stopping = false;
        std::size_t running = 0;  // threads not yet ended
    };
    static void run(State& state);
    bool stop_until(std::optional<std::chrono::steady_clock::time_point> deadline);

    std::shared_ptr<State> state_;
    std::vector<std::thread> threads_;
};

}  // namespace hydra
