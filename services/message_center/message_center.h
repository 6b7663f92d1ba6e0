// The message center (connmix) on the raw WS endpoint /message-center:
//   {"op":"auth","token":"..."}             → POST {"token"} to services.message_center.auth_url; its {"uid":N}
//                                              is kept with the connection → {"result":true}
//   {"op":"subscribe","channel":"@user"}    → channel user:<uid> → {"result":true}   (unsubscribe likewise)
// Errors: {"code":1,"msg":"..."} (auth failed, "Not Auth"), {"code":2,"msg":"..."} (unknown op or channel, bad
// JSON). The connection stays open. Messages reach users with POST /v1/mesh/publish {"c":"user:1001","d":"..."}.
//
// The auth API is called from the center's own small pool (services.message_center.auth_threads), never on a WS
// worker: a slow or stalled auth API cannot hold the workers every endpoint shares. Messages a connection sends
// while its auth is in flight wait (up to kMaxWaiting) and are handled in order once the answer is sent.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <hydra/config.h>
#include <hydra/ws.h>

namespace services::message_center {

struct Settings {
    std::string auth_url = "http://127.0.0.1:8000/websocket_auth";
    std::chrono::milliseconds auth_timeout{3000};
    int auth_threads = 4;
    std::size_t max_pending_auth = 256;
};

// The `services.message_center` config section.
hydra::Json config_schema();
Settings settings_from(const hydra::Config& config);

// The largest answer read from the auth API; a longer one fails the auth (the uid fits in a few bytes).
inline constexpr std::size_t kMaxAuthAnswer = 64 * 1024;
// Messages one connection may send while its auth is in flight; more are refused with code 2.
inline constexpr std::size_t kMaxWaiting = 16;

// Calls the auth API: the uid (as a string) or an exception whose message is for the log (never for the client).
std::string authenticate(const Settings& settings, const std::string& token);
using AuthCall = std::function<std::string(const Settings& settings, const std::string& token)>;

class Service {
  public:
    // `settings` is filled from config at start, before the first message. `auth` is the call to the auth API
    // (tests give their own).
    explicit Service(std::shared_ptr<const Settings> settings, AuthCall auth = authenticate);
    ~Service();
    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // Answers through the exchange (never a returned reply), so the client gets the answers in order.
    void on_message(hydra::Context& ctx);
    void on_close(hydra::Context& ctx);
    // Stops the pool (waits for calls in flight, each bounded by auth_timeout_ms): before the WS server stops, as
    // its jobs answer through the exchange. Idempotent.
    void stop();

  private:
    struct Job {
        std::string uuid;
        std::uint64_t serial = 0;
        std::string token;
        hydra::Exchange* exchange = nullptr;
        hydra::Logger log;
    };
    // A connection whose auth is in flight; `serial` tells it from a later connection reusing the uuid.
    struct Pending {
        std::uint64_t serial;
        std::deque<std::string> waiting;
    };

    std::optional<hydra::Json> dispatch(const std::string& body, hydra::Exchange& ex, const std::string& uuid,
                                        const hydra::Logger& log, bool locked);
    std::optional<hydra::Json> start_auth(const std::string& token, hydra::Exchange& ex, const std::string& uuid,
                                          const hydra::Logger& log, bool locked);
    void run();
    void finish(const Job& job, const std::optional<std::string>& uid);

    std::shared_ptr<const Settings> settings_;
    AuthCall auth_;
    std::once_flag started_;
    std::vector<std::thread> threads_;

    std::mutex mutex_;  // guards everything below; also held while answering a finished auth (see on_close)
    std::condition_variable wake_;
    std::deque<Job> jobs_;
    std::size_t outstanding_ = 0;  // jobs queued or running
    std::unordered_map<std::string, Pending> pending_;
    std::atomic<std::size_t> pending_count_{0};  // pending_.size(), read without the lock on every message
    std::uint64_t next_serial_ = 0;
    bool stopping_ = false;
};

// The endpoint of `service`.
hydra::WsEndpoint endpoint(std::shared_ptr<Service> service);

}  // namespace services::message_center
