// Inspection and repair of a queue file, on a connection of their own: what the CLI (`hydra queue ...`) and the
// metrics read.
#include <SQLiteCpp/SQLiteCpp.h>

#include <map>

#include <hydra/log.h>

#include "queue/sqlite/schema.h"
#include "queue/sqlite/sqlite_queue.h"

namespace hydra::queue {

using sqlite::open_database;

void SqliteQueue::collect(metrics::Samples& s) {
    const std::string& path = settings_.path;
    std::vector<QueueStats> queues;
    try {
        queues = stats(path);
    } catch (const std::exception& e) {
        Logger().warn(std::string("metrics: cannot read the queue depth: ") + e.what());
        return;
    }
    const std::int64_t now = now_ms();
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
