// The SQLite backend's private parts, shared by its writer (writer.cpp) and its consumers (consumer.cpp).
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>
#include <linux/futex.h>
#include <sqlite3.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <ctime>

#include <atomic>
#include <chrono>
#include <limits>
#include <optional>
#include <thread>
#include <variant>

#include "queue/sqlite/sqlite_queue.h"

namespace hydra::queue {

namespace sqlite {

// The longest an ack (or a failure, a release) waits for a transaction to join; see SqliteQueue::enqueue_lazy().
constexpr auto kLazyCommit = std::chrono::milliseconds(20);

// Wakes up to `n` threads waiting on `word` (FUTEX_WAIT_PRIVATE).
inline void futex_wake(std::atomic<int>& word, int n) {
    syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAKE_PRIVATE, n, nullptr, nullptr, 0);
}

}  // namespace sqlite

// A group of operations committed in one transaction; pushers wait for it to finish.
// Waiters sleep on `state` with a futex: a commit wakes only its own waiters, and they return without taking any
// lock (a condition variable would make all of them queue for its mutex again). The writer wakes all of them with
// one system call. (Waking two that each woke two more, spreading the wake-ups over the woken threads, was slower:
// 64 blocking pushers 82-86k push/s against 116-121k with one call, alternating runs of `hydra-bench queue`.)
struct SqliteQueue::Batch {
    std::atomic<int> state{0};    // 0 pending, 1 committed or failed
    std::atomic<int> waiters{0};  // threads in wait() that found it pending: no wake-up syscall when there are none
    std::string error;            // empty on success; written before `state`
    std::vector<PushDone> done;   // of push_async(); appended under SqliteQueue::mutex_ while this batch is current_

    void finish(std::string err) {
        error = std::move(err);
        state.store(1);  // sequentially consistent with the waiters' count below, as in wait()
        if (waiters.load() > 0) sqlite::futex_wake(state, std::numeric_limits<int>::max());
        if (done.empty()) return;
        std::optional<QueueError> failed;
        if (!error.empty()) failed.emplace("queue: push failed: " + error, true);
        for (auto& d : done) d(failed ? &*failed : nullptr);
        done.clear();
    }
    // False on timeout; no timeout without a deadline.
    bool wait(const std::chrono::steady_clock::time_point* deadline) {
        if (state.load() != 0) return true;
        ++waiters;
        bool done = true;
        while (state.load() == 0) {
            timespec ts{};
            if (deadline != nullptr) {
                auto left = *deadline - std::chrono::steady_clock::now();
                if (left <= std::chrono::nanoseconds(0)) {
                    done = false;
                    break;
                }
                auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
                ts = {static_cast<time_t>(ns / 1000000000), static_cast<long>(ns % 1000000000)};
            }
            syscall(SYS_futex, reinterpret_cast<int*>(&state), FUTEX_WAIT_PRIVATE, 0,
                    deadline != nullptr ? &ts : nullptr, nullptr, 0);
        }
        --waiters;
        return done;
    }
};

struct SqliteQueue::Op {
    struct Push {
        std::string queue;
        std::string payload;
        std::string headers;
        std::int64_t delay_ms;  // visible at commit time + delay: without one, visible_at = created_at
        int handoff = -1;       // the writer's: index of the hand-off (a parked consumer) it is inserted leased for
        std::int64_t id = 0;    // the writer's: its row id, once inserted for a hand-off
        // The headers as given (one push): a hand-off's delivery takes them instead of decoding `headers` again.
        std::optional<Headers> given = std::nullopt;
    };
    struct Ack {
        std::int64_t id;
        int attempts;
    };
    struct Retry {
        std::int64_t id;
        int attempts;
        std::int64_t at_ms;
        std::string error;
    };
    struct Bury {
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
        std::shared_ptr<std::vector<Delivery>> out;
        std::shared_ptr<std::int64_t> next_visible;
    };
    std::variant<Ack, Push, Retry, Bury, Release, Lease> what;  // Ack first: Push has member initializers
    std::shared_ptr<Batch> batch;                               // pushes and leases wait for their batch
};

// The writer's prepared statements: prepared once, reused for every operation.
struct SqliteQueue::Statements {
    explicit Statements(SQLite::Database& db)
        : insert(db, insert_rows_sql(1)),
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
          any_visible(db, "SELECT 1 FROM messages WHERE queue = ? AND visible_at <= ? LIMIT 1"),
          insert_32(db, insert_rows_sql(32)),
          insert_8(db, insert_rows_sql(8)),
          begin(db, "BEGIN IMMEDIATE"),
          commit(db, "COMMIT"),
          rollback(db, "ROLLBACK") {}

    // Pushes that come in a row are inserted 32 or 8 at a time: one statement per row would cost a statement
    // execution (and an AUTOINCREMENT update) for each. A row handed to a parked consumer is inserted leased
    // (attempts 1, invisible for the lease time): no separate update to take it.
    static constexpr int kInsertColumns = 7;
    static std::string insert_rows_sql(int rows) {
        std::string sql =
            "INSERT INTO messages (queue, payload, headers, visible_at, created_at, attempts, leased) VALUES ";
        for (int i = 0; i < rows; ++i) sql += i == 0 ? "(?, ?, ?, ?, ?, ?, ?)" : ", (?, ?, ?, ?, ?, ?, ?)";
        return sql;
    }

    SQLite::Statement insert, ack, bury, remove, retry, release, take, next, any_visible, insert_32, insert_8;
    // The writer's transaction, prepared once (SQLite::Transaction parses its SQL at every transaction).
    SQLite::Statement begin, commit, rollback;
};

// BEGIN IMMEDIATE ... COMMIT with the prepared statements; rolled back when left without commit() (an exception),
// unless SQLite ended the transaction itself (it does on some errors: full disk, I/O).
class SqliteQueue::WriteTransaction {
  public:
    WriteTransaction(SQLite::Database& db, Statements& st) : db_(db), st_(st) { run(st_.begin); }
    ~WriteTransaction() {
        if (committed_ || sqlite3_get_autocommit(db_.getHandle()) != 0) return;
        try {
            run(st_.rollback);
        } catch (...) {  // the connection is unusable: every later transaction fails, and says why
        }
    }
    WriteTransaction(const WriteTransaction&) = delete;
    WriteTransaction& operator=(const WriteTransaction&) = delete;
    void commit() {
        run(st_.commit);
        committed_ = true;
    }

  private:
    // A statement's earlier failure was thrown when it happened: reset() would throw it again.
    static void run(SQLite::Statement& statement) {
        statement.tryReset();
        statement.exec();
    }
    SQLite::Database& db_;
    Statements& st_;
    bool committed_ = false;
};

// One subscription: a fetcher thread leases messages for its sink (the consumer) while it wants more; while the
// queue is empty, the writer hands pushes to it directly (plan_hand_off()).
struct SqliteQueue::Consumer {
    Subscription sub;
    std::thread fetcher;
    std::atomic<bool> parked{false};  // the fetcher found nothing and sleeps until a push (see plan_hand_off())
};

// Pushes inserted leased for a parked consumer in their own transaction, delivered to it after the commit.
struct SqliteQueue::Handoff {
    Consumer* consumer;
    std::size_t room;       // at most this many
    std::size_t taken = 0;  // pushes of this transaction marked for it
    bool all = true;        // it got every push of this transaction to its queue (else its fetcher looks too)
    std::vector<Delivery> leased;
};

}  // namespace hydra::queue
