// hydra's WS demo (plat mall, system wsserver): log in over WS, send through the API, push from the MQC.
//   WS  /member/login   {"uname","pwd"} → binds the connection to the user, delivers the offline mailbox
//   API POST /msg/send  {"uname"|"uuid","msg"} → queue mall:wsserver:msg
//   MQC /msg/push       → notify the uuid, or every device of the user (mailbox when none is online)
//   API POST /msg/broadcast {"msg"} → every connected client
#pragma once

#include <memory>
#include <string>

#include <hydra/app.h>

#include "services/push/login_throttle.h"
#include "services/push/mailbox_delivery.h"
#include "services/push/password.h"
#include "services/push/user_store.h"

namespace services::push {

inline constexpr const char* kQueue = "mall:wsserver:msg";
// Longest user name and password a login accepts (400 above).
inline constexpr std::size_t kMaxUname = 128;
inline constexpr std::size_t kMaxPassword = 1024;

// The `services.push` config section: database, seeded users, password KDF, login throttle, mailbox limits.
hydra::Json config_schema();

struct Settings {
    std::string database = "data/push.db";
    hydra::Json users = hydra::Json::array();
    KdfParams kdf;
    LoginThrottle::Limits throttle;
    MailboxLimits mailbox;
    MailboxDelivery::Window window;  // bytes: a quarter of ws.send_queue_bytes

    // Throws hydra::ConfigError for parameters the schema cannot express (N not a power of two).
    static Settings from(const hydra::Config& config);
};

// The demo's state: users, mailboxes, failed logins. Handlers share one Service.
class Service {
  public:
    // Opens the database and seeds the users (called at start, before any handler runs).
    void start(const Settings& settings);
    // Stops the mailbox delivery thread (before the servers stop: it uses the exchange).
    void stop();

    hydra::Result login(hydra::Context& ctx);
    // POST /msg/send, asynchronous (App::api_async): answered when the push is durable, no thread held meanwhile.
    void send(hydra::Context& ctx, hydra::Reply reply);
    hydra::Result push(hydra::Context& ctx);

  private:
    UserStore users_;
    LoginThrottle throttle_;
    UserLocks locks_;
    std::size_t max_stored_ = 0;  // the largest message kept for an offline user: half of ws.send_queue_bytes
    MailboxDelivery delivery_{users_, locks_};  // last: its thread stops first
};

hydra::Json broadcast(hydra::Context& ctx);

}  // namespace services::push
