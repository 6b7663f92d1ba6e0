// Waiting on something observable, never on the clock alone: a test that needs "eventually" polls a condition with a
// deadline, so a regression fails the case after `timeout` instead of hanging the suite, and a slow machine only
// makes the wait longer. Deadlines are generous (seconds): they bound a failure, they do not measure speed.
#pragma once

#include <chrono>
#include <functional>
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

}  // namespace test
