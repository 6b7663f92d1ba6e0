#include "net/io_batch.h"

#include <liburing.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>

#include <hydra/log.h>

namespace hydra {

namespace {

constexpr unsigned kRingEntries = 256;  // operations per system call at most; a larger run takes several
constexpr int kSendFlags = MSG_DONTWAIT | MSG_NOSIGNAL;
constexpr int kRecvFlags = MSG_DONTWAIT;
constexpr std::size_t kMaxLength = 1u << 30;  // a submission's length is 32 bits: longer writes go in parts

// Why the ring will not do ("" when it will): it must complete a nonblocking read of an empty socket and a
// nonblocking write to a full one within the submitting call, with -EAGAIN, as recv(2) and send(2) would. (A
// kernel that instead waited for the socket inside io_uring would stall the loop in run().) The probe's completions
// are all reaped (or, when some never come, the ring is not used and its teardown cancels them).
std::string refusal(io_uring& ring) {
    int fds[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0)
        return std::string("probe: socketpair: ") + strerror(errno);
    char bytes[4096] = {};
    while (::send(fds[1], bytes, sizeof bytes, MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {  // fds[1]: full, nothing to read
    }
    io_uring_sqe* recv = io_uring_get_sqe(&ring);
    io_uring_prep_recv(recv, fds[1], bytes, 1, kRecvFlags);
    io_uring_sqe_set_data64(recv, 1);
    io_uring_sqe* send = io_uring_get_sqe(&ring);
    io_uring_prep_send(send, fds[1], bytes, 1, kSendFlags);
    io_uring_sqe_set_data64(send, 2);
    std::string why;
    if (io_uring_submit(&ring) != 2) why = "probe: submit failed";
    int answered = 0;
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(&ring, &cqe) == 0) {
        if (cqe->res != -EAGAIN && why.empty())
            why = "probe: a nonblocking operation answered " + std::to_string(cqe->res) + " instead of EAGAIN";
        ++answered;
        io_uring_cqe_seen(&ring, cqe);
    }
    if (why.empty() && answered != 2) why = "its nonblocking socket operations wait for the socket";
    close(fds[0]);
    close(fds[1]);
    return why;
}

}  // namespace

struct IoBatch::Ring {
    io_uring ring{};
    bool ready = false;            // set up: to be torn down
    std::vector<msghdr> messages;  // of the sends with several buffers, for the kernel to read at submission
    ~Ring() {
        if (ready) io_uring_queue_exit(&ring);  // (also cancels what may still wait in it)
    }
};

IoBatch::IoBatch(bool use_io_uring) {
    if (!use_io_uring) return;
    // The kernel's answer is the same for every loop: asked once per process.
    static std::mutex mutex;
    static std::optional<std::string> refused;  // "" when io_uring will do
    std::lock_guard lock(mutex);
    if (refused && !refused->empty()) return;
    auto ring = std::make_unique<Ring>();
    // SUBMIT_ALL (Linux 5.18): an operation that fails at submission does not hold back the ones after it.
    int r = io_uring_queue_init(kRingEntries, &ring->ring, IORING_SETUP_SUBMIT_ALL);
    if (r == -EINVAL) r = io_uring_queue_init(kRingEntries, &ring->ring, 0);
    ring->ready = r == 0;
    if (r < 0)
        refused = strerror(-r);
    else if (!refused)
        refused = refusal(ring->ring);
    if (!refused->empty()) {
        Logger().info("net: io_uring not used (" + *refused + "): one system call per socket read and write");
        return;
    }
    ring->messages.resize(kRingEntries);
    ring_ = std::move(ring);
}

IoBatch::~IoBatch() = default;

ssize_t send_buffers(int fd, const iovec* iov, int count) {
    // One buffer (an echo, one broadcast, a 200): send() spares the kernel copying a msghdr and an iovec.
    if (count == 1) return ::send(fd, iov[0].iov_base, iov[0].iov_len, kSendFlags);
    msghdr msg{};
    msg.msg_iov = const_cast<iovec*>(iov);
    msg.msg_iovlen = static_cast<std::size_t>(count);
    return ::sendmsg(fd, &msg, kSendFlags);
}

// Either adds the operation or throws (bad_alloc) having added none (an iovec left over is never read).
void IoBatch::add_send(int fd, const iovec* iov, int count, std::uint64_t tag) {
    const auto first = static_cast<std::uint32_t>(iov_.size());
    iov_.insert(iov_.end(), iov, iov + count);
    if (count == 1) iov_.back().iov_len = std::min(iov_.back().iov_len, kMaxLength);
    ops_.push_back(Op{fd, false, first, static_cast<std::uint32_t>(count), tag, 0});
}

void IoBatch::add_recv(int fd, void* buffer, std::size_t size, std::uint64_t tag) {
    const auto first = static_cast<std::uint32_t>(iov_.size());
    iov_.push_back(iovec{buffer, std::min(size, kMaxLength)});
    ops_.push_back(Op{fd, true, first, 1, tag, 0});
}

void IoBatch::run(const std::function<void(std::uint64_t, ssize_t)>& done) {
    if (ops_.empty()) return;
    // Whatever happens, nothing of this run is run or reported again.
    struct Forget {
        IoBatch& batch;
        ~Forget() {
            batch.ops_.clear();
            batch.iov_.clear();
            batch.reporting_.clear();
        }
    } forget{*this};
    for (std::size_t from = 0; from < ops_.size(); from += kRingEntries) {
        const std::size_t to = std::min(ops_.size(), from + kRingEntries);
        if (ring_ && to - from > 1)
            run_through_ring(from, to);
        else
            run_directly(from, to);  // (one operation: its own system call costs what the ring's would)
    }
    reporting_.swap(ops_);
    ops_.clear();
    iov_.clear();
    for (const Op& op : reporting_) {
        try {
            done(op.tag, op.result);
        } catch (...) {  // that one's failure (the caller's to handle); the others still get their results
        }
    }
}

void IoBatch::run_directly(std::size_t from, std::size_t to) {
    for (std::size_t i = from; i < to; ++i) {
        Op& op = ops_[i];
        const iovec& first = iov_[op.first];
        ssize_t n;
        do {
            n = op.recv ? ::recv(op.fd, first.iov_base, first.iov_len, kRecvFlags)
                        : send_buffers(op.fd, &first, static_cast<int>(op.count));
        } while (n < 0 && errno == EINTR);
        op.result = n < 0 ? -errno : n;
    }
}

void IoBatch::run_through_ring(std::size_t from, std::size_t to) {
    io_uring& ring = ring_->ring;
    const auto count = static_cast<unsigned>(to - from);
    for (std::size_t i = from; i < to; ++i) {
        Op& op = ops_[i];
        op.result = -EIO;  // an operation whose completion never came (cannot happen) counts as failed, not as none
        const iovec& first = iov_[op.first];
        io_uring_sqe* sqe = io_uring_get_sqe(&ring);  // never null: the ring is empty and count <= its size
        if (op.recv) {
            io_uring_prep_recv(sqe, op.fd, first.iov_base, first.iov_len, kRecvFlags);
        } else if (op.count == 1) {
            io_uring_prep_send(sqe, op.fd, first.iov_base, first.iov_len, kSendFlags);
        } else {
            msghdr& msg = ring_->messages[i - from];
            msg = msghdr{};
            msg.msg_iov = &iov_[op.first];
            msg.msg_iovlen = op.count;
            io_uring_prep_sendmsg(sqe, op.fd, &msg, kSendFlags);
        }
        io_uring_sqe_set_data64(sqe, i);
    }
    // One system call: submits them all and returns once all have completed, which nonblocking socket operations
    // do at once (MSG_DONTWAIT: a full or empty socket answers -EAGAIN rather than waiting).
    unsigned submitted = 0;
    int busy = 0;
    while (submitted < count) {
        int r = io_uring_submit_and_wait(&ring, count - submitted);
        if (r == -EINTR || ((r == -EAGAIN || r == -EBUSY) && ++busy < 3)) continue;
        if (r < 0) {
            // Nothing of this call went to the kernel. Those submitted before are waited for below.
            Logger().error(std::string("net: io_uring submit failed (") + strerror(-r) +
                           "); one system call per socket read and write from now on");
            break;
        }
        submitted += static_cast<unsigned>(r);
    }
    unsigned seen = 0;
    while (seen < submitted) {
        io_uring_cqe* cqe = nullptr;
        int r = io_uring_wait_cqe(&ring, &cqe);
        if (r == -EINTR) continue;
        if (r < 0) {  // (not seen: operations in flight complete or fail)
            Logger().error(std::string("net: io_uring wait failed (") + strerror(-r) +
                           "); one system call per socket read and write from now on");
            break;
        }
        const std::uint64_t i = io_uring_cqe_get_data64(cqe);
        io_uring_cqe_seen(&ring, cqe);
        if (i < from || i >= to) continue;  // (not one of ours)
        ops_[i].result = cqe->res;
        ++seen;
    }
    if (submitted == count && seen == count) return;
    // The ring failed: what it did not take runs directly, and the ring goes (dropping what it still holds).
    run_directly(from + submitted, to);
    ring_.reset();
}

}  // namespace hydra
