// Raw TCP clients for the HTTP tests: every byte on the wire under the test's control, reads with deadlines,
// and the server's memory from /proc.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <boost/test/unit_test.hpp>

namespace test {

// One TCP connection to "host:port".
class RawHttp {
  public:
    // `rcvbuf`, `sndbuf`: fixed socket buffer sizes (0: the kernel's, which grow as the connection is used).
    // `source`: the local address to connect from (e.g. another loopback address than 127.0.0.1), or the kernel's.
    explicit RawHttp(const std::string& address, int rcvbuf = 0, int sndbuf = 0, const std::string& source = {}) {
        const auto colon = address.rfind(':');
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1))));
        inet_pton(AF_INET, address.substr(0, colon).c_str(), &sa.sin_addr);
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (rcvbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
        if (sndbuf > 0) setsockopt(fd_, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
        if (!source.empty()) {
            sockaddr_in local{};
            local.sin_family = AF_INET;
            inet_pton(AF_INET, source.c_str(), &local.sin_addr);
            if (::bind(fd_, reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) return;
        }
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    }
    ~RawHttp() { ::close(fd_); }
    RawHttp(const RawHttp&) = delete;
    RawHttp& operator=(const RawHttp&) = delete;

    bool connected() const { return connected_; }
    int fd() const { return fd_; }
    void send(const std::string& bytes) {
        BOOST_REQUIRE_EQUAL(::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(bytes.size()));
    }
    // Sends what the socket takes without blocking; returns the bytes taken (0 when its buffer is full).
    std::size_t send_some(const std::string& bytes) {
        ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        return n > 0 ? static_cast<std::size_t>(n) : 0;
    }

    // Reads until `done(received)`, the peer closes or the deadline passes; returns what arrived.
    template <class Done>
    const std::string& read_until(Done done, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (!done(in_) && !closed_) {
            const auto left =
                std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
            char buf[16384];
            const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n <= 0) {
                closed_ = true;
                break;
            }
            in_.append(buf, static_cast<std::size_t>(n));
        }
        return in_;
    }
    // Everything until the server closes the connection (or the deadline).
    const std::string& read_all(std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        return read_until([](const std::string&) { return false; }, timeout);
    }
    // Until `n` complete responses (heads and Content-Length bodies) arrived.
    const std::string& read_responses(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
        return read_until([n](const std::string& s) { return count_responses(s) >= n; }, timeout);
    }
    bool closed() const { return closed_; }

    static std::size_t count_responses(const std::string& s) {
        std::size_t count = 0, pos = 0;
        for (;;) {
            const auto end = s.find("\r\n\r\n", pos);
            if (end == std::string::npos) return count;
            const std::string head = s.substr(pos, end - pos);
            std::size_t length = 0;
            const auto cl = head.find("Content-Length: ");
            if (cl != std::string::npos) length = std::stoul(head.substr(cl + 16));
            if (s.size() < end + 4 + length) return count;
            pos = end + 4 + length;
            if (head.rfind("HTTP/1.1 100", 0) != 0) ++count;
        }
    }

  private:
    int fd_ = -1;
    bool connected_ = false;
    bool closed_ = false;
    std::string in_;
};

// Bytes sent on `c` that the server has not read yet: its end's receive queue in /proc/net/tcp (-1 if not found).
// 0 means the server has taken the whole request off the socket — observable progress for tests that need a request
// to be read (and so dispatched) before they send the next one.
// (Any connected IPv4 socket `fd` of the test's.)
inline long unread_by_server(int fd) {
    sockaddr_in me{}, peer{};
    socklen_t len = sizeof me;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len) != 0) return -1;
    len = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) != 0) return -1;
    // /proc/net/tcp prints an IPv4 address as its 32-bit value in hex, the port in host order.
    char local[32], remote[32];
    std::snprintf(local, sizeof local, "%08X:%04X", peer.sin_addr.s_addr, ntohs(peer.sin_port));
    std::snprintf(remote, sizeof remote, "%08X:%04X", me.sin_addr.s_addr, ntohs(me.sin_port));
    std::ifstream in("/proc/net/tcp");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        std::string slot, l, r, state, queues;
        if (!(fields >> slot >> l >> r >> state >> queues) || l != local || r != remote) continue;
        const auto colon = queues.find(':');  // "tx_queue:rx_queue"
        return colon == std::string::npos ? -1 : std::stol(queues.substr(colon + 1), nullptr, 16);
    }
    return -1;
}

inline long unread_by_server(const RawHttp& c) { return unread_by_server(c.fd()); }

// The status of the first response in `bytes` (0 if none).
inline int status_of(const std::string& bytes) {
    if (bytes.rfind("HTTP/1.1 ", 0) != 0 || bytes.size() < 12) return 0;
    return std::stoi(bytes.substr(9, 3));
}

// A process's memory in KiB from /proc/<pid>/status: "VmRSS" (resident) or "VmSize" (address space); 0 if unknown.
inline long memory_kib(int pid, const std::string& field = "VmRSS") {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
    return 0;
}

// One GET on a fresh connection: its round trip in milliseconds, or -1 when no 200 came within `timeout`.
inline double timed_get(const std::string& address, const std::string& path,
                        std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    const auto start = std::chrono::steady_clock::now();
    RawHttp c(address);
    if (!c.connected()) return -1;
    c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string& in = c.read_responses(1, timeout);
    if (status_of(in) != 200) return -1;
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
}

// The p-th percentile (0..100) of `samples`.
inline double percentile(std::vector<double> samples, double p) {
    if (samples.empty()) return 0;
    std::sort(samples.begin(), samples.end());
    const auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(samples.size() - 1) + 0.5);
    return samples[std::min(i, samples.size() - 1)];
}

}  // namespace test
