#include "services/push/user_store.h"

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>
#include <SQLiteCpp/SQLiteCpp.h>

#include <filesystem>
#include <random>
#include <stdexcept>

namespace services::push {

namespace {

std::string hash_password(const std::string& salt, const std::string& pwd) {
    Poco::SHA2Engine sha(Poco::SHA2Engine::SHA_256);
    sha.update(salt);
    sha.update(pwd);
    return Poco::DigestEngine::digestToHex(sha.digest());
}

std::string new_salt() {
    std::random_device rd;
    std::string salt;
    for (int i = 0; i < 16; ++i) salt += "0123456789abcdef"[rd() % 16];
    return salt;
}

}  // namespace

UserStore::UserStore() = default;
UserStore::~UserStore() = default;

void UserStore::open(const std::string& path, const hydra::Json& seed_users) {
    std::lock_guard lock(mutex_);
    try {
        std::filesystem::path p(path);
        if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
        db_ = std::make_unique<SQLite::Database>(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE, 5000);
        db_->exec("PRAGMA journal_mode=WAL");
        db_->exec(
            "CREATE TABLE IF NOT EXISTS users (uname TEXT PRIMARY KEY, salt TEXT NOT NULL, hash TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS mailbox (id INTEGER PRIMARY KEY AUTOINCREMENT, uname TEXT NOT NULL, "
            "data TEXT NOT NULL, created_at INTEGER NOT NULL DEFAULT (strftime('%s','now')));"
            "CREATE INDEX IF NOT EXISTS mailbox_user ON mailbox (uname, id);");
        // Seeding makes config the source of truth for the demo users: a changed password applies at start.
        SQLite::Transaction tx(*db_);
        SQLite::Statement upsert(*db_,
                                 "INSERT INTO users (uname, salt, hash) VALUES (?, ?, ?) "
                                 "ON CONFLICT(uname) DO UPDATE SET salt = excluded.salt, hash = excluded.hash");
        for (const auto& u : seed_users) {
            std::string salt = new_salt();
            upsert.bind(1, u.at("uname").get<std::string>());
            upsert.bind(2, salt);
            upsert.bind(3, hash_password(salt, u.at("pwd").get<std::string>()));
            upsert.exec();
            upsert.reset();
        }
        tx.commit();
    } catch (const std::exception& e) {
        db_.reset();
        throw std::runtime_error("push: cannot open user database " + path + ": " + e.what());
    }
}

bool UserStore::check_password(const std::string& uname, const std::string& pwd) {
    std::lock_guard lock(mutex_);
    SQLite::Statement q(*db_, "SELECT salt, hash FROM users WHERE uname = ?");
    q.bind(1, uname);
    if (!q.executeStep()) return false;
    return hash_password(q.getColumn(0).getString(), pwd) == q.getColumn(1).getString();
}

bool UserStore::exists(const std::string& uname) {
    std::lock_guard lock(mutex_);
    SQLite::Statement q(*db_, "SELECT 1 FROM users WHERE uname = ?");
    q.bind(1, uname);
    return q.executeStep();
}

void UserStore::store_offline(const std::string& uname, const hydra::Json& data) {
    std::lock_guard lock(mutex_);
    SQLite::Statement ins(*db_, "INSERT INTO mailbox (uname, data) VALUES (?, ?)");
    ins.bind(1, uname);
    ins.bind(2, data.dump());
    ins.exec();
}

std::vector<hydra::Json> UserStore::take_offline(const std::string& uname) {
    std::lock_guard lock(mutex_);
    std::vector<hydra::Json> out;
    SQLite::Transaction tx(*db_);
    SQLite::Statement q(*db_, "SELECT data FROM mailbox WHERE uname = ? ORDER BY id");
    q.bind(1, uname);
    while (q.executeStep()) out.push_back(hydra::parse_json_or_discarded(q.getColumn(0).getString()));
    SQLite::Statement del(*db_, "DELETE FROM mailbox WHERE uname = ?");
    del.bind(1, uname);
    del.exec();
    tx.commit();
    return out;
}

std::size_t UserStore::offline_count(const std::string& uname) {
    std::lock_guard lock(mutex_);
    SQLite::Statement q(*db_, "SELECT COUNT(*) FROM mailbox WHERE uname = ?");
    q.bind(1, uname);
    q.executeStep();
    return static_cast<std::size_t>(q.getColumn(0).getInt64());
}

}  // namespace services::push
