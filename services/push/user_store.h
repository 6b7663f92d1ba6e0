// The push demo's users and their offline mailboxes, in the embedded SQLite database (services.push.database).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <hydra/json.h>

namespace SQLite {
class Database;
}

namespace services::push {

class UserStore {
  public:
    UserStore();
    ~UserStore();

    // Opens (creates) the database and seeds users from config: [{"uname":..., "pwd":...}]; passwords are kept
    // as salted SHA-256. Throws std::runtime_error naming the file on failure.
    void open(const std::string& path, const hydra::Json& seed_users);

    bool check_password(const std::string& uname, const std::string& pwd);
    bool exists(const std::string& uname);

    // Messages for a user with no connected device, delivered at the next login, oldest first.
    void store_offline(const std::string& uname, const hydra::Json& data);
    std::vector<hydra::Json> take_offline(const std::string& uname);
    std::size_t offline_count(const std::string& uname);

  private:
    std::mutex mutex_;
    std::unique_ptr<SQLite::Database> db_;
};

}  // namespace services::push
