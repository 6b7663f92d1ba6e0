#include "queue/sqlite/schema.h"

#include <SQLiteCpp/SQLiteCpp.h>

#include <filesystem>
#include <stdexcept>

#include <hydra/json.h>

namespace hydra::queue::sqlite {

namespace {

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

}  // namespace

std::unique_ptr<SQLite::Database> open_database(const std::string& path, int busy_timeout_ms, bool full_sync,
                                                bool one_thread) {
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

// Plain printable ASCII (request ids, names: the usual case) is written directly (append_json_string).
std::string encode_headers(const Headers& headers) {
    std::size_t size = 2;
    for (const auto& [k, v] : headers) size += k.size() + v.size() + 6;
    std::string out;
    out.reserve(size);
    out += '{';
    for (const auto& [k, v] : headers) {
        if (out.size() > 1) out += ',';
        append_json_string(out, k);
        out += ':';
        append_json_string(out, v);
    }
    out += '}';
    return out;
}

}  // namespace hydra::queue::sqlite
