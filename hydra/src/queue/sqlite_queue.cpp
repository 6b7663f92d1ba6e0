#include "queue/sqlite_queue.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <ctime>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <variant>

#include <hydra/log.h>

namespace hydra::queue {

namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    queue      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    headers    TEXT    NOT NULL DEFAULT '{}',
    visible_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    leased     INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at, id);
CREATE TABLE IF NOT EXISTS dead_letters (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id INTEGER NOT NULL,
    queue      TEXT    NOT NULL,
    payload    BLOB    NOT NULL,
    headers    TEXT    NOT NULL,
    attempts   INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    failed_at  INTEGER NOT NULL,
    error      TEXT
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, id);
)SQL";

// `one_thread`: the connection is only ever used by one thread at a time, so SQLite can skip its own locking.
std::unique_ptr<SQLite::Database> open_database(const std::string& path, int busy_timeout_ms, bool full_sync,
                                                bool one_thread = false) {
    try {
        std::filesystem::path p(path);
        if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
        int flags = SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE | (one_thread ? SQLite::OPEN_NOMUTEX : 0);
        auto db = std::make_unique<SQLite::Database>(path, flags, busy_timeout_ms);
        // WAL: readers never block the writer, and a commit is one append to the log.
        db->exec("PRAGMA journal_mode=WAL");
        db->exec(full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        db->exec(kSchema);
        return db;
    } catch (const std::exception& e) {
        throw std::runtime_error("queue: cannot open SQLite database " + path + ": " + e.what());
    }
}

// Headers are stored as a JSON object of strings. Plain printable ASCII (request ids, names: the usual case) is
// written directly; anything else goes through the JSON library (escapes; invalid UTF-8 replaced).
std::string encode_headers(const Headers& headers) {
    if (headers.empty()) return "{}";
    auto plain = [](const std::string& s) {
        return std::all_of(s.begin(), s.end(), [](char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; });
    };
    if (std::all_of(headers.begin(), headers.end(), [&](const auto& h) { return plain(h.first) && plain(h.second); })) {
        std::string out = "{";
        for (const auto& [k, v] : headers) {
            if (out.size() > 1) out += ',';
            out.append("\"").append(k).append("\":\"").append(v).append("\"");
        }
        out += '}';
        return out;
    }
    Json h = Json::object();
    for (const auto& [k, v] : headers) h[k] = v;
    return dump(h);
}

Headers parse_headers(const std::string& text) {
    Headers h;
    if (text == "{}") return h;
    try {
        Json j = parse_json(text);
        for (auto& [k, v] : j.items()) h[k] = v.is_string() ? v.get<std::string>() : v.dump();
    } catch (const std::exception&) {
        // headers are written by us as JSON; an unreadable row keeps its payload
    }
    return h;
}

// The longest an ack (or a failure, a give-back) waits for a transaction to join; see enqueue_lazy().
constexpr auto kLazyCommit = std::chrono::milliseconds(20);

// A transaction of fewer operations than this may wait for company (Settings::commit_delay), when the previous
// commit ended less than kSteady ago.
constexpr std::size_t kDelayBelow = 4;
constexpr auto kSteady = std::chrono::milliseconds(1);

// Wakes up to `n` threads waiting on `word` (FUTEX_WAIT_PRIVATE).
void futex_wake(std::atomic<int>& word, int n) {
    syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAKE_PRIVATE, n, nullptr, nullptr, 0);
}

}  // namespace

// A group of operations committed in one transaction; pushers wait for it to finish.
// Waiters sleep on `state` with a futex: a commit wakes only its own waiters, and they return without taking any
// lock (a condition variable would make all of them queue for its mutex again). The writer wakes only the first
// `fan_out`; every woken waiter wakes as many more before returning. Waking threads is the most expensive part of
// a push on a small machine: this spreads that work over the woken threads instead of holding up the writer's next
// transaction with it.
struct SqliteQueue::Batch {
    static constexpr int fan_out = 2;

    std::atomic<int> state{0};    // 0 pending, 1 committed or failed
    std::atomic<int> waiters{0};  // threads in wait() that found it pending: no wake-up syscall when there are none
    std::string error;            // empty on success; written before `state`
    std::vector<PushDone> done;   // of push_async(); appended under SqliteQueue::mutex_ while this batch is current_

    void finish(std::string err) {
        error = std::move(err);
        state.store(1);  // sequentially consistent with the waiters' count below, as in wait()
        if (waiters.load() > 0) futex_wake(state, fan_out);
        if (done.empty()) return;
        std::optional<QueueError> failed;
        if (!error.empty()) failed.emplace("queue: push failed: " + error, true);
        for (auto& d : done) d(failed ? &*failed : nullptr);
        done.clear();
    }
    // False on timeout.
    bool wait(std::chrono::milliseconds timeout) {
        if (state.load() != 0) return true;
        auto deadline = std::chrono::steady_clock::now() + timeout;
        ++waiters;
        bool done = true;
        while (state.load() == 0) {
            auto left = deadline - std::chrono::steady_clock::now();
            if (left <= std::chrono::nanoseconds(0)) {
                done = false;
                break;
            }
            auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
            syscall(SYS_futex, reinterpret_cast<int*>(&state), FUTEX_WAIT_PRIVATE, 0, &ts, nullptr, 0);
        }
        if (--waiters > 0 && done) futex_wake(state, fan_out);  // pass the wake-up on
        return done;
    }
};

// A message leased by a consumer, waiting in its prefetch window or being handled.
struct SqliteQueue::Leased {
    std::int64_t id = 0;
    int attempt = 0;
    std::string payload;
    std::string headers;  // as stored (JSON); parsed by the handler thread, not the writer
    std::chrono::steady_clock::time_point leased_at;
};

struct SqliteQueue::Op {
    struct Push {
        std::string queue;
        std::string payload;
        std::string headers;
        std::int64_t delay_ms;  // visible at commit time + delay: without one, visible_at = created_at
    };
    struct Ack {
        std::int64_t id;
        int attempts;
    };
    struct Fail {
        std::int64_t id;
        int attempts;
        std::string error;
    };
    // Gives back a leased message that no handler started: visible again at once, the attempt not counted.
    struct Release {
        std::int64_t id;
        int attempts;
    };
    struct Lease {
        std::string queue;
        int max;
        std::shared_ptr<std::vector<Leased>> out;
        std::shared_ptr<std::int64_t> next_visible;
    };
    std::variant<Push, Ack, Fail, Release, Lease> what;
    std::shared_ptr<Batch> batch;  // pushes and leases wait for their batch
};

// The writer's prepared statements: prepared once, reused for every operation.
struct SqliteQueue::Statements {
    explicit Statements(SQLite::Database& db)
        : insert(db, "INSERT INTO messages (queue, payload, headers, visible_at, created_at) VALUES (?, ?, ?, ?, ?)"),
          ack(db, "DELETE FROM messages WHERE id = ? AND attempts = ?"),
          bury(db,
               "INSERT INTO dead_letters (message_id, queue, payload, headers, attempts, created_at, failed_at, error) "
               "SELECT id, queue, payload, headers, attempts, created_at, ?, ? FROM messages "
               "WHERE id = ? AND attempts = ?"),
          remove(db, "DELETE FROM messages WHERE id = ?"),
          retry(db, "UPDATE messages SET visible_at = ?, leased = 0, last_error = ? WHERE id = ? AND attempts = ?"),
          // Back to its place in the queue: its creation time (the visible time of a message pushed without
          // delay) orders it among the other visible messages.
          release(db,
                  "UPDATE messages SET visible_at = MIN(created_at, ?), attempts = attempts - 1, leased = 0 "
                  "WHERE id = ? AND attempts = ?"),
          // Oldest visible first (FIFO for equal visibility); taking one hides it for the lease time.
          take(db,
               "UPDATE messages SET visible_at = ?, attempts = attempts + 1, leased = 1 "
               "WHERE id IN (SELECT id FROM messages WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id "
               "LIMIT ?) RETURNING id, payload, headers, attempts"),
          next(db, "SELECT MIN(visible_at) FROM messages WHERE queue = ?"),
          insert_32(db, insert_rows_sql(32)),
          insert_8(db, insert_rows_sql(8)) {}

    // Pushes that come in a row are inserted 32 or 8 at a time: one statement per row would cost a statement
    // execution (and an AUTOINCREMENT update) for each.
    static std::string insert_rows_sql(int rows) {
        std::string sql = "INSERT INTO messages (queue, payload, headers, visible_at, created_at) VALUES ";
        for (int i = 0; i < rows; ++i) sql += i == 0 ? "(?, ?, ?, ?, ?)" : ", (?, ?, ?, ?, ?)";
        return sql;
    }

    SQLite::Statement insert, ack, bury, remove, retry, release, take, next, insert_32, insert_8;
};

// One subscription: a fetcher thread leases messages ahead into `window` (FIFO), `concurrency` handler threads
// take them from there. Leasing a batch ahead keeps the handlers busy while the next lease commits, and one lease
// transaction serves many messages.
struct SqliteQueue::Consumer {
    Subscription sub;
    std::size_t window_size = 0;  // at most this many leased messages wait for a handler
    std::thread fetcher;
    std::vector<std::thread> workers;
    std::mutex mutex;
    std::condition_variable work_cv;   // handler threads: messages arrived, or stop
    std::condition_variable fetch_cv;  // fetcher: the window has room, or stop
    std::condition_variable idle_cv;   // stop(): a handler finished
    std::deque<Leased> window;         // leased, not started, oldest first
    int running = 0;                   // handlers running
    std::atomic<bool> parked{false};   // the fetcher found nothing and sleeps until a push (see hand_off())
    bool stopping = false;             // set by stop(): handler threads take nothing more
};

// Messages leased for a consumer by the writer in a push's transaction.
struct SqliteQueue::Handoff {
    Consumer* consumer;
    std::vector<Leased> leased;
    std::size_t room;  // asked for at most this many
};

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

SqliteQueue::SqliteQueue(Settings settings, RetryPolicy retry)
    : settings_(std::move(settings)), retry_(retry), current_(std::make_shared<Batch>()) {
    db_ = open_database(settings_.path, settings_.busy_timeout_ms, settings_.full_sync, true);
    writer_ = std::thread([this] { writer_loop(); });
}

SqliteQueue::~SqliteQueue() { stop(std::chrono::milliseconds(5000)); }

// Acks, failures and give-backs wait for the next transaction (pushes and leases come often under load) or for
// kLazyCommit: nobody waits for them, and waking the writer for each would cost a context switch per message. If
// the process dies meanwhile, the message is delivered again after its lease (at-least-once).
void SqliteQueue::enqueue_lazy(Op op) {
    std::lock_guard lock(mutex_);
    ops_.push_back(std::move(op));
}

void SqliteQueue::give_back(const Leased& m) {
    Op op;
    op.what = Op::Release{m.id, m.attempt};
    enqueue_lazy(std::move(op));
}

std::vector<SqliteQueue::Op> SqliteQueue::one_push(std::string_view queue, std::string_view payload,
                                                   const Headers& headers, std::chrono::milliseconds delay) {
    std::vector<Op> ops(1);
    ops[0].what = Op::Push{std::string(queue), std::string(payload), encode_headers(headers),
                           std::max<std::int64_t>(0, delay.count())};
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
    if (!batch->wait(settings_.push_timeout))
        throw QueueError("queue: push to " + std::string(queue) + " timed out after " +
                             std::to_string(settings_.push_timeout.count()) + " ms (the database is busy)",
                         true);
    if (!batch->error.empty())
        throw QueueError("queue: push to " + std::string(queue) + " failed: " + batch->error, true);
}

void SqliteQueue::push(std::string_view queue, std::string_view payload, const Headers& headers,
                       std::chrono::milliseconds delay) {
    validate_queue_name(queue);
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
    if (payloads.empty()) return;
    std::string header_text = encode_headers(headers);
    std::vector<Op> ops(payloads.size());
    for (std::size_t i = 0; i < payloads.size(); ++i)
        ops[i].what = Op::Push{std::string(queue), payloads[i], header_text, 0};
    wait_pushed(queue, submit(ops));
}

std::string SqliteQueue::check_ready(std::chrono::milliseconds) {
    std::lock_guard lock(commit_error_mutex_);
    return commit_error_.empty() ? std::string() : "queue: sqlite: the last transaction failed: " + commit_error_;
}

void SqliteQueue::writer_loop() {
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
            // hold only a few operations waits queue.sqlite.commit_delay_us for more to join it: per message, a
            // transaction costs more than the wait (at 12,000 pushes/s on one core: 14 % less CPU, p99 unchanged).
            // Not for blocking pushes: a thread pushing in a loop would only be slowed down. A sleep rather than a
            // timed wait on work_cv_, which every push would cut short with a wake-up.
            if (settings_.commit_delay.count() > 0 && !writer_stopping_ && ops_.size() < kDelayBelow &&
                !current_->done.empty() && std::chrono::steady_clock::now() - last_commit < kSteady) {
                lock.unlock();
                std::this_thread::sleep_for(settings_.commit_delay);
                lock.lock();
            }
            ops.swap(ops_);
            urgent_ = 0;
            batch = current_;
            current_ = std::make_shared<Batch>();
        }
        std::vector<std::string> pushed_queues;
        std::vector<Handoff> handoffs;
        std::string error;
        std::int64_t now = now_ms();
        try {
            if (!st) throw std::runtime_error("the database could not be prepared");
            SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
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
                insert.reset();
                for (std::size_t r = 0; r < rows; ++r) {
                    auto& p = std::get<Op::Push>(ops[i + r].what);
                    int at = static_cast<int>(5 * r);
                    // The op's strings outlive the statement's execution: no copies.
                    insert.bindNoCopy(at + 1, p.queue);
                    insert.bindNoCopy(at + 2, p.payload.data(), static_cast<int>(p.payload.size()));
                    insert.bindNoCopy(at + 3, p.headers);
                    insert.bind(at + 4, static_cast<std::int64_t>(now + p.delay_ms));
                    insert.bind(at + 5, static_cast<std::int64_t>(now));
                    if (pushed_queues.empty() || pushed_queues.back() != p.queue) pushed_queues.push_back(p.queue);
                }
                insert.exec();
                i += rows;
            }
            if (!pushed_queues.empty()) hand_off(*st, now, pushed_queues, handoffs);
            tx.commit();
        } catch (const std::exception& e) {
            error = e.what();
            pushed_queues.clear();
            handoffs.clear();
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
        ops.clear();
        for (auto& h : handoffs) {
            // The consumer got every visible message of its queue: its fetcher can sleep on. A delayed push
            // wakes it anyway, to sleep until that message is due.
            if (deliver(h) && !any_delayed)
                pushed_queues.erase(std::remove(pushed_queues.begin(), pushed_queues.end(), h.consumer->sub.queue),
                                    pushed_queues.end());
        }
        handoffs.clear();
        if (!pushed_queues.empty()) {
            {
                std::lock_guard lock(pushed_mutex_);
                for (const auto& q : pushed_queues) ++generation_[q];
            }
            pushed_cv_.notify_all();
        }
    }
}

// Consumers whose fetcher sleeps for lack of messages get what was just pushed to their queue leased in the same
// transaction: no fetcher round trip (a wake-up, and a lease transaction of its own) between a push and its handler.
void SqliteQueue::hand_off(Statements& st, std::int64_t now, const std::vector<std::string>& pushed_queues,
                           std::vector<Handoff>& out) {
    if (!consuming_.load()) return;  // also: consumers_ is complete (start() sets consuming_ after subscribe()s)
    for (auto& c : consumers_) {
        if (!c->parked.load() ||
            std::find(pushed_queues.begin(), pushed_queues.end(), c->sub.queue) == pushed_queues.end())
            continue;
        std::size_t room;
        {
            std::lock_guard lock(c->mutex);
            if (c->stopping) continue;
            room = c->window_size - std::min(c->window_size, c->window.size());
        }
        if (room == 0) continue;  // its handlers are behind: the fetcher takes over again
        Handoff h{c.get(), {}, room};
        take(st, c->sub.queue, static_cast<int>(room), now, h.leased);
        out.push_back(std::move(h));
    }
}

// After the hand-off's commit: into the consumer's window. True when the consumer got every visible message.
bool SqliteQueue::deliver(Handoff& h) {
    Consumer& c = *h.consumer;
    const std::size_t n = h.leased.size();
    bool stopping;
    {
        std::lock_guard lock(c.mutex);
        stopping = c.stopping;
        if (!stopping)
            for (auto& m : h.leased) c.window.push_back(std::move(m));
    }
    if (stopping) {  // too late for the handlers: give them back
        for (const auto& m : h.leased) give_back(m);
        return false;
    }
    wake_handlers(c, n);
    return n < h.room;
}

// One wake-up per message, at most one per handler: notify_all would wake every idle handler for a lease of two
// messages, and all but two would go back to sleep (each a context switch).
void SqliteQueue::wake_handlers(Consumer& c, std::size_t messages) {
    const std::size_t wake = std::min<std::size_t>(messages, static_cast<std::size_t>(c.sub.concurrency));
    for (std::size_t i = 0; i < wake; ++i) c.work_cv.notify_one();
}

void SqliteQueue::execute(Op& op, std::int64_t now, std::vector<std::string>& pushed_queues, Statements& st) {
    if (auto* p = std::get_if<Op::Push>(&op.what)) {
        st.insert.reset();
        // The op's strings outlive the statement's execution: no copies.
        st.insert.bindNoCopy(1, p->queue);
        st.insert.bindNoCopy(2, p->payload.data(), static_cast<int>(p->payload.size()));
        st.insert.bindNoCopy(3, p->headers);
        st.insert.bind(4, static_cast<std::int64_t>(now + p->delay_ms));
        st.insert.bind(5, static_cast<std::int64_t>(now));
        st.insert.exec();
        if (pushed_queues.empty() || pushed_queues.back() != p->queue) pushed_queues.push_back(p->queue);
    } else if (auto* a = std::get_if<Op::Ack>(&op.what)) {
        st.ack.reset();
        st.ack.bind(1, static_cast<std::int64_t>(a->id));
        st.ack.bind(2, a->attempts);
        st.ack.exec();
    } else if (auto* f = std::get_if<Op::Fail>(&op.what)) {
        if (f->attempts >= retry_.max_attempts) {
            st.bury.reset();
            st.bury.bind(1, static_cast<std::int64_t>(now));
            st.bury.bind(2, f->error);
            st.bury.bind(3, static_cast<std::int64_t>(f->id));
            st.bury.bind(4, f->attempts);
            if (st.bury.exec() > 0) {
                st.remove.reset();
                st.remove.bind(1, static_cast<std::int64_t>(f->id));
                st.remove.exec();
            }
        } else {
            st.retry.reset();
            st.retry.bind(1, static_cast<std::int64_t>(now + retry_.delay_after(f->attempts).count()));
            st.retry.bind(2, f->error);
            st.retry.bind(3, static_cast<std::int64_t>(f->id));
            st.retry.bind(4, f->attempts);
            st.retry.exec();
        }
    } else if (auto* r = std::get_if<Op::Release>(&op.what)) {
        st.release.reset();
        st.release.bind(1, static_cast<std::int64_t>(now));
        st.release.bind(2, static_cast<std::int64_t>(r->id));
        st.release.bind(3, r->attempts);
        st.release.exec();
    } else if (auto* l = std::get_if<Op::Lease>(&op.what)) {
        take(st, l->queue, l->max, now, *l->out);
        if (l->out->empty()) {  // when to look again
            st.next.reset();
            st.next.bind(1, l->queue);
            *l->next_visible =
                st.next.executeStep() && !st.next.getColumn(0).isNull() ? st.next.getColumn(0).getInt64() : 0;
            st.next.reset();
        }
    }
}

void SqliteQueue::take(Statements& st, const std::string& queue, int max, std::int64_t now, std::vector<Leased>& out) {
    auto leased_at = std::chrono::steady_clock::now();
    std::size_t first = out.size();
    st.take.reset();
    st.take.bind(1, static_cast<std::int64_t>(now + settings_.lease.count()));
    st.take.bind(2, queue);
    st.take.bind(3, static_cast<std::int64_t>(now));
    st.take.bind(4, max);
    while (st.take.executeStep()) {
        Leased m;
        m.id = st.take.getColumn(0).getInt64();
        const auto& payload = st.take.getColumn(1);
        m.payload.assign(static_cast<const char*>(payload.getBlob()), static_cast<std::size_t>(payload.getBytes()));
        m.headers = st.take.getColumn(2).getString();
        m.attempt = st.take.getColumn(3).getInt();
        m.leased_at = leased_at;
        out.push_back(std::move(m));
    }
    st.take.reset();
    // RETURNING gives rows in no set order.
    std::sort(out.begin() + static_cast<std::ptrdiff_t>(first), out.end(),
              [](const Leased& a, const Leased& b) { return a.id < b.id; });
}

std::vector<SqliteQueue::Leased> SqliteQueue::lease(const std::string& queue, int max, std::int64_t& next_visible_ms) {
    auto out = std::make_shared<std::vector<Leased>>();
    auto next = std::make_shared<std::int64_t>(0);
    auto batch = std::make_shared<Batch>();
    Op op;
    op.what = Op::Lease{queue, max, out, next};
    op.batch = batch;
    {
        std::lock_guard lock(mutex_);
        if (writer_stopping_) return {};
        ops_.push_back(std::move(op));
        ++urgent_;
    }
    work_cv_.notify_one();
    while (!batch->wait(std::chrono::hours(1))) {
    }
    if (!batch->error.empty()) return {};
    next_visible_ms = *next;
    return std::move(*out);
}

void SqliteQueue::subscribe(Subscription subscription) {
    validate_queue_name(subscription.queue);
    if (started_) throw std::logic_error("SqliteQueue::subscribe after start");
    auto c = std::make_unique<Consumer>();
    c->sub = std::move(subscription);
    c->sub.concurrency = std::max(1, c->sub.concurrency);
    // Enough ahead for the handlers to keep busy while the next lease commits; bounded, because a message waiting
    // here uses up its lease (see work()).
    c->window_size = static_cast<std::size_t>(std::clamp(8 * c->sub.concurrency, 32, 512));
    consumers_.push_back(std::move(c));
}

void SqliteQueue::start() {
    if (started_) return;
    started_ = true;
    consuming_ = true;
    for (auto& c : consumers_) {
        Consumer* consumer = c.get();
        for (int i = 0; i < consumer->sub.concurrency; ++i)
            consumer->workers.emplace_back([this, consumer, i] {
                pthread_setname_np(pthread_self(), ("mqc-" + std::to_string(i)).substr(0, 15).c_str());
                work(*consumer);
            });
        consumer->fetcher = std::thread([this, consumer] { fetch(*consumer); });
    }
}

// Leases more once the window is half empty, so that the handlers still have work while the lease commits. Not
// while every handler is busy and nothing waits in the window: handlers that hang (or are slow) must not keep
// taking messages whose leases then run out.
void SqliteQueue::fetch(Consumer& c) {
    const std::string& queue = c.sub.queue;
    while (consuming_) {
        std::size_t want;
        {
            std::unique_lock lock(c.mutex);
            c.fetch_cv.wait(lock, [&] {
                return !consuming_ ||
                       (2 * c.window.size() <= c.window_size && (!c.window.empty() || c.running < c.sub.concurrency));
            });
            if (!consuming_) return;
            want = c.window_size - c.window.size();
        }
        std::uint64_t seen;
        {
            std::lock_guard lock(pushed_mutex_);
            seen = generation_[queue];
        }
        std::int64_t next_visible = 0;
        std::vector<Leased> batch = lease(queue, static_cast<int>(want), next_visible);
        if (batch.empty()) {
            // Sleep until a push to this queue commits, the next delayed message is due, or the poll interval
            // passes (another process may push to the same file).
            auto wait = settings_.poll_interval;
            if (next_visible > 0)
                wait = std::min(wait, std::chrono::milliseconds(std::max<std::int64_t>(1, next_visible - now_ms())));
            std::unique_lock lock(pushed_mutex_);
            c.parked = true;  // meanwhile the writer hands pushes to this queue straight to the handlers
            pushed_cv_.wait_for(lock, wait, [&] { return !consuming_ || generation_[queue] != seen; });
            c.parked = false;
            continue;
        }
        {
            std::lock_guard lock(c.mutex);
            for (auto& m : batch) c.window.push_back(std::move(m));
        }
        wake_handlers(c, batch.size());
    }
}

// A handler thread: takes the oldest leased message. One that waited in the window for more than half its lease
// is given back instead (its handler might not finish before the lease ends and another consumer takes it).
void SqliteQueue::work(Consumer& c) {
    for (;;) {
        Leased m;
        {
            std::unique_lock lock(c.mutex);
            c.work_cv.wait(lock, [&] { return c.stopping || !c.window.empty(); });
            if (c.stopping) return;
            m = std::move(c.window.front());
            c.window.pop_front();
            if (2 * c.window.size() == c.window_size) c.fetch_cv.notify_one();
            ++c.running;
        }
        if (std::chrono::steady_clock::now() - m.leased_at > settings_.lease / 2) {
            give_back(m);
        } else {
            handle(c, m);
        }
        bool idle_and_empty;
        {
            std::lock_guard lock(c.mutex);
            --c.running;
            idle_and_empty = c.window.empty();
        }
        if (idle_and_empty) c.fetch_cv.notify_one();  // the fetcher may wait for an idle handler
        c.idle_cv.notify_all();
    }
}

void SqliteQueue::handle(Consumer& c, Leased& leased) {
    Message m;
    m.id = std::to_string(leased.id);
    m.queue = c.sub.queue;
    m.payload = std::move(leased.payload);
    m.headers = parse_headers(leased.headers);
    m.attempt = leased.attempt;
    Op op;
    op.what = Op::Ack{leased.id, leased.attempt};
    try {
        c.sub.handler(m);
    } catch (const std::exception& e) {
        op.what = Op::Fail{leased.id, leased.attempt, e.what()};
    } catch (...) {
        op.what = Op::Fail{leased.id, leased.attempt, "unknown exception"};
    }
    if (const auto* f = std::get_if<Op::Fail>(&op.what))
        Logger(m.headers.count("x-request-id") ? m.headers.at("x-request-id") : m.id)
            .warn("mqc: " + m.queue + " message " + m.id + " attempt " + std::to_string(m.attempt) +
                  " failed: " + f->error);
    enqueue_lazy(std::move(op));
}

void SqliteQueue::stop(std::chrono::milliseconds grace) {
    if (stopped_) return;
    stopped_ = true;
    consuming_ = false;
    {
        std::lock_guard lock(pushed_mutex_);  // idle fetchers check consuming_ under it: no lost wake-up
        pushed_cv_.notify_all();
    }
    for (auto& c : consumers_) {
        std::lock_guard lock(c->mutex);  // likewise for a fetcher waiting for room
        c->fetch_cv.notify_all();
    }
    for (auto& c : consumers_)
        if (c->fetcher.joinable()) c->fetcher.join();
    // In-flight handlers finish (bounded by `grace` for the log); their acks go through the writer below. Messages
    // leased ahead that no handler started are given back.
    auto deadline = std::chrono::steady_clock::now() + grace;
    for (auto& c : consumers_) {
        std::deque<Leased> unstarted;
        {
            std::unique_lock lock(c->mutex);
            c->stopping = true;
            unstarted.swap(c->window);
            c->work_cv.notify_all();
        }
        for (const auto& m : unstarted) give_back(m);
    }
    for (auto& c : consumers_) {
        std::unique_lock lock(c->mutex);
        if (!c->idle_cv.wait_until(lock, deadline, [&] { return c->running == 0; }))
            Logger().warn("mqc: " + c->sub.queue + ": " + std::to_string(c->running) +
                          " handler(s) still running after the grace period; their messages will be redelivered "
                          "after the lease");
    }
    for (auto& c : consumers_)
        for (auto& w : c->workers)
            if (w.joinable()) w.join();
    {
        std::lock_guard lock(mutex_);
        writer_stopping_ = true;
    }
    work_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    db_.reset();
}

// --- inspection -------------------------------------------------------------------------------------------------

void SqliteQueue::collect(metrics::Samples& s) {
    const std::string& path = settings_.path;
    std::vector<QueueStats> queues;
    try {
        queues = stats(path);
    } catch (const std::exception& e) {
        Logger().warn(std::string("metrics: cannot read the queue depth: ") + e.what());
        return;
    }
    const std::int64_t now =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    const char* help =
        "Messages in a queue by state: ready, delayed (a delay or a retry backoff), leased (being "
        "handled), dead (dead letters).";
    if (queues.size() > metrics::kMaxSeries / 4) queues.resize(metrics::kMaxSeries / 4);  // 4 series per queue
    for (const auto& q : queues) {
        s.add("hydra_queue_messages", help, metrics::Type::gauge, {"queue", "state"}, {q.queue, "ready"},
              static_cast<double>(q.ready));
        s.add("hydra_queue_messages", help, metrics::Type::gauge, {"queue", "state"}, {q.queue, "delayed"},
              static_cast<double>(q.delayed));
        s.add("hydra_queue_messages", help, metrics::Type::gauge, {"queue", "state"}, {q.queue, "leased"},
              static_cast<double>(q.leased));
        s.add("hydra_queue_messages", help, metrics::Type::gauge, {"queue", "state"}, {q.queue, "dead"},
              static_cast<double>(q.dead));
        s.add("hydra_queue_oldest_message_age_seconds",
              "Age of the oldest message still in a queue (0 when it is empty).", metrics::Type::gauge, {"queue"},
              {q.queue}, q.oldest_ms > 0 ? static_cast<double>(now - q.oldest_ms) / 1000.0 : 0.0);
    }
}

std::vector<SqliteQueue::QueueStats> SqliteQueue::stats(const std::string& path) {
    auto db = open_database(path, 5000, false);
    std::map<std::string, QueueStats> by_queue;
    std::int64_t now = now_ms();
    SQLite::Statement q(*db,
                        "SELECT queue, SUM(visible_at <= ?), SUM(visible_at > ? AND leased = 0), "
                        "SUM(visible_at > ? AND leased = 1), MIN(created_at) FROM messages GROUP BY queue");
    q.bind(1, static_cast<std::int64_t>(now));
    q.bind(2, static_cast<std::int64_t>(now));
    q.bind(3, static_cast<std::int64_t>(now));
    while (q.executeStep()) {
        QueueStats& s = by_queue[q.getColumn(0).getString()];
        s.queue = q.getColumn(0).getString();
        s.ready = q.getColumn(1).getInt64();
        s.delayed = q.getColumn(2).getInt64();
        s.leased = q.getColumn(3).getInt64();
        s.oldest_ms = q.getColumn(4).getInt64();
    }
    SQLite::Statement d(*db, "SELECT queue, COUNT(*) FROM dead_letters GROUP BY queue");
    while (d.executeStep()) {
        QueueStats& s = by_queue[d.getColumn(0).getString()];
        s.queue = d.getColumn(0).getString();
        s.dead = d.getColumn(1).getInt64();
    }
    std::vector<QueueStats> out;
    for (auto& [name, s] : by_queue) out.push_back(s);
    return out;
}

Json SqliteQueue::peek(const std::string& path, const std::string& queue, int limit) {
    auto db = open_database(path, 5000, false);
    SQLite::Statement q(*db,
                        "SELECT id, payload, headers, visible_at, attempts, leased, last_error FROM messages "
                        "WHERE queue = ? ORDER BY visible_at, id LIMIT ?");
    q.bind(1, queue);
    q.bind(2, limit);
    Json out = Json::array();
    while (q.executeStep()) {
        Json m = {{"id", q.getColumn(0).getInt64()},
                  {"payload", q.getColumn(1).getString()},
                  {"headers", Json::parse(q.getColumn(2).getString(), nullptr, false)},
                  {"visible_at", q.getColumn(3).getInt64()},
                  {"attempts", q.getColumn(4).getInt()},
                  {"leased", q.getColumn(5).getInt() != 0}};
        if (!q.getColumn(6).isNull()) m["last_error"] = q.getColumn(6).getString();
        out.push_back(std::move(m));
    }
    return out;
}

Json SqliteQueue::dead_letters(const std::string& path, const std::string& queue, int limit) {
    auto db = open_database(path, 5000, false);
    SQLite::Statement q(*db,
                        "SELECT id, queue, payload, attempts, failed_at, error FROM dead_letters "
                        "WHERE (? = '' OR queue = ?) ORDER BY id LIMIT ?");
    q.bind(1, queue);
    q.bind(2, queue);
    q.bind(3, limit);
    Json out = Json::array();
    while (q.executeStep()) {
        out.push_back({{"id", q.getColumn(0).getInt64()},
                       {"queue", q.getColumn(1).getString()},
                       {"payload", q.getColumn(2).getString()},
                       {"attempts", q.getColumn(3).getInt()},
                       {"failed_at", q.getColumn(4).getInt64()},
                       {"error", q.getColumn(5).getString()}});
    }
    return out;
}

int SqliteQueue::retry_dead_letters(const std::string& path, const std::string& queue, std::int64_t id) {
    auto db = open_database(path, 5000, false);
    SQLite::Transaction tx(*db, SQLite::TransactionBehavior::IMMEDIATE);
    const char* where = "WHERE (? = '' OR queue = ?) AND (? = 0 OR id = ?)";
    SQLite::Statement move(*db, std::string("INSERT INTO messages (queue, payload, headers, visible_at, created_at) "
                                            "SELECT queue, payload, headers, ?, created_at FROM dead_letters ") +
                                    where + " ORDER BY id");
    move.bind(1, static_cast<std::int64_t>(now_ms()));
    move.bind(2, queue);
    move.bind(3, queue);
    move.bind(4, static_cast<std::int64_t>(id));
    move.bind(5, static_cast<std::int64_t>(id));
    int n = move.exec();
    SQLite::Statement del(*db, std::string("DELETE FROM dead_letters ") + where);
    del.bind(1, queue);
    del.bind(2, queue);
    del.bind(3, static_cast<std::int64_t>(id));
    del.bind(4, static_cast<std::int64_t>(id));
    del.exec();
    tx.commit();
    return n;
}

}  // namespace hydra::queue
