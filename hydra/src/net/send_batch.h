// The writes of one loop iteration, to any number of sockets, in one system call: io_uring (liburing) where the
// kernel allows it, else one sendmsg(2) each. A loop that answers many connections per iteration (the API's 200s
// after a group commit, the WS frames of a fan-out) spends most of a small write's cost entering and leaving the
// kernel: measured in the README ("Batched writes").
//
// Every send is nonblocking (MSG_DONTWAIT, MSG_NOSIGNAL): its result is what sendmsg(2) would have returned, the
// bytes written (possibly fewer than given) or -errno (-EAGAIN: the socket's buffer is full). Plain sockets only:
// TLS writes go through OpenSSL.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

namespace hydra {

class SendBatch {
  public:
    // At most this many buffers per send (the rest of a connection's output waits for the next write).
    static constexpr int kMaxIov = 64;

    // `use_io_uring` false: one sendmsg(2) per send, always. True: io_uring when the kernel allows it (not
    // available before Linux 5.6, refused under seccomp profiles that block it or with kernel.io_uring_disabled);
    // when it does not, the same as false, said once in the log.
    explicit SendBatch(bool use_io_uring);
    ~SendBatch();
    SendBatch(const SendBatch&) = delete;
    SendBatch& operator=(const SendBatch&) = delete;

    // Adds a send of `count` (1..kMaxIov) buffers to `fd`, reported under `tag`. The bytes must stay where they
    // are until send_all() returns.
    void add(int fd, const iovec* iov, int count, std::uint64_t tag);
    bool empty() const { return sends_.empty(); }

    // Sends everything added, then reports each result, in the order added, and forgets them. `done` may add to
    // the next batch.
    void send_all(const std::function<void(std::uint64_t tag, ssize_t result)>& done);

    // True while sends go through io_uring (false from the start, or after the kernel refused it).
    bool uses_io_uring() const { return ring_ != nullptr; }

  private:
    struct Send {
        int fd;
        std::uint32_t first;  // into iov_
        std::uint32_t count;
        std::uint64_t tag;
        ssize_t result;
    };
    struct Ring;

    void send_directly(std::size_t from, std::size_t to);
    // At most kRingEntries sends. Should the ring fail, what it did not take is sent directly and it goes.
    void send_through_ring(std::size_t from, std::size_t to);

    std::unique_ptr<Ring> ring_;
    std::vector<Send> sends_;
    std::vector<iovec> iov_;
    std::vector<Send> reporting_;  // the batch being reported (send_all may be re-entered through `done`)
};

}  // namespace hydra
