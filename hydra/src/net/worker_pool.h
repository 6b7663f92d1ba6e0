// A fixed pool of threads running posted tasks in FIFO order; for handlers that may block.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
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

  private:
    void run();

    std::string name_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> tasks_;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace hydra
