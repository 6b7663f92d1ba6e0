// Unique temporary paths for tests (one directory per test process, removed at exit).
#pragma once

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

namespace test {

inline std::filesystem::path temp_dir() {
    static const std::filesystem::path dir = [] {
        auto d = std::filesystem::temp_directory_path() / ("hydra-test-" + std::to_string(::getpid()));
        std::filesystem::create_directories(d);
        static struct Cleanup {
            std::filesystem::path path;
            ~Cleanup() {
                std::error_code ec;
                std::filesystem::remove_all(path, ec);
            }
        } cleanup{d};
        return d;
    }();
    return dir;
}

// A fresh file name in temp_dir(), e.g. temp_path("queue.db") → /tmp/hydra-test-123/7-queue.db
inline std::string temp_path(const std::string& name) {
    static std::atomic<int> counter{0};
    return (temp_dir() / (std::to_string(++counter) + "-" + name)).string();
}

}  // namespace test
