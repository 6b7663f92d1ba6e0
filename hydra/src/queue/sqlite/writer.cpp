// The writer: one thread that commits every pending operation (pushes, leases, acks, retries...) in one transaction
// (group commit), and what pushers call.
#include <pthread.h>

#include <algorithm>
#include <cstdint>

#include <hydra/log.h>

#include "queue/sqlite/checkpointer.h"
#include "queue/sqlite/parts.h"
#include "queue/sqlite/schema.h"

namespace hydra::queue {

using sqlite::kLazyCommit;

namespace {

// A transaction of fewer operations than this may wait for company (Settings::commit_delay), when the previous
// commit ended less than kSteady ago.
constexpr int kDelayBelow = 4;
constexpr int kDelaySlices = 4;  // the wait for company, in this many slices
constexpr int kEnough = 16;      // company enough: commit now
constexpr auto kSteady = std::chrono::milliseconds(1);

// The queue whose writer runs on this thread: what the writer delivers may be handled right there (a nonblocking
// MQC route), and a blocking push from such a handler would wait for its own thread.
thread_local const SqliteQueue* tls_writer_of = nullptr;

}  // namespace

SqliteQueue::Settings SqliteQueue::Settings::from(const Config& config) {
    Settings s;
    s.path = config.str("queue.sqlite.path");
    s.full_sync = config.str("queue.sqlite.synchronous") == "full";
    s.busy_timeout_ms = static_cast<int>(config.integer("queue.sqlite.busy_timeout_ms"));
    s.lease = std::chrono::milliseconds(config.integer("queue.sqlite.lease_ms"));
    s.commit_delay = std::chrono::microseconds(config.integer("queue.sqlite.commit_delay_us"));
    s.push_timeout = std::chrono::milliseconds(config.integer("queue.push_timeout_ms"));
    return s;
}

SqliteQueue::SqliteQueue(Settings settings) : settings_(std::move(settings)), current_(std::make_shared<Batch>()) {
    db_ = sqlite::open_database(settings_.path, settings_.busy_timeout_ms, settings_.full_sync, true);
    checkpointer_ =
        std::make_unique<sqlite::Checkpointer>(*db_, settings_.path, settings_.busy_timeout_ms, settings_.full_sync);
    writer_ = std::thread([this] { writer_loop(); });
}

SqliteQueue::~SqliteQueue() { stop(std::chrono::milliseconds(5000)); }

// Acks, failures and releases wait for the next transaction (pushes and leases come often under load) or for
// kLazyCommit: nobody waits for them, and waking the writer for each would cost a context switch per message. If
// the process dies meanwhile, the message is delivered again after its lease (at-least-once).
void SqliteQueue::enqueue_lazy(Op op) {
    std::lock_guard lock(mutex_);
    ops_.push_back(std::move(op));
}

std::vector<SqliteQueue::Op> SqliteQueue::one_push(std::string_view queue, std::string_view payload,
                                                   const Headers& headers, std::chrono::milliseconds delay) {
    std::vector<Op> ops(1);
    ops[0].what = Op::Push{std::string(queue), std::string(payload), sqlite::encode_headers(headers),
                           std::max<std::int64_t>(0, delay.count())};
    std::get<Op::Push>(ops[0].what).given = headers;
    return ops;
}

std::shared_ptr<SqliteQueue::Batch> SqliteQueue::submit(std::vector<Op>& ops, PushDone* done) {
    std::shared_ptr<Batch> batch;
    {
        std::lock_guard lock(mutex_);
        if (writer_stopping_) return nullptr;
        batch = current_;
        if (done != nullptr) batch->done.push_back(std::move(*done));  // taken only when the writer still runs
        for (auto& op : ops) {
            op.batch = batch;
            ops_.push_back(std::move(op));
        }
        ++urgent_;
    }
    work_cv_.notify_one();
    return batch;
}

// Group commit: everyone who pushed while the previous transaction ran shares the next one.
void SqliteQueue::wait_pushed(std::string_view queue, const std::shared_ptr<Batch>& batch) {
    if (!batch) throw QueueError("queue: push to " + std::string(queue) + ": the queue is stopped", true);
    const auto deadline = std::chrono::steady_clock::now() + settings_.push_timeout;
    if (!batch->wait(&deadline))
        throw QueueError("queue: push to " + std::string(queue) + " timed out after " +
                             std::to_string(settings_.push_timeout.count()) + " ms (the database is busy)",
                         true);
    if (!batch->error.empty())
        throw QueueError("queue: push to " + std::string(queue) + " failed: " + batch->error, true);
}

void SqliteQueue::refuse_on_writer(std::string_view queue) const {
    if (tls_writer_of == this)
        throw QueueError("queue: push to " + std::string(queue) +
                             ": a blocking push from a nonblocking MQC handler would wait for its own thread; use "
                             "push_async",
                         false);
}

void SqliteQueue::push(std::string_view queue, std::string_view payload, const Headers& headers,
                       std::chrono::milliseconds delay) {
    validate_queue_name(queue);
    refuse_on_writer(queue);
    std::vector<Op> ops = one_push(queue, payload, headers, delay);
    wait_pushed(queue, submit(ops));
}

void SqliteQueue::push_async(std::string_view queue, std::string_view payload, const Headers& headers,
                             std::chrono::milliseconds delay, PushDone done) {
    try {
        validate_queue_name(queue);
    } catch (const QueueError& e) {
        done(&e);
        return;
    }
    std::vector<Op> ops = one_push(queue, payload, headers, delay);
    if (!submit(ops, &done)) {
        QueueError e("queue: push to " + std::string(queue) + ": the queue is stopped", true);
        done(&e);
    }
}

void SqliteQueue::push_batch(std::string_view queue, std::span<const std::string> payloads, const Headers& headers) {
    validate_queue_name(queue);
    refuse_on_writer(queue);
    if (payloads.empty()) return;
    std::string header_text = sqlite::encode_headers(headers);
    std::vector<Op> ops(payloads.size());
    for (std::size_t i = 0; i < payloads.size(); ++i)
        ops[i].what = Op::Push{std::string(queue), payloads[i], header_text, 0};
    wait_pushed(queue, submit(ops));
}

std::string SqliteQueue::check_ready(std::chrono::milliseconds) {
    std::lock_guard lock(commit_error_mutex_);
    return commit_error_.empty() ? std::string() : "queue: sqlite: the last transaction failed: " + commit_error_;
}

long SqliteQueue::checkpoints_by_thread() const { return checkpointer_ ? checkpointer_->by_thread() : 0; }
long SqliteQueue::checkpoints_by_writer() const { return checkpointer_ ? checkpointer_->by_writer() : 0; }

void SqliteQueue::writer_loop() {
    pthread_setname_np(pthread_self(), "queue-writer");
    tls_writer_of = this;
    std::unique_ptr<Statements> st;
    try {
        st = std::make_unique<Statements>(*db_);
    } catch (const std::exception& e) {
        Logger().error(std::string("queue: sqlite: cannot prepare statements: ") + e.what());
    }
    std::vector<Op> ops;
    auto last_commit = std::chrono::steady_clock::time_point{};
    for (;;) {
        std::shared_ptr<Batch> batch;
        {
            std::unique_lock lock(mutex_);
            // Lazy operations (acks) do not wake us: they are committed with the next push or lease, or after
            // kLazyCommit at the latest.
            work_cv_.wait_for(lock, kLazyCommit, [&] { return writer_stopping_ || urgent_ > 0; });
            beat(writer_beat_);
            if (ops_.empty()) {
                if (writer_stopping_) return;  // stopping and drained
                continue;
            }
            // Under a steady stream of push_async() calls (the last commit just ended), a transaction that would
            // hold only a few operations waits up to queue.sqlite.commit_delay_us for more to join it: per message,
            // a transaction costs more than the wait (README: "Embedded queue").
            // Not for blocking pushes: a thread pushing in a loop would only be slowed down. A sleep rather than a
            // timed wait on work_cv_, which every push would cut short with a wake-up.
            // The wait is cut in slices and ends early when a slice brought nothing more: then the pushers are all
            // waiting for this commit (a closed loop), and waiting longer would only slow them down.
            // Counted: pushes and leases (urgent_), not the acknowledgements that wait for any transaction.
            if (settings_.commit_delay.count() > 0 && !writer_stopping_ && urgent_ < kDelayBelow &&
                !current_->done.empty() && std::chrono::steady_clock::now() - last_commit < kSteady) {
                const auto slice = std::max(settings_.commit_delay / kDelaySlices, std::chrono::microseconds(1));
                for (int i = 0; i < kDelaySlices && !writer_stopping_ && urgent_ < kEnough; ++i) {
                    const int before = urgent_;
                    lock.unlock();
                    std::this_thread::sleep_for(slice);
                    lock.lock();
                    if (urgent_ == before) break;
                }
            }
            ops.swap(ops_);
            urgent_ = 0;
            batch = current_;
            current_ = std::make_shared<Batch>();
        }
        std::vector<std::string> pushed_queues;
        std::vector<Handoff> handoffs = plan_hand_off(ops);
        std::string error;
        std::int64_t now = queue::now_ms();
        try {
            if (!st) throw std::runtime_error("the database could not be prepared");
            WriteTransaction tx(*db_, *st);
            keep_order(*st, now, handoffs, ops);
            for (std::size_t i = 0; i < ops.size();) {
                std::size_t rows = 0;  // pushes from i on, up to 32
                while (rows < 32 && i + rows < ops.size() && std::holds_alternative<Op::Push>(ops[i + rows].what))
                    ++rows;
                if (rows < 8) {
                    execute(ops[i++], now, pushed_queues, *st);
                    continue;
                }
                rows = rows == 32 ? 32 : 8;
                SQLite::Statement& insert = rows == 32 ? st->insert_32 : st->insert_8;
                insert.tryReset();
                for (std::size_t r = 0; r < rows; ++r) {
                    bind_row(insert, static_cast<int>(r), ops[i + r], now);
                    const auto& queue = std::get<Op::Push>(ops[i + r].what).queue;
                    if (pushed_queues.empty() || pushed_queues.back() != queue) pushed_queues.push_back(queue);
                }
                insert.exec();
                // The rows of one statement get consecutive ids (AUTOINCREMENT, under the write lock).
                const std::int64_t first = db_->getLastInsertRowid() - static_cast<std::int64_t>(rows) + 1;
                for (std::size_t r = 0; r < rows; ++r)
                    std::get<Op::Push>(ops[i + r].what).id = first + static_cast<std::int64_t>(r);
                i += rows;
            }
            tx.commit();
        } catch (const std::exception& e) {
            error = e.what();
            pushed_queues.clear();
            handoffs.clear();  // nothing was inserted
            Logger().error("queue: sqlite transaction of " + std::to_string(ops.size()) +
                           " operations failed: " + error);
        }
        last_commit = std::chrono::steady_clock::now();
        {
            std::lock_guard error_lock(commit_error_mutex_);
            if (error != commit_error_) commit_error_ = error;
        }
        batch->finish(error);
        // Leases run in this batch too; a lease that failed returns nothing and is tried again later.
        for (auto& op : ops)
            if (op.batch && op.batch != batch) op.batch->finish(error);
        const bool any_delayed = std::any_of(ops.begin(), ops.end(), [](const Op& op) {
            const auto* p = std::get_if<Op::Push>(&op.what);
            return p != nullptr && p->delay_ms > 0;
        });
        for (auto& h : handoffs) {
            // The consumer got every push to its queue: its fetcher can sleep on. A delayed push wakes it anyway,
            // to sleep until that message is due.
            if (h.all && !any_delayed)
                pushed_queues.erase(std::remove(pushed_queues.begin(), pushed_queues.end(), h.consumer->sub.queue),
                                    pushed_queues.end());
        }
        if (!handoffs.empty()) deliver(handoffs, ops);
        ops.clear();
        if (!pushed_queues.empty()) {
            {
                std::lock_guard lock(pushed_mutex_);
                for (const auto& q : pushed_queues) ++generation_[q];
            }
            pushed_cv_.notify_all();
        }
    }
}

void SqliteQueue::bind_row(SQLite::Statement& insert, int row, Op& op, std::int64_t now) const {
    auto& p = std::get<Op::Push>(op.what);
    const int at = Statements::kInsertColumns * row;
    const bool handed = p.handoff >= 0;
    // The op's strings outlive the statement's execution: no copies.
    insert.bindNoCopy(at + 1, p.queue);
    insert.bindNoCopy(at + 2, p.payload.data(), static_cast<int>(p.payload.size()));
    insert.bindNoCopy(at + 3, p.headers);
    insert.bind(at + 4, static_cast<std::int64_t>(handed ? now + settings_.lease.count() : now + p.delay_ms));
    insert.bind(at + 5, static_cast<std::int64_t>(now));
    insert.bind(at + 6, handed ? 1 : 0);  // attempts
    insert.bind(at + 7, handed ? 1 : 0);  // leased
}

void SqliteQueue::execute(Op& op, std::int64_t now, std::vector<std::string>& pushed_queues, Statements& st) {
    if (auto* p = std::get_if<Op::Push>(&op.what)) {
        st.insert.tryReset();
        bind_row(st.insert, 0, op, now);
        st.insert.exec();
        p->id = db_->getLastInsertRowid();
        if (pushed_queues.empty() || pushed_queues.back() != p->queue) pushed_queues.push_back(p->queue);
    } else if (auto* a = std::get_if<Op::Ack>(&op.what)) {
        st.ack.tryReset();
        st.ack.bind(1, static_cast<std::int64_t>(a->id));
        st.ack.bind(2, a->attempts);
        st.ack.exec();
    } else if (auto* b = std::get_if<Op::Bury>(&op.what)) {
        st.bury.tryReset();
        st.bury.bind(1, static_cast<std::int64_t>(now));
        st.bury.bind(2, b->error);
        st.bury.bind(3, static_cast<std::int64_t>(b->id));
        st.bury.bind(4, b->attempts);
        if (st.bury.exec() > 0) {
            st.remove.tryReset();
            st.remove.bind(1, static_cast<std::int64_t>(b->id));
            st.remove.exec();
        }
    } else if (auto* f = std::get_if<Op::Retry>(&op.what)) {
        st.retry.tryReset();
        st.retry.bind(1, static_cast<std::int64_t>(f->at_ms));
        st.retry.bind(2, f->error);
        st.retry.bind(3, static_cast<std::int64_t>(f->id));
        st.retry.bind(4, f->attempts);
        st.retry.exec();
    } else if (auto* r = std::get_if<Op::Release>(&op.what)) {
        st.release.tryReset();
        st.release.bind(1, static_cast<std::int64_t>(now));
        st.release.bind(2, static_cast<std::int64_t>(r->id));
        st.release.bind(3, r->attempts);
        st.release.exec();
    } else if (auto* l = std::get_if<Op::Lease>(&op.what)) {
        take(st, l->queue, l->max, now, *l->out);
        if (l->out->empty()) {  // when to look again
            st.next.tryReset();
            st.next.bind(1, l->queue);
            *l->next_visible =
                st.next.executeStep() && !st.next.getColumn(0).isNull() ? st.next.getColumn(0).getInt64() : 0;
            st.next.tryReset();
        }
    }
}

}  // namespace hydra::queue
