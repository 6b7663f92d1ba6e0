// The embedded queue: one SQLite file (WAL), a writer thread that group-commits every pending operation in one
// transaction (writer.cpp), leases with a visibility timeout delivered to the consumers (consumer.cpp), retries at a
// time, dead letters, delayed messages; inspection for the CLI (inspect.cpp).
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <hydra/json.h>

#include "queue/backend.h"

namespace SQLite {
class Database;
class Statement;
}  // namespace SQLite

namespace hydra::queue {

namespace sqlite {
class Checkpointer;
}

class SqliteQueue : public Backend {
  public:
    struct Settings {
        std::string path = "data/queue.db";
        bool full_sync = false;  // synchronous=FULL (survives power loss) instead of NORMAL (survives a crash)
        int busy_timeout_ms = 5000;
        std::chrono::milliseconds lease{30000};  // a taken message is invisible this long, then redelivered
        std::chrono::milliseconds push_timeout{5000};
        std::chrono::milliseconds poll_interval{500};  // how often consumers look for messages of other processes
        // Under a steady stream of pushes, how long a small transaction waits for more to join it (0: never).
        std::chrono::microseconds commit_delay{3000};

        static Settings from(const Config& config);
    };

    // Opens (creating it and its directory if needed) the database. Throws std::runtime_error
    // "queue: cannot open SQLite database <path>: <reason>" on a corrupt or unwritable file.
    explicit SqliteQueue(Settings settings);
    ~SqliteQueue() override;

    void push(std::string_view queue, std::string_view payload, const Headers& headers = {},
              std::chrono::milliseconds delay = std::chrono::milliseconds{0}) override;
    // All rows in one transaction (the group commit they join).
    void push_batch(std::string_view queue, std::span<const std::string> payloads,
                    const Headers& headers = {}) override;
    // Joins the next group commit; `done` runs on the writer thread after it.
    void push_async(std::string_view queue, std::string_view payload, const Headers& headers,
                    std::chrono::milliseconds delay, PushDone done) override;
    std::string backend() const override { return "sqlite"; }

    void subscribe(Subscription subscription) override;
    void start() override;
    void stop(std::chrono::milliseconds grace) override;
    // Recorded lazily (with the next transaction, within kLazyCommit): nobody waits for them.
    void ack(Delivery& delivery) override;
    void retry(Delivery& delivery, std::int64_t at_ms, std::string error) override;
    void dead_letter(Delivery& delivery, std::string error) override;
    // Back to its place in its queue, visible at once, the attempt not counted.
    void release(Delivery& delivery) override;
    // hydra_queue_messages and hydra_queue_oldest_message_age_seconds of every queue (a read of the database).
    void collect(metrics::Samples& samples) override;
    Heartbeats heartbeats() const override { return {{"queue-writer", writer_beat_}}; }
    // Not ready while the writer's last transaction failed (the database could not be written).
    std::string check_ready(std::chrono::milliseconds timeout) override;
    // The log's checkpoints so far: by the checkpoint thread, and by the writer itself (a commit waited for it).
    long checkpoints_by_thread() const;
    long checkpoints_by_writer() const;

    // Inspection and repair for `hydra queue ...`; they open their own connection, so they also work while a
    // server is running on the same file.
    struct QueueStats {
        std::string queue;
        std::int64_t ready = 0;      // visible now
        std::int64_t delayed = 0;    // waiting for a delay or a retry backoff
        std::int64_t leased = 0;     // taken by a consumer, not yet acknowledged
        std::int64_t dead = 0;       // in the dead letters
        std::int64_t oldest_ms = 0;  // when the oldest message still in the queue was pushed (0: none)
    };
    static std::vector<QueueStats> stats(const std::string& path);
    static Json peek(const std::string& path, const std::string& queue, int limit);
    static Json dead_letters(const std::string& path, const std::string& queue, int limit);
    // Moves dead letters back to their queues (all of `queue`, or one id when id > 0). Returns how many.
    static int retry_dead_letters(const std::string& path, const std::string& queue, std::int64_t id);

  private:
    struct Batch;
    struct Op;
    struct Consumer;
    struct Statements;
    class WriteTransaction;
    struct Handoff;

    void writer_loop();
    void execute(Op& op, std::int64_t now_ms, std::vector<std::string>& pushed_queues, Statements& statements);
    // Adds ops to the next transaction (and `done`, if given, to its callbacks); returns its batch, or null once
    // the writer is stopping (`done` untouched then).
    std::shared_ptr<Batch> submit(std::vector<Op>& ops, PushDone* done = nullptr);
    void wait_pushed(std::string_view queue, const std::shared_ptr<Batch>& batch);
    // Throws QueueError when called on this queue's writer thread (a nonblocking MQC handler's blocking push).
    void refuse_on_writer(std::string_view queue) const;
    void take(Statements& st, const std::string& queue, int max, std::int64_t now, std::vector<Delivery>& out);
    // Marks the pushes among `ops` that go straight to a parked consumer (Op::Push::handoff); returns the hand-offs.
    std::vector<Handoff> plan_hand_off(std::vector<Op>& ops);
    // Binds the push `op` as row `row` (0-based) of an insert statement.
    void bind_row(SQLite::Statement& insert, int row, Op& op, std::int64_t now) const;
    // In the transaction, before the inserts: no hand-off for a consumer whose queue holds visible messages.
    void keep_order(Statements& st, std::int64_t now, std::vector<Handoff>& handoffs, std::vector<Op>& ops);
    // After the commit: the handed-off pushes to their consumers.
    void deliver(std::vector<Handoff>& handoffs, std::vector<Op>& ops);
    std::vector<Delivery> lease(const std::string& queue, int max, std::int64_t& next_visible_ms);
    void fetch(Consumer& consumer);
    void enqueue_lazy(Op op);
    static std::vector<Op> one_push(std::string_view queue, std::string_view payload, const Headers& headers,
                                    std::chrono::milliseconds delay);

    Settings settings_;
    std::unique_ptr<SQLite::Database> db_;                // the writer's connection, used only by the writer thread
    std::unique_ptr<sqlite::Checkpointer> checkpointer_;  // the log's checkpoints, off the writer's thread

    std::mutex mutex_;
    std::condition_variable work_cv_;  // writer: ops arrived
    std::vector<Op> ops_;              // waiting for the writer
    int urgent_ = 0;                   // of them, pushes and leases: someone waits for their commit
    std::shared_ptr<Batch> current_;   // the batch the next pushes join
    bool writer_stopping_ = false;
    HeartbeatClock writer_beat_ = make_heartbeat();  // the writer's turns (at least every kLazyCommit when idle)
    std::mutex commit_error_mutex_;
    std::string commit_error_;  // of the writer's last transaction, "" when it committed
    std::thread writer_;

    std::mutex pushed_mutex_;
    std::condition_variable pushed_cv_;                // consumers: something was pushed
    std::map<std::string, std::uint64_t> generation_;  // per queue, bumped on each committed push

    std::vector<std::unique_ptr<Consumer>> consumers_;
    std::atomic<bool> consuming_{false};
    bool started_ = false;
    bool stopped_ = false;
};

}  // namespace hydra::queue
