// The reads or writes of one loop iteration, on any number of sockets, in one system call: io_uring (liburing)
// where the kernel allows it, else one recv(2) or sendmsg(2) each. A loop that serves many connections per
// iteration (the API's posts and their 200s after a group commit, the WS frames of a fan-out) spends much of a
// small read's or write's cost entering and leaving the kernel: README "Batched reads and writes".
//
// Every operation is nonblocking (MSG_DONTWAIT; sends MSG_NOSIGNAL): its result is what recv(2) or sendmsg(2) would
// have returned, the bytes read or written (possibly fewer than asked; 0 for a read: the peer closed) or -errno
// (-EAGAIN: nothing to read, or the socket's buffer is full). Plain sockets only: TLS goes through OpenSSL.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace hydra {

// One nonblocking write of `count` buffers to a plain socket (send(2) for one, else sendmsg(2)), as IoBatch makes
// it without io_uring: the bytes written, or -1 with errno.
ssize_t send_buffers(int fd, const iovec* iov, int count);

class IoBatch {
  public:
    // At most this many buffers per send (the rest of a connection's output waits for the next write).
    static constexpr int kMaxIov = 64;

    // `use_io_uring` false: one system call per operation, always. True: io_uring when the kernel allows it (not
    // before Linux 5.6, not under seccomp profiles that block it, not with kernel.io_uring_disabled); when it does
    // not, the same as false, said once in the log.
    explicit IoBatch(bool use_io_uring);
    ~IoBatch();
    IoBatch(const IoBatch&) = delete;
    IoBatch& operator=(const IoBatch&) = delete;

    // Adds a send of `count` (1..kMaxIov) buffers to `fd`, reported under `tag`. The bytes must stay where they
    // are until run() returns.
    void add_send(int fd, const iovec* iov, int count, std::uint64_t tag);
    // Adds a read of up to `size` bytes from `fd` into `buffer`, which must stay valid until run() returns.
    void add_recv(int fd, void* buffer, std::size_t size, std::uint64_t tag);
    bool empty() const { return ops_.empty(); }

    // Runs everything added, then reports each result, in the order added, and forgets them. `done` must not add
    // or run; what it throws is dropped (the other results are still reported).
    void run(const std::function<void(std::uint64_t tag, ssize_t result)>& done);

    // True while operations go through io_uring (false from the start, or after the kernel refused it).
    bool uses_io_uring() const { return ring_ != nullptr; }

  private:
    struct Op {
        int fd;
        bool recv;
        std::uint32_t first;  // into iov_
        std::uint32_t count;
        std::uint64_t tag;
        ssize_t result;
    };
    struct Ring;

    void run_directly(std::size_t from, std::size_t to);
    // At most the ring's size. Should the ring fail, what it did not take runs directly and the ring goes.
    void run_through_ring(std::size_t from, std::size_t to);

    std::unique_ptr<Ring> ring_;
    std::vector<Op> ops_;
    std::vector<iovec> iov_;
    std::vector<Op> reporting_;  // the run being reported
};

}  // namespace hydra
