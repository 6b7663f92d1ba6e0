#include "queue/sqlite_queue.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <ctime>

#include <algorithm>
#include <chrono>
#include <filesystem>
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

std::unique_ptr<SQLite::Database> open_database(const std::string& path, int busy_timeout_ms, bool full_sync) {
    try {
        std::filesystem::path p(path);
        if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
        auto db =
            std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE, busy_timeout_ms);
        // WAL: readers never block the writer, and a commit is one append to the log.
        db->exec("PRAGMA journal_mode=WAL");
        db->exec(full_sync ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
        db->exec(kSchema);
        return db;
    } catch (const std::exception& e) {
        throw std::runtime_error("queue: cannot open SQLite database " + path + ": " + e.what());
    }
}

Headers parse_headers(const std::string& text) {
    Headers h;
    try {
        Json j = Json::parse(text);
        for (auto& [k, v] : j.items()) h[k] = v.is_string() ? v.get<std::string>() : v.dump();
    } catch (const std::exception&) {
        // headers are written by us as JSON; an unreadable row keeps its payload
    }
    return h;
}

}  // namespace

// A group of operations committed in one transaction; pushers wait for `done`.
// Waiters sleep on `state` with a futex: a commit wakes exactly its own waiters, and they return without
// taking any lock (a condition variable would make all of them queue for its mutex again).
struct SqliteQueue::Batch {
    std::atomic<int> state{0};  // 0 pending, 1 committed or failed
    std::string error;          // empty on success; written before `state`

    void finish(std::string err) {
        error = std::move(err);
        state.store(1, std::memory_order_release);
        syscall(SYS_futex, reinterpret_cast<int*>(&state), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr, nullptr, 0);
    }
    // False on timeout.
    bool wait(std::chrono::milliseconds timeout) {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (state.load(std::memory_order_acquire) == 0) {
            auto left = deadline - std::chrono::steady_clock::now();
            if (left <= std::chrono::nanoseconds(0)) return false;
            auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
            timespec ts{static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
            syscall(SYS_futex, reinterpret_cast<int*>(&state), FUTEX_WAIT_PRIVATE, 0, &ts, nullptr, 0);
        }
        return true;
    }
    bool done() const { return state.load(std::memory_order_acquire) != 0; }
};

struct SqliteQueue::Op {
    struct Push {
        std::string queue;
        std::string payload;
        std::string headers;
        std::int64_t visible_at;
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
    struct Lease {
        std::string queue;
        int max;
        std::shared_ptr<std::vector<Message>> out;
        std::shared_ptr<std::int64_t> next_visible;
    };
    std::variant<Push, Ack, Fail, Lease> what;
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
          // Oldest visible first (FIFO for equal visibility); taking one hides it for the lease time.
          take(db,
               "UPDATE messages SET visible_at = ?, attempts = attempts + 1, leased = 1 "
               "WHERE id IN (SELECT id FROM messages WHERE queue = ? AND visible_at <= ? ORDER BY visible_at, id "
               "LIMIT ?) RETURNING id, payload, headers, attempts"),
          next(db, "SELECT MIN(visible_at) FROM messages WHERE queue = ?") {}

    SQLite::Statement insert, ack, bury, remove, retry, take, next;
};

struct SqliteQueue::Consumer {
    Subscription sub;
    std::unique_ptr<WorkerPool> pool;
    std::thread fetcher;
    std::mutex mutex;
    std::condition_variable cv;
    int in_flight = 0;
};

SqliteQueue::Settings SqliteQueue::Settings::from(const Config& config) {
    Settings s;
    s.path = config.str("queue.sqlite.path");
    s.full_sync = config.str("queue.sqlite.synchronous") == "full";
    s.busy_timeout_ms = static_cast<int>(config.integer("queue.sqlite.busy_timeout_ms"));
    s.lease = std::chrono::milliseconds(config.integer("queue.sqlite.lease_ms"));
    s.push_timeout = std::chrono::milliseconds(config.integer("queue.push_timeout_ms"));
    return s;
}

SqliteQueue::SqliteQueue(Settings settings, RetryPolicy retry)
    : settings_(std::move(settings)), retry_(retry), current_(std::make_shared<Batch>()) {
    db_ = open_database(settings_.path, settings_.busy_timeout_ms, settings_.full_sync);
    writer_ = std::thread([this] { writer_loop(); });
}

SqliteQueue::~SqliteQueue() { stop(std::chrono::milliseconds(5000)); }

void SqliteQueue::enqueue(Op op) {
    {
        std::lock_guard lock(mutex_);
        ops_.push_back(std::move(op));
    }
    work_cv_.notify_one();
}

void SqliteQueue::push(std::string_view queue, std::string_view payload, const Headers& headers,
                       std::chrono::milliseconds delay) {
    validate_queue_name(queue);
    std::string header_text = "{}";
    if (!headers.empty()) {
        Json h = Json::object();
        for (const auto& [k, v] : headers) h[k] = v;
        header_text = h.dump(-1, ' ', false, Json::error_handler_t::replace);
    }
    Op op;
    op.what = Op::Push{std::string(queue), std::string(payload), std::move(header_text),
                       now_ms() + std::max<std::int64_t>(0, delay.count())};
    std::shared_ptr<Batch> batch;
    {
        std::unique_lock lock(mutex_);
        if (writer_stopping_) throw QueueError("queue: push to " + std::string(queue) + ": the queue is stopped", true);
        batch = current_;
        op.batch = batch;
        ops_.push_back(std::move(op));
    }
    work_cv_.notify_one();
    // Group commit: everyone who pushed while the previous transaction ran shares the next one.
    if (!batch->wait(settings_.push_timeout))
        throw QueueError("queue: push to " + std::string(queue) + " timed out after " +
                             std::to_string(settings_.push_timeout.count()) + " ms (the database is busy)",
                         true);
    if (!batch->error.empty())
        throw QueueError("queue: push to " + std::string(queue) + " failed: " + batch->error, true);
}

void SqliteQueue::writer_loop() {
    std::unique_ptr<Statements> st;
    try {
        st = std::make_unique<Statements>(*db_);
    } catch (const std::exception& e) {
        Logger().error(std::string("queue: sqlite: cannot prepare statements: ") + e.what());
    }
    std::vector<Op> ops;
    for (;;) {
        std::shared_ptr<Batch> batch;
        {
            std::unique_lock lock(mutex_);
            work_cv_.wait(lock, [&] { return writer_stopping_ || !ops_.empty(); });
            if (ops_.empty()) return;  // stopping and drained
            ops.swap(ops_);
            batch = current_;
            current_ = std::make_shared<Batch>();
        }
        std::vector<std::string> pushed_queues;
        std::string error;
        std::int64_t now = now_ms();
        try {
            if (!st) throw std::runtime_error("the database could not be prepared");
            SQLite::Transaction tx(*db_, SQLite::TransactionBehavior::IMMEDIATE);
            for (auto& op : ops) execute(op, now, pushed_queues, *st);
            tx.commit();
        } catch (const std::exception& e) {
            error = e.what();
            pushed_queues.clear();
            Logger().error("queue: sqlite transaction of " + std::to_string(ops.size()) +
                           " operations failed: " + error);
        }
        batch->finish(error);
        // Leases run in this batch too; a lease that failed returns nothing and is tried again later.
        for (auto& op : ops)
            if (op.batch && op.batch != batch) op.batch->finish(error);
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

void SqliteQueue::execute(Op& op, std::int64_t now, std::vector<std::string>& pushed_queues, Statements& st) {
    if (auto* p = std::get_if<Op::Push>(&op.what)) {
        st.insert.reset();
        st.insert.bind(1, p->queue);
        st.insert.bind(2, p->payload.data(), static_cast<int>(p->payload.size()));
        st.insert.bind(3, p->headers);
        st.insert.bind(4, static_cast<std::int64_t>(p->visible_at));
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
    } else if (auto* l = std::get_if<Op::Lease>(&op.what)) {
        st.take.reset();
        st.take.bind(1, static_cast<std::int64_t>(now + settings_.lease.count()));
        st.take.bind(2, l->queue);
        st.take.bind(3, static_cast<std::int64_t>(now));
        st.take.bind(4, l->max);
        while (st.take.executeStep()) {
            Message m;
            m.id = std::to_string(st.take.getColumn(0).getInt64());
            m.queue = l->queue;
            const auto& payload = st.take.getColumn(1);
            m.payload.assign(static_cast<const char*>(payload.getBlob()), static_cast<std::size_t>(payload.getBytes()));
            m.headers = parse_headers(st.take.getColumn(2).getString());
            m.attempt = st.take.getColumn(3).getInt();
            l->out->push_back(std::move(m));
        }
        st.take.reset();
        // RETURNING gives rows in no set order.
        std::sort(l->out->begin(), l->out->end(),
                  [](const Message& a, const Message& b) { return std::stoll(a.id) < std::stoll(b.id); });
        st.next.reset();
        st.next.bind(1, l->queue);
        *l->next_visible =
            st.next.executeStep() && !st.next.getColumn(0).isNull() ? st.next.getColumn(0).getInt64() : 0;
        st.next.reset();
    }
}

std::vector<Message> SqliteQueue::lease(const std::string& queue, int max, std::int64_t& next_visible_ms) {
    auto out = std::make_shared<std::vector<Message>>();
    auto next = std::make_shared<std::int64_t>(0);
    auto batch = std::make_shared<Batch>();
    Op op;
    op.what = Op::Lease{queue, max, out, next};
    op.batch = batch;
    {
        std::lock_guard lock(mutex_);
        if (writer_stopping_) return {};
        ops_.push_back(std::move(op));
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
    consumers_.push_back(std::move(c));
}

void SqliteQueue::start() {
    if (started_) return;
    started_ = true;
    consuming_ = true;
    for (auto& c : consumers_) {
        Consumer* consumer = c.get();
        consumer->pool = std::make_unique<WorkerPool>(static_cast<std::size_t>(consumer->sub.concurrency), "mqc");
        consumer->fetcher = std::thread([this, consumer] { consume(*consumer); });
    }
}

void SqliteQueue::consume(Consumer& c) {
    const std::string& queue = c.sub.queue;
    while (consuming_) {
        int free;
        {
            std::unique_lock lock(c.mutex);
            c.cv.wait(lock, [&] { return !consuming_ || c.in_flight < c.sub.concurrency; });
            if (!consuming_) return;
            free = c.sub.concurrency - c.in_flight;
        }
        std::uint64_t seen;
        {
            std::lock_guard lock(pushed_mutex_);
            seen = generation_[queue];
        }
        std::int64_t next_visible = 0;
        std::vector<Message> batch = lease(queue, free, next_visible);
        if (batch.empty()) {
            // Sleep until a push to this queue commits, the next delayed message is due, or the poll interval
            // passes (another process may push to the same file).
            auto wait = settings_.poll_interval;
            if (next_visible > 0)
                wait = std::min(wait, std::chrono::milliseconds(std::max<std::int64_t>(1, next_visible - now_ms())));
            std::unique_lock lock(pushed_mutex_);
            pushed_cv_.wait_for(lock, wait, [&] { return !consuming_ || generation_[queue] != seen; });
            continue;
        }
        {
            std::lock_guard lock(c.mutex);
            c.in_flight += static_cast<int>(batch.size());
        }
        for (auto& m : batch) {
            c.pool->post([this, &c, m = std::move(m)] {
                std::int64_t id = std::stoll(m.id);
                try {
                    c.sub.handler(m);
                    Op op;
                    op.what = Op::Ack{id, m.attempt};
                    enqueue(std::move(op));
                } catch (const std::exception& e) {
                    Logger(m.headers.count("x-request-id") ? m.headers.at("x-request-id") : m.id)
                        .warn("mqc: " + m.queue + " message " + m.id + " attempt " + std::to_string(m.attempt) +
                              " failed: " + e.what());
                    Op op;
                    op.what = Op::Fail{id, m.attempt, e.what()};
                    enqueue(std::move(op));
                }
                {
                    std::lock_guard lock(c.mutex);
                    --c.in_flight;
                }
                c.cv.notify_all();
            });
        }
    }
}

void SqliteQueue::stop(std::chrono::milliseconds grace) {
    if (stopped_) return;
    stopped_ = true;
    consuming_ = false;
    pushed_cv_.notify_all();
    for (auto& c : consumers_) c->cv.notify_all();
    for (auto& c : consumers_)
        if (c->fetcher.joinable()) c->fetcher.join();
    // In-flight handlers finish (bounded by `grace` for the log); their acks go through the writer below.
    auto deadline = std::chrono::steady_clock::now() + grace;
    for (auto& c : consumers_) {
        std::unique_lock lock(c->mutex);
        if (!c->cv.wait_until(lock, deadline, [&] { return c->in_flight == 0; }))
            Logger().warn("mqc: " + c->sub.queue + ": " + std::to_string(c->in_flight) +
                          " handler(s) still running after the grace period; their messages will be redelivered "
                          "after the lease");
    }
    for (auto& c : consumers_)
        if (c->pool) c->pool->stop();
    {
        std::lock_guard lock(mutex_);
        writer_stopping_ = true;
    }
    work_cv_.notify_all();
    if (writer_.joinable()) writer_.join();
    db_.reset();
}

// --- inspection -------------------------------------------------------------------------------------------------

std::vector<SqliteQueue::QueueStats> SqliteQueue::stats(const std::string& path) {
    auto db = open_database(path, 5000, false);
    std::map<std::string, QueueStats> by_queue;
    std::int64_t now = now_ms();
    SQLite::Statement q(*db,
                        "SELECT queue, SUM(visible_at <= ?), SUM(visible_at > ? AND leased = 0), "
                        "SUM(visible_at > ? AND leased = 1) FROM messages GROUP BY queue");
    q.bind(1, static_cast<std::int64_t>(now));
    q.bind(2, static_cast<std::int64_t>(now));
    q.bind(3, static_cast<std::int64_t>(now));
    while (q.executeStep()) {
        QueueStats& s = by_queue[q.getColumn(0).getString()];
        s.queue = q.getColumn(0).getString();
        s.ready = q.getColumn(1).getInt64();
        s.delayed = q.getColumn(2).getInt64();
        s.leased = q.getColumn(3).getInt64();
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
