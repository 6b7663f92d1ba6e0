// The floors' SQLite writes (hydra-bench floor --queue, hydra-bench queue --phases floor): payloads inserted 32, 8,
// then 1 row per INSERT statement, as the SQLite queue backend does.
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>

#include <string>
#include <utility>
#include <vector>

namespace bench {

class RowInserter {
  public:
    // head: "INSERT INTO t (payload, ...) VALUES "; row: one row's values with one ? for the payload, "(?, 1)".
    RowInserter(SQLite::Database& db, const std::string& head, const std::string& row) {
        for (int rows : {32, 8, 1}) {
            std::string sql = head + row;
            for (int i = 1; i < rows; ++i) sql += ", " + row;
            inserts_.emplace_back(rows, SQLite::Statement(db, sql));
        }
    }

    // Inside the caller's transaction.
    void insert(const std::vector<std::string>& payloads) {
        std::size_t i = 0;
        for (auto& [rows, insert] : inserts_) {
            for (; i + static_cast<std::size_t>(rows) <= payloads.size(); i += static_cast<std::size_t>(rows)) {
                insert.tryReset();  // a statement an earlier failure left halted
                for (int k = 0; k < rows; ++k) {
                    const std::string& payload = payloads[i + static_cast<std::size_t>(k)];
                    insert.bind(k + 1, payload.data(), static_cast<int>(payload.size()));
                }
                insert.exec();
            }
        }
    }

  private:
    std::vector<std::pair<int, SQLite::Statement>> inserts_;  // rows per INSERT, largest first
};

}  // namespace bench
