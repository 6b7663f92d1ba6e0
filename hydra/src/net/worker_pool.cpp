#include "net/worker_pool.h"

#include <pthread.h>

#include <algorithm>

#include <hydra/log.h>

namespace hydra {

WorkerPool::WorkerPool(std::size_t threads, std::string name) : state_(std::make_shared<State>()) {
    state_->name = std::move(name);
    state_->running = threads;
    for (std::size_t i = 0; i < threads; ++i) {
        threads_.emplace_back([state = state_, i] {
            std::string tname = (state->name + "-" + std::to_string(i)).substr(0, 15);
            pthread_setname_np(pthread_self(), tname.c_str());
            run(*state);
        });
    }
}

WorkerPool::~WorkerPool() { stop(); }

void WorkerPool::post(std::function<void()> task) {
    {
        std::lock_guard lock(state_->mutex);
        if (state_->stopping) return;
        state_->tasks.push_back(std::move(task));
    }
    state_->work.notify_one();
}

void WorkerPool::stop() { stop_until(std::nullopt); }

bool WorkerPool::stop(std::chrono::steady_clock::time_point deadline) { return stop_until(deadline); }

bool WorkerPool::stop_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
    State& s = *state_;
    bool all_ended;
    {
        std::unique_lock lock(s.mutex);
        s.stopping = true;
        if (threads_.empty()) return s.running == 0;  // stopped before
        s.work.notify_all();
        // Called from a task (one that dropped the last owner of the pool): every thread but this one.
        const bool from_pool = std::any_of(threads_.begin(), threads_.end(), [](const std::thread& t) {
            return t.get_id() == std::this_thread::get_id();
        });
        auto ended = [&s, left = from_pool ? 1u : 0u] { return s.running == left; };
        if (deadline) {
            // The one timed wait: how long a task may still run is the caller's shutdown timeout.
            all_ended = s.ended.wait_until(lock, *deadline, ended);
        } else {
            s.ended.wait(lock, ended);
            all_ended = true;
        }
    }
    for (auto& t : threads_) {
        // Let go: a thread still in a task, or this very thread.
        if (!all_ended || t.get_id() == std::this_thread::get_id())
            t.detach();
        else
            t.join();
    }
    threads_.clear();
    return all_ended;
}

void WorkerPool::run(State& state) {
    for (;;) {
        std::function<void()> task;
        {
            std::unique_lock lock(state.mutex);
            state.work.wait(lock, [&state] { return state.stopping || !state.tasks.empty(); });
            if (state.tasks.empty()) {  // stopping and drained
                --state.running;
                state.ended.notify_all();
                return;
            }
            task = std::move(state.tasks.front());
            state.tasks.pop_front();
        }
        try {
            task();
        } catch (const std::exception& e) {
            Logger().error(state.name + ": task failed: " + e.what());
        } catch (...) {
            Logger().error(state.name + ": task failed with an unknown exception");
        }
    }
}

}  // namespace hydra
