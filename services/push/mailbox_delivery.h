// Delivers a user's offline mailbox to the connection that just logged in, on the delivery's own thread: a window
// of messages at a time (never more than the connection's send queue can take), each row deleted only after its
// frame was written to the socket (Exchange::notify_confirmed), so a reader that is slow or goes away loses
// nothing. The connection is bound to the user once the mailbox is empty, so live messages come after it.
#pragma once

#include <array>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include <hydra/exchange.h>
#include <hydra/log.h>

#include "services/push/user_store.h"

namespace services::push {

// One lock per user (striped): held by a login around bind-or-start-delivery, by the delivery around its final
// check-and-bind, and by /msg/push around notify-or-store, so no message lands in a mailbox already delivered.
class UserLocks {
  public:
    std::mutex& of(std::string_view user) { return stripes_[std::hash<std::string_view>{}(user) % stripes_.size()]; }

  private:
    std::array<std::mutex, 64> stripes_;
};

class MailboxDelivery {
  public:
    struct Window {
        std::size_t messages = 64;    // frames handed to a connection and not yet written
        std::size_t bytes = 1 << 20;  // their size (one larger message still goes alone)
    };

    MailboxDelivery(UserStore& store, UserLocks& locks) : store_(store), locks_(locks) {}
    ~MailboxDelivery();
    MailboxDelivery(const MailboxDelivery&) = delete;
    MailboxDelivery& operator=(const MailboxDelivery&) = delete;

    // Starts the thread; expired messages are purged every `purge_every`.
    void start(Window window, std::chrono::seconds purge_every);
    // Stops the thread (deliveries in progress end; their unwritten rows wait for the next login). Idempotent.
    void stop();

    // With the user's lock held, during the login on `uuid` (its reply goes out before anything sent here): true when a
    // delivery began or `uuid` joins the one in progress for the user (the delivery binds it when done, and carries on
    // on it if the connection being delivered to goes away: a phone that reconnects gets the rest); false when the
    // mailbox is empty, and the caller binds now.
    bool begin(hydra::Exchange& ex, const std::string& uname, const std::string& uuid, const hydra::Logger& log);

  private:
    struct Delivery {
        std::string uuid;
        hydra::Exchange* exchange = nullptr;
        hydra::Logger log;
        std::int64_t last_read = 0;  // the highest mailbox id read
        std::deque<MailRow> ready;   // read, not sent yet
        std::size_t in_flight = 0;
        std::size_t in_flight_bytes = 0;
        std::size_t delivered = 0;
        bool failed = false;  // the connection closed or dropped its queue: the rest stays for the next login
        std::vector<std::string> waiting;  // later logins of the user, bound when done (guarded by mutex_)
    };
    struct Written {
        std::string uname;
        std::int64_t id;
        std::size_t bytes;
        bool ok;
    };

    void run();
    void pump(const std::string& uname);
    // Ends a delivery (`d` is gone after it): binds its connection and the logins waiting for it.
    void finish(const std::string& uname, Delivery& d);
    Delivery* find(const std::string& uname);

    UserStore& store_;
    UserLocks& locks_;
    Window window_;
    std::chrono::seconds purge_every_{60};

    std::mutex mutex_;  // guards the members below (a Delivery's fields belong to the thread)
    std::condition_variable wake_;
    std::unordered_map<std::string, Delivery> deliveries_;  // by user
    std::vector<Written> written_;                          // reported by I/O loops, handled by the thread
    std::vector<std::string> started_;
    bool stopping_ = false;
    std::thread thread_;
};

}  // namespace services::push
