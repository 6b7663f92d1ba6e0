#include "services/push/user_store.h"

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>
#include <SQLiteCpp/SQLiteCpp.h>
#include <openssl/crypto.h>

#include <filesystem>
#include <optional>
#include <stdexcept>

namespace services::push {

namespace {

// The format before scrypt records: hex SHA-256 of salt + password, the salt in its own column.
bool legacy_matches(const std::string& salt, const std::string& hash, const std::string& pwd) {
    Poco::SHA2Engine sha(Poco::SHA2Engine::SHA_256);
    sha.update(salt);
    sha.update(pwd);
    std::string computed = Poco::DigestEngine::digestToHex(sha.digest());
    return computed.size() == hash.size() && CRYPTO_memcmp(computed.data(), hash.data(), hash.size()) == 0;
}

std::int64_t now_s() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

}  // namespace

UserStore::UserStore() = default;
UserStore::~UserStore() = default;

void UserStore::open(const std::string& path, const hydra::Json& seed_users, const KdfParams& kdf,
                     MailboxLimits limits) {
    std::lock_guard lock(mutex_);
    kdf_ = kdf;
    limits_ = limits;
    try {
        // Hashed before the transaction: scrypt is slow on purpose.
        dummy_record_ = make_password_record(kdf, "no such user");
        std::vector<std::pair<std::string, std::string>> seeded;
        for (const auto& u : seed_users)
            seeded.emplace_back(u.at("uname").get<std::string>(),
                                make_password_record(kdf, u.at("pwd").get<std::string>()));

        std::filesystem::path p(path);
        if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
        db_ = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE, 5000);
        db_->exec("PRAGMA journal_mode=WAL");
        db_->exec(
            "CREATE TABLE IF NOT EXISTS users (uname TEXT PRIMARY KEY, salt TEXT NOT NULL, hash TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS mailbox (id INTEGER PRIMARY KEY AUTOINCREMENT, uname TEXT NOT NULL, "
            "data TEXT NOT NULL, created_at INTEGER NOT NULL DEFAULT (strftime('%s','now')));"
            "CREATE INDEX IF NOT EXISTS mailbox_user ON mailbox (uname, id);");
        // Seeding makes config the source of truth for the demo users: a changed password applies at start. The
        // record carries its salt and parameters; the salt column is left empty.
        SQLite::Transaction tx(*db_);
        SQLite::Statement upsert(*db_,
                                 "INSERT INTO users (uname, salt, hash) VALUES (?, '', ?) "
                                 "ON CONFLICT(uname) DO UPDATE SET salt = excluded.salt, hash = excluded.hash");
        for (const auto& [uname, record] : seeded) {
            upsert.bind(1, uname);
            upsert.bind(2, record);
            upsert.exec();
            upsert.reset();
        }
        tx.commit();
        SQLite::Statement q(*db_, "SELECT uname FROM users");
        while (q.executeStep()) users_.insert(q.getColumn(0).getString());
        load_usage();
    } catch (const std::exception& e) {
        db_.reset();
        throw std::runtime_error("push: cannot open user database " + path + ": " + e.what());
    }
}

bool UserStore::check_password(const std::string& uname, const std::string& pwd) {
    std::optional<std::pair<std::string, std::string>> row;  // salt, hash
    {
        std::lock_guard lock(mutex_);
        SQLite::Statement q(*db_, "SELECT salt, hash FROM users WHERE uname = ?");
        q.bind(1, uname);
        if (q.executeStep()) row.emplace(q.getColumn(0).getString(), q.getColumn(1).getString());
    }
    // The slow part runs without the lock.
    if (!row) {
        verify_password(dummy_record_, pwd, kdf_);  // the same work as for a user that exists
        return false;
    }
    if (record_params(row->second)) return verify_password(row->second, pwd, kdf_);
    const bool ok = legacy_matches(row->first, row->second, pwd);
    verify_password(dummy_record_, pwd, kdf_);  // the same work as for a scrypt record
    if (ok) {
        std::string record = make_password_record(kdf_, pwd);
        std::lock_guard lock(mutex_);
        SQLite::Statement up(*db_, "UPDATE users SET salt = '', hash = ? WHERE uname = ?");
        up.bind(1, record);
        up.bind(2, uname);
        up.exec();
    }
    return ok;
}

Room UserStore::room_locked(const std::string& uname, std::size_t bytes) const {
    auto it = usage_.find(uname);
    if (it == usage_.end()) return bytes > limits_.max_bytes ? Room::full_bytes : Room::ok;
    if (it->second.count >= limits_.max_messages) return Room::full_count;
    if (it->second.bytes + bytes > limits_.max_bytes) return Room::full_bytes;
    return Room::ok;
}

Room UserStore::room(const std::string& uname, std::size_t bytes) {
    std::lock_guard lock(usage_mutex_);
    return room_locked(uname, bytes);
}

Room UserStore::store_offline(const std::string& uname, const std::string& data) {
    std::lock_guard lock(mutex_);
    {
        std::lock_guard usage_lock(usage_mutex_);
        Room r = room_locked(uname, data.size());
        if (r != Room::ok) return r;
    }
    SQLite::Statement ins(*db_, "INSERT INTO mailbox (uname, data, created_at) VALUES (?, ?, ?)");
    ins.bind(1, uname);
    ins.bind(2, data);
    ins.bind(3, now_s());
    ins.exec();
    std::lock_guard usage_lock(usage_mutex_);
    Usage& u = usage_[uname];
    ++u.count;
    u.bytes += data.size();
    return Room::ok;
}

std::int64_t UserStore::expiry_cutoff() const { return now_s() - limits_.ttl.count(); }

std::vector<MailRow> UserStore::read_mailbox(const std::string& uname, std::int64_t after, std::size_t limit) {
    std::lock_guard lock(mutex_);
    std::vector<MailRow> out;
    SQLite::Statement q(*db_,
                        "SELECT id, data FROM mailbox WHERE uname = ? AND id > ? AND created_at > ? ORDER BY id "
                        "LIMIT ?");
    q.bind(1, uname);
    q.bind(2, after);
    q.bind(3, expiry_cutoff());
    q.bind(4, static_cast<std::int64_t>(limit));
    while (q.executeStep()) out.push_back(MailRow{q.getColumn(0).getInt64(), q.getColumn(1).getString()});
    return out;
}

bool UserStore::has_mail_after(const std::string& uname, std::int64_t after) {
    std::lock_guard lock(mutex_);
    SQLite::Statement q(*db_, "SELECT 1 FROM mailbox WHERE uname = ? AND id > ? AND created_at > ? LIMIT 1");
    q.bind(1, uname);
    q.bind(2, after);
    q.bind(3, expiry_cutoff());
    return q.executeStep();
}

void UserStore::remove(const std::string& uname, const std::vector<std::int64_t>& ids) {
    if (ids.empty()) return;
    std::lock_guard lock(mutex_);
    SQLite::Transaction tx(*db_);
    SQLite::Statement del(*db_, "DELETE FROM mailbox WHERE id = ?");
    for (std::int64_t id : ids) {
        del.bind(1, id);
        del.exec();
        del.reset();
    }
    tx.commit();
    SQLite::Statement q(*db_,
                        "SELECT COUNT(*), COALESCE(SUM(length(CAST(data AS BLOB))), 0) FROM mailbox "
                        "WHERE uname = ?");
    q.bind(1, uname);
    q.executeStep();
    std::lock_guard usage_lock(usage_mutex_);
    const auto count = static_cast<std::size_t>(q.getColumn(0).getInt64());
    if (count == 0)
        usage_.erase(uname);
    else
        usage_[uname] = Usage{count, static_cast<std::size_t>(q.getColumn(1).getInt64())};
}

std::size_t UserStore::purge_expired() {
    std::lock_guard lock(mutex_);
    SQLite::Statement del(*db_, "DELETE FROM mailbox WHERE created_at <= ?");
    del.bind(1, expiry_cutoff());
    const int n = del.exec();
    if (n > 0) load_usage();
    return static_cast<std::size_t>(n);
}

void UserStore::load_usage() {
    std::unordered_map<std::string, Usage> usage;
    SQLite::Statement q(*db_, "SELECT uname, COUNT(*), SUM(length(CAST(data AS BLOB))) FROM mailbox GROUP BY uname");
    while (q.executeStep())
        usage[q.getColumn(0).getString()] = Usage{static_cast<std::size_t>(q.getColumn(1).getInt64()),
                                                  static_cast<std::size_t>(q.getColumn(2).getInt64())};
    std::lock_guard usage_lock(usage_mutex_);
    usage_ = std::move(usage);
}

}  // namespace services::push
