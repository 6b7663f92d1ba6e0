#include "net/send_batch.h"

#include <liburing.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include <hydra/log.h>

namespace hydra {

namespace {

constexpr unsigned kRingEntries = 256;  // sends per system call at most; a larger batch takes several
constexpr int kFlags = MSG_DONTWAIT | MSG_NOSIGNAL;

}  // namespace

struct SendBatch::Ring {
    io_uring ring{};
    std::vector<msghdr> messages;  // of the sends with several buffers, for the kernel to read at submission
    ~Ring() { io_uring_queue_exit(&ring); }
};

SendBatch::SendBatch(bool use_io_uring) {
    if (!use_io_uring) return;
    auto ring = std::make_unique<Ring>();
    // SUBMIT_ALL (Linux 5.18): a send that fails at submission does not hold back the ones after it.
    int r = io_uring_queue_init(kRingEntries, &ring->ring, IORING_SETUP_SUBMIT_ALL);
    if (r == -EINVAL) r = io_uring_queue_init(kRingEntries, &ring->ring, 0);
    if (r < 0) {
        static std::atomic<bool> said{false};  // once, not once per loop
        if (!said.exchange(true))
            Logger().info(std::string("net: io_uring unavailable (") + strerror(-r) + "): one system call per write");
        return;
    }
    ring->messages.resize(kRingEntries);
    ring_ = std::move(ring);
}

SendBatch::~SendBatch() = default;

void SendBatch::add(int fd, const iovec* iov, int count, std::uint64_t tag) {
    const auto first = static_cast<std::uint32_t>(iov_.size());
    iov_.insert(iov_.end(), iov, iov + count);
    sends_.push_back(Send{fd, first, static_cast<std::uint32_t>(count), tag, 0});
}

void SendBatch::send_all(const std::function<void(std::uint64_t, ssize_t)>& done) {
    if (sends_.empty()) return;
    for (std::size_t from = 0; from < sends_.size(); from += kRingEntries) {
        const std::size_t to = std::min(sends_.size(), from + kRingEntries);
        if (ring_)
            send_through_ring(from, to);
        else
            send_directly(from, to);
    }
    reporting_.swap(sends_);
    sends_.clear();
    iov_.clear();
    for (const Send& s : reporting_) done(s.tag, s.result);
    reporting_.clear();
}

void SendBatch::send_directly(std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) {
        Send& s = sends_[i];
        ssize_t n;
        do {
            if (s.count == 1) {
                n = ::send(s.fd, iov_[s.first].iov_base, iov_[s.first].iov_len, kFlags);
            } else {
                msghdr msg{};
                msg.msg_iov = &iov_[s.first];
                msg.msg_iovlen = s.count;
                n = ::sendmsg(s.fd, &msg, kFlags);
            }
        } while (n < 0 && errno == EINTR);
        s.result = n < 0 ? -errno : n;
    }
}

void SendBatch::send_through_ring(std::size_t from, std::size_t to) {
    io_uring& ring = ring_->ring;
    const auto count = static_cast<unsigned>(to - from);
    for (std::size_t i = from; i < to; ++i) {
        Send& s = sends_[i];
        s.result = -EIO;  // a send whose completion never came (cannot happen) counts as failed, never as unsent
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);  // never null: the ring is empty and count <= its size
        if (s.count == 1) {
            io_uring_prep_send(sqe, s.fd, iov_[s.first].iov_base, iov_[s.first].iov_len, kFlags);
        } else {
            msghdr& msg = ring_->messages[i - from];
            msg = msghdr{};
            msg.msg_iov = &iov_[s.first];
            msg.msg_iovlen = s.count;
            io_uring_prep_sendmsg(sqe, s.fd, &msg, kFlags);
        }
        io_uring_sqe_set_data64(sqe, i);
    }
    // One system call: submits them all and returns once all have completed, which nonblocking sends do at once.
    unsigned submitted = 0;
    while (submitted < count) {
        int r = io_uring_submit_and_wait(&ring, count - submitted);
        if (r == -EINTR || r == -EAGAIN || r == -EBUSY) continue;
        if (r < 0) {
            // Nothing of this call went to the kernel. Those submitted before are waited for below.
            Logger().error(std::string("net: io_uring submit failed (") + strerror(-r) +
                           "); one system call per write from now on");
            break;
        }
        submitted += static_cast<unsigned>(r);
    }
    unsigned seen = 0;
    while (seen < submitted) {
        io_uring_cqe* cqe = nullptr;
        int r = io_uring_wait_cqe(&ring, &cqe);
        if (r == -EINTR) continue;
        if (r < 0) break;  // (cannot happen with sends in flight: they complete or fail)
        sends_[io_uring_cqe_get_data64(cqe)].result = cqe->res;
        io_uring_cqe_seen(&ring, cqe);
        ++seen;
    }
    if (submitted == count && seen == count) return;
    // The ring failed: the sends it did not take go directly, the ring goes (dropping what it still holds).
    send_directly(from + submitted, to);
    ring_.reset();
}

}  // namespace hydra
