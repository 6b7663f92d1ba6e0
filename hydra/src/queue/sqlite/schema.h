// The SQLite file: its schema, how it is opened, how headers are stored.
#pragma once

#include <memory>
#include <string>

#include <hydra/queue.h>

namespace SQLite {
class Database;
}

namespace hydra::queue::sqlite {

// Opens (creating it, its directory and the schema if needed) the database in WAL mode. `one_thread`: the
// connection is only ever used by one thread at a time, so SQLite can skip its own locking. Throws
// std::runtime_error "queue: cannot open SQLite database <path>: <reason>".
std::unique_ptr<SQLite::Database> open_database(const std::string& path, int busy_timeout_ms, bool full_sync,
                                                bool one_thread = false);

// Headers as stored: a JSON object of strings (read back by decode_headers(), queue/backend.h).
std::string encode_headers(const Headers& headers);

}  // namespace hydra::queue::sqlite
