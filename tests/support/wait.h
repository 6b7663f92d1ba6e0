// Waiting on something observable, never on the clock alone: a test that needs "eventually" polls a condition with a
// deadline, so a regression fails the case after `timeout` instead of hanging the suite, and a slow machine only
// makes the wait longer. Deadlines are generous (seconds): they bound a failure, they do not measure speed.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace test {

// Polls `done` every 5 ms until it returns true (→ true) or `timeout` passes (→ false, after one last look).
inline bool wait_until(const std::function<bool()>& done,
                       std::chrono::milliseconds timeout = std::chrono::milliseconds(20000)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return done();
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return true;
}

// A handler that must stay busy for exactly as long as a test needs calls pass(): it counts the caller and holds it
// until the test calls open(). Order instead of durations: "answered while the other is still held" cannot be
// mistaken for "answered quickly enough". The hold is bounded (a minute) only so that a failed case cannot hang.
class Gate {
  public:
    void pass() {
        std::unique_lock lock(mu_);
        ++entered_;
        cv_.wait_for(lock, std::chrono::seconds(60), [this] { return open_; });
    }
    void open() {
        std::lock_guard lock(mu_);
        open_ = true;
        cv_.notify_all();
    }
    int entered() {
        std::lock_guard lock(mu_);
        return entered_;
    }

  private:
    std::mutex mu_;
    std::condition_variable cv_;
    bool open_ = false;
    int entered_ = 0;
};

}  // namespace test
