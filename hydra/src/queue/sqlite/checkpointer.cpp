#include "queue/sqlite/checkpointer.h"

#include <pthread.h>

#include <SQLiteCpp/SQLiteCpp.h>

#include <hydra/log.h>

#include "queue/sqlite/schema.h"

namespace hydra::queue::sqlite {

Checkpointer::Checkpointer(SQLite::Database& writer, const std::string& path, int busy_timeout_ms, bool full_sync)
    : writer_(writer.getHandle()), db_(open_database(path, busy_timeout_ms, full_sync, true)) {
    sqlite3_wal_hook(writer_, &Checkpointer::on_commit, this);  // replaces the automatic checkpoint
    thread_ = std::thread([this] { run(); });
}

Checkpointer::~Checkpointer() {
    sqlite3_wal_autocheckpoint(writer_, kPages);  // removes our hook
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
}

// On the writer's thread, after each commit: `pages` is the log's size.
int Checkpointer::on_commit(void* arg, sqlite3* db, const char* name, int pages) {
    auto* self = static_cast<Checkpointer*>(arg);
    if (pages < self->next_ - kStep) self->next_ = kPages;  // the log restarted
    if (pages >= kWriterPages) {
        // SQLITE_BUSY when the thread is in the middle of one: the next commit tries again.
        if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr) == SQLITE_OK)
            self->by_writer_.fetch_add(1, std::memory_order_relaxed);
    } else if (pages >= self->next_ && !self->signalled_.exchange(true, std::memory_order_acq_rel)) {
        self->next_ = pages + kStep;
        {
            std::lock_guard lock(self->mutex_);
            self->due_ = true;
        }
        self->wake_.notify_one();
    }
    return SQLITE_OK;
}

void Checkpointer::run() {
    pthread_setname_np(pthread_self(), "queue-ckpt");  // 15 characters at most
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            wake_.wait(lock, [this] { return stopping_ || due_; });
            if (stopping_) return;
            due_ = false;
        }
        const int rc =
            sqlite3_wal_checkpoint_v2(db_->getHandle(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            Logger().warn(std::string("queue: sqlite: checkpoint failed: ") + sqlite3_errstr(rc));
        if (rc == SQLITE_OK) by_thread_.fetch_add(1, std::memory_order_relaxed);
        // A commit kStep pages later asks again (the log restarts only at a commit that finds it copied entirely).
        signalled_.store(false, std::memory_order_release);
    }
}

}  // namespace hydra::queue::sqlite
