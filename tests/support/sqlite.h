// Reading the SQLite files a test's host writes (the queue, the push demo's users and mailbox). Each call opens the
// file read-only for itself, so it sees what the host has committed by then.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <SQLiteCpp/SQLiteCpp.h>
#include <boost/test/unit_test.hpp>

namespace test {

namespace detail {
template <class Read>
auto sqlite_first(const std::string& db, const std::string& sql, const std::vector<std::string>& params, Read read) {
    SQLite::Database d(db, SQLite::OPEN_READONLY);
    SQLite::Statement q(d, sql);
    for (std::size_t i = 0; i < params.size(); ++i) q.bind(static_cast<int>(i + 1), params[i]);
    BOOST_REQUIRE_MESSAGE(q.executeStep(), "no row from " << sql);
    return read(q.getColumn(0));
}
}  // namespace detail

// The first column of the first row of `sql` in the file `db`, `params` bound to its `?`s in order; fails the test
// when there is no row.
inline std::int64_t sqlite_int(const std::string& db, const std::string& sql,
                               const std::vector<std::string>& params = {}) {
    return detail::sqlite_first(db, sql, params, [](const SQLite::Column& c) { return c.getInt64(); });
}
inline std::string sqlite_text(const std::string& db, const std::string& sql,
                               const std::vector<std::string>& params = {}) {
    return detail::sqlite_first(db, sql, params, [](const SQLite::Column& c) { return c.getString(); });
}

// The rows of `table` in the file `db`.
inline std::int64_t row_count(const std::string& db, const std::string& table) {
    return sqlite_int(db, "SELECT COUNT(*) FROM " + table);
}

}  // namespace test
