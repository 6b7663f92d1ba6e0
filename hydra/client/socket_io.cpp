// The blocking client's socket I/O: every wait is a poll() with the time left until a deadline.
#include "socket_io.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <stdexcept>
#include <system_error>

namespace hydra::client {
namespace {

// Milliseconds left until `deadline`, rounded up so that a poll() with it does not wake just before the deadline.
int remaining_ms(Clock::time_point deadline) {
    const auto left = deadline - Clock::now();
    if (left <= Clock::duration::zero()) return 0;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
    return ms > 0x7FFFFFFF ? 0x7FFFFFFF : static_cast<int>(ms);
}

// Waits for `events` on fd. True when ready (or in error: the following call reports it), false at the deadline.
// No deadline (nullopt) waits forever.
bool wait_for(int fd, short events, std::optional<Clock::time_point> deadline) {
    for (;;) {
        pollfd p{fd, events, 0};
        const int r = ::poll(&p, 1, deadline ? remaining_ms(*deadline) : -1);
        if (r > 0) return true;
        if (r == 0) return false;
        if (errno != EINTR) throw std::runtime_error("WebSocket client: poll failed: " + errno_text(errno));
    }
}

}  // namespace

void UniqueFd::reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

std::string errno_text(int err) { return std::generic_category().message(err); }

std::chrono::milliseconds remaining(Clock::time_point deadline) {
    return std::chrono::milliseconds(remaining_ms(deadline));
}

void send_all(int fd, std::string_view bytes, std::optional<Clock::time_point> deadline, const std::string& what) {
    while (!bytes.empty()) {
        const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n > 0) {
            bytes.remove_prefix(static_cast<std::size_t>(n));
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!wait_for(fd, POLLOUT, deadline)) throw std::runtime_error(what + ": timed out (peer not reading)");
        } else {
            throw std::runtime_error(what + ": " + errno_text(n < 0 ? errno : EPIPE));
        }
    }
}

ReadResult read_some(int fd, char* buf, std::size_t cap, Clock::time_point deadline) {
    for (;;) {
        const ssize_t n = ::recv(fd, buf, cap, 0);
        if (n > 0) return {ReadResult::Status::data, static_cast<std::size_t>(n)};
        if (n == 0) return {ReadResult::Status::eof};
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return {ReadResult::Status::error, 0, errno};
        if (!wait_for(fd, POLLIN, deadline)) return {ReadResult::Status::timeout};
    }
}

void set_int_option(int fd, int level, int name, int value, const char* label) {
    if (::setsockopt(fd, level, name, &value, sizeof value) != 0)
        throw std::runtime_error(std::string("WebSocket client: setsockopt(") + label + "): " + errno_text(errno));
}

UniqueFd tcp_connect(const std::string& host, int port, const TcpOptions& options, Clock::time_point deadline,
                     const std::string& where) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    addrinfo* list = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &list);
    if (rc != 0) {
        const std::string detail = rc == EAI_SYSTEM ? errno_text(errno) : ::gai_strerror(rc);
        throw std::runtime_error("WebSocket connect to " + where + " failed: cannot resolve host: " + detail);
    }
    const std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(list, ::freeaddrinfo);

    std::string last_error = "no address";
    for (const addrinfo* ai = list; ai; ai = ai->ai_next) {
        UniqueFd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
        if (!fd) {
            last_error = "socket: " + errno_text(errno);
            continue;
        }
        // Buffer sizes must be set before connect(): the window scale is fixed by the SYN.
        if (options.receive_buffer > 0)
            set_int_option(fd.get(), SOL_SOCKET, SO_RCVBUF, options.receive_buffer, "SO_RCVBUF");
        if (options.send_buffer > 0) set_int_option(fd.get(), SOL_SOCKET, SO_SNDBUF, options.send_buffer, "SO_SNDBUF");
        // Frames are written whole; Nagle plus delayed ACKs would only add latency to small messages.
        set_int_option(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");

        if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) {
                last_error = errno_text(errno);
                continue;
            }
            if (!wait_for(fd.get(), POLLOUT, deadline))
                throw std::runtime_error("WebSocket connect to " + where + " failed: timed out after " +
                                         std::to_string(options.timeout.count()) + " ms");
            int err = 0;
            socklen_t len = sizeof err;
            if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
            if (err != 0) {
                last_error = errno_text(err);
                continue;
            }
        }
        return fd;
    }
    throw std::runtime_error("WebSocket connect to " + where + " failed: " + last_error);
}

}  // namespace hydra::client
