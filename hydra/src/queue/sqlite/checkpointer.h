// WAL checkpoints on a thread of their own. SQLite's automatic checkpoint runs inside the commit that takes the log
// past 1,000 pages: it copies the log's pages into the database and syncs both files, milliseconds during which the
// writer commits nothing and every push waits (the tail of the push path's latency). Here the writer's commits only
// report the log's size; a thread with its own connection runs passive checkpoints (they never block the writer),
// and the writer's own checkpoint, needed for the log to restart, finds almost everything copied already.
#pragma once

#include <sqlite3.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

namespace SQLite {
class Database;
}

namespace hydra::queue::sqlite {

class Checkpointer {
  public:
    // A checkpoint is due when a commit leaves the log at this many pages (8 MB of 4 KB pages; SQLite's own is
    // 1,000). A queue's rows live briefly, so a checkpoint copies about the same pages however long the log: a
    // longer one means fewer of them for the same messages.
    static constexpr int kPages = 2000;
    // The log restarts from its beginning only at a commit that finds it copied entirely, and under a steady
    // stream of commits the writer is always a little ahead of the thread. So at this many pages the writer runs a
    // passive checkpoint itself, as SQLite would: it copies only what the thread has not yet (the last commits),
    // syncs, and the next commit restarts the log. It also bounds the log whatever happens to the thread.
    static constexpr int kWriterPages = 4 * kPages;
    // Between the two, the thread is asked again after every this many more pages (each of its checkpoints syncs
    // the log: not one per commit).
    static constexpr int kStep = kPages / 2;

    // Takes over the checkpoints of the writer's connection `writer` (its WAL hook) and starts the thread, with a
    // connection of its own to `path`. Throws std::runtime_error when that connection cannot be opened.
    Checkpointer(SQLite::Database& writer, const std::string& path, int busy_timeout_ms, bool full_sync);
    // Stops the thread and gives the writer's connection its automatic checkpoint back. Call once the writer's
    // commits have ended.
    ~Checkpointer();
    Checkpointer(const Checkpointer&) = delete;
    Checkpointer& operator=(const Checkpointer&) = delete;

    // Checkpoints run so far by the thread and by the writer (the latter, a commit waited for it).
    long by_thread() const { return by_thread_.load(std::memory_order_relaxed); }
    long by_writer() const { return by_writer_.load(std::memory_order_relaxed); }

  private:
    static int on_commit(void* self, sqlite3* db, const char* name, int pages);
    void run();

    sqlite3* writer_;
    std::unique_ptr<SQLite::Database> db_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool due_ = false;
    bool stopping_ = false;
    std::atomic<bool> signalled_{false};  // a wake-up is on its way: later commits do not take the lock
    int next_ = kPages;                   // the log's size at which to ask the thread (the writer's thread only)
    std::atomic<long> by_thread_{0}, by_writer_{0};
    std::thread thread_;
};

}  // namespace hydra::queue::sqlite
