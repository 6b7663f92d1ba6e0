// The push demo's users and their offline mailboxes, in the embedded SQLite database (services.push.database).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <hydra/json.h>

#include "services/push/password.h"

namespace SQLite {
class Database;
}

namespace services::push {

struct MailboxLimits {
    std::size_t max_messages = 1000;      // per user
    std::size_t max_bytes = 10 << 20;     // per user, the stored JSON text
    std::chrono::seconds ttl{7 * 86400};  // older messages are neither delivered nor kept
};

// Whether a user's mailbox can take one more message.
enum class Room { ok, full_count, full_bytes };

// One stored message.
struct MailRow {
    std::int64_t id = 0;
    std::string data;  // the JSON text handed to notify
};

class UserStore {
  public:
    UserStore();
    ~UserStore();

    // Opens (creates) the database and seeds users from config: [{"uname":..., "pwd":...}]; passwords are kept as
    // scrypt records with `kdf` (see password.h). Throws std::runtime_error naming the file on failure.
    void open(const std::string& path, const hydra::Json& seed_users, const KdfParams& kdf, MailboxLimits limits);

    // The scrypt work is done whether or not the user exists (against a dummy record), so the answer's timing
    // does not tell. A row in the old format (one salted SHA-256) is checked that way and rewritten on success.
    bool check_password(const std::string& uname, const std::string& pwd);
    // Known users, in memory (loaded at open): cheap enough for an I/O loop.
    bool exists(const std::string& uname) const { return users_.contains(uname); }

    // Messages for a user with no connected device, delivered at the next login, oldest first.
    // room(): from in-memory counters, never waits on SQLite. store_offline() applies the same limits.
    Room room(const std::string& uname, std::size_t bytes);
    Room store_offline(const std::string& uname, const std::string& data);
    // Up to `limit` unexpired messages with id > `after`, oldest first.
    std::vector<MailRow> read_mailbox(const std::string& uname, std::int64_t after, std::size_t limit);
    bool has_mail_after(const std::string& uname, std::int64_t after);
    // Deletes delivered messages (one transaction).
    void remove(const std::string& uname, const std::vector<std::int64_t>& ids);
    // Deletes expired messages; returns how many.
    std::size_t purge_expired();

  private:
    struct Usage {
        std::size_t count = 0;
        std::size_t bytes = 0;
    };
    Room room_locked(const std::string& uname, std::size_t bytes) const;
    void load_usage();
    std::int64_t expiry_cutoff() const;

    std::mutex mutex_;  // the database
    std::unique_ptr<SQLite::Database> db_;
    KdfParams kdf_;
    std::string dummy_record_;
    MailboxLimits limits_;
    std::unordered_set<std::string> users_;  // written only by open(), before any handler runs

    mutable std::mutex usage_mutex_;
    std::unordered_map<std::string, Usage> usage_;  // per user: what the mailbox holds
};

}  // namespace services::push
