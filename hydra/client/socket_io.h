// The blocking client's socket I/O: POSIX sockets, non-blocking underneath so that every wait has a deadline.
// Internal to the client library (hydra/client); the WebSocket protocol is in ws_client.cpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace hydra::client {

using Clock = std::chrono::steady_clock;

// Owns a file descriptor: closes it when destroyed or reset.
class UniqueFd {
  public:
    UniqueFd() = default;
    explicit UniqueFd(int fd) : fd_(fd) {}
    UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    UniqueFd& operator=(UniqueFd&& other) noexcept {
        if (this != &other) {
            reset();
            fd_ = std::exchange(other.fd_, -1);
        }
        return *this;
    }
    UniqueFd(const UniqueFd&) = delete;
    UniqueFd& operator=(const UniqueFd&) = delete;
    ~UniqueFd() { reset(); }

    int get() const { return fd_; }
    explicit operator bool() const { return fd_ >= 0; }
    void reset();

  private:
    int fd_ = -1;
};

std::string errno_text(int err);

// Time left until `deadline`, rounded up to whole milliseconds (0 once it has passed).
std::chrono::milliseconds remaining(Clock::time_point deadline);

// Writes all of `bytes`; std::runtime_error (prefixed with `what`) on error or at the deadline (none: no limit).
void send_all(int fd, std::string_view bytes, std::optional<Clock::time_point> deadline, const std::string& what);

struct ReadResult {
    enum class Status { data, eof, timeout, error } status;
    std::size_t bytes = 0;
    int err = 0;
};
// One recv() of at most `cap` bytes, waiting until the deadline for something to arrive.
ReadResult read_some(int fd, char* buf, std::size_t cap, Clock::time_point deadline);

// setsockopt(fd, level, name, value); std::runtime_error naming `label` when it fails.
void set_int_option(int fd, int level, int name, int value, const char* label);

struct TcpOptions {
    int receive_buffer = 0;                // SO_RCVBUF before connect(); 0: system default
    int send_buffer = 0;                   // SO_SNDBUF before connect(); 0: system default
    std::chrono::milliseconds timeout{0};  // only for the message when the deadline passes
};
// Connects (getaddrinfo: IPv4 or IPv6, every address in turn) to the first address of `host` that accepts, within
// the deadline; TCP_NODELAY set. std::runtime_error starting "WebSocket connect to <where> failed" otherwise.
UniqueFd tcp_connect(const std::string& host, int port, const TcpOptions& options, Clock::time_point deadline,
                     const std::string& where);

}  // namespace hydra::client
