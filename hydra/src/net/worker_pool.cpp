#include "net/worker_pool.h"

#include <pthread.h>

#include <hydra/log.h>

namespace hydra {

WorkerPool::WorkerPool(std::size_t threads, std::string name) : name_(std::move(name)) {
    for (std::size_t i = 0; i < threads; ++i) {
        threads_.emplace_back([this, i] {
            std::string tname = (name_ + "-" + std::to_string(i)).substr(0, 15);
            pthread_setname_np(pthread_self(), tname.c_str());
            run();
        });
    }
}

WorkerPool::~WorkerPool() { stop(); }

void WorkerPool::post(std::function<void()> task) {
    {
        std::lock_guard lock(mutex_);
        if (stopping_) return;
        tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
}

void WorkerPool::stop() {
    {
        std::lock_guard lock(mutex_);
        if (stopping_ && threads_.empty()) return;
        stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
    threads_.clear();
}

void WorkerPool::run() {
    for (;;) {
        std::function<void()> task;
        {
            std::unique_lock lock(mutex_);
            cv_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
            if (tasks_.empty()) return;  // stopping and drained
            task = std::move(tasks_.front());
            tasks_.pop_front();
        }
        try {
            task();
        } catch (const std::exception& e) {
            Logger().error(name_ + ": task failed: " + e.what());
        } catch (...) {
            Logger().error(name_ + ": task failed with an unknown exception");
        }
    }
}

}  // namespace hydra
