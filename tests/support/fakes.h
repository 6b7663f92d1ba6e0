// Test doubles for testing services without sockets: an in-memory Exchange, a recording Queue, and the Context a
// server would build for an API request, a WebSocket message or an MQC message.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <hydra/context.h>
#include <hydra/exchange.h>
#include <hydra/json.h>
#include <hydra/queue.h>
#include <hydra/testing.h>

namespace test {

// Connections are uuids added with connect(); whatever would be written to one is recorded, in order, as the text
// its client would receive (notify/broadcast/notify_user wrapped in hydra's envelope, send and publish verbatim).
// Thread-safe (services answer from their own threads).
class FakeExchange : public hydra::Exchange {
  public:
    void connect(const std::string& uuid) {
        std::lock_guard lock(mutex_);
        open_.insert(uuid);
    }
    void disconnect(const std::string& uuid) {
        std::lock_guard lock(mutex_);
        open_.erase(uuid);
        for (auto& [user, uuids] : users_) uuids.erase(uuid);
        for (auto& [channel, uuids] : channels_) uuids.erase(uuid);
        values_.erase(uuid);
    }
    // What `uuid` received so far, in order.
    std::vector<std::string> received(const std::string& uuid) const {
        std::lock_guard lock(mutex_);
        auto it = inbox_.find(uuid);
        return it == inbox_.end() ? std::vector<std::string>{} : it->second;
    }
    // What `uuid` received from the calling thread (a service's answer sent at once, not from its own threads).
    std::vector<std::string> received_from_this_thread(const std::string& uuid) const {
        std::lock_guard lock(mutex_);
        std::vector<std::string> mine;
        auto it = inbox_.find(uuid);
        if (it == inbox_.end()) return mine;
        const auto& senders = senders_.at(uuid);
        for (std::size_t i = 0; i < it->second.size(); ++i)
            if (senders[i] == std::this_thread::get_id()) mine.push_back(it->second[i]);
        return mine;
    }
    std::vector<hydra::Json> received_json(const std::string& uuid) const {
        std::vector<hydra::Json> all;
        for (const auto& text : received(uuid)) all.push_back(hydra::Json::parse(text));
        return all;
    }
    std::set<std::string> subscribers(const std::string& channel) const {
        std::lock_guard lock(mutex_);
        auto it = channels_.find(channel);
        return it == channels_.end() ? std::set<std::string>{} : it->second;
    }
    std::optional<std::string> user_of(const std::string& uuid) const {
        std::lock_guard lock(mutex_);
        for (const auto& [user, uuids] : users_)
            if (uuids.count(uuid)) return user;
        return std::nullopt;
    }
    // notify_confirmed's outcomes wait for confirm_pending(), which reports them from the caller's thread (a real
    // exchange reports from the connection's I/O loop, never from inside notify_confirmed): `write_ok` tells
    // whether the frames count as written.
    std::size_t confirm_pending() {
        std::vector<std::function<void(bool)>> due;
        bool ok = false;
        {
            std::lock_guard lock(mutex_);
            due.swap(unconfirmed_);
            ok = write_ok;
        }
        for (auto& written : due) written(ok);
        return due.size();
    }
    bool write_ok = true;

    bool notify(std::string_view uuid, const hydra::Json& data) override {
        std::lock_guard lock(mutex_);
        return deliver(std::string(uuid), envelope(data));
    }
    bool notify_confirmed(std::string_view uuid, const hydra::Json& data,
                          std::function<void(bool written)> written) override {
        std::lock_guard lock(mutex_);
        if (!deliver(std::string(uuid), envelope(data))) return false;
        if (written) unconfirmed_.push_back(std::move(written));
        return true;
    }
    std::size_t broadcast(const hydra::Json& data) override {
        std::lock_guard lock(mutex_);
        for (const auto& uuid : open_) deliver(uuid, envelope(data));
        return open_.size();
    }
    bool bind(std::string_view user, std::string_view uuid) override {
        std::lock_guard lock(mutex_);
        if (!open_.count(std::string(uuid))) return false;
        users_[std::string(user)].insert(std::string(uuid));
        return true;
    }
    std::size_t notify_user(std::string_view user, const hydra::Json& data) override {
        std::lock_guard lock(mutex_);
        auto it = users_.find(std::string(user));
        if (it == users_.end()) return 0;
        for (const auto& uuid : it->second) deliver(uuid, envelope(data));
        return it->second.size();
    }
    bool subscribe(std::string_view uuid, std::string_view channel) override {
        std::lock_guard lock(mutex_);
        if (!open_.count(std::string(uuid))) return false;
        channels_[std::string(channel)].insert(std::string(uuid));
        return true;
    }
    bool unsubscribe(std::string_view uuid, std::string_view channel) override {
        std::lock_guard lock(mutex_);
        auto it = channels_.find(std::string(channel));
        return it != channels_.end() && it->second.erase(std::string(uuid)) > 0;
    }
    std::size_t publish(std::string_view channel, std::string_view payload) override {
        std::lock_guard lock(mutex_);
        auto it = channels_.find(std::string(channel));
        if (it == channels_.end()) return 0;
        for (const auto& uuid : it->second) deliver(uuid, std::string(payload));
        return it->second.size();
    }
    bool set(std::string_view uuid, std::string_view key, const hydra::Json& value) override {
        std::lock_guard lock(mutex_);
        if (!open_.count(std::string(uuid))) return false;
        values_[std::string(uuid)][std::string(key)] = value;
        return true;
    }
    std::optional<hydra::Json> get(std::string_view uuid, std::string_view key) const override {
        std::lock_guard lock(mutex_);
        auto c = values_.find(std::string(uuid));
        if (c == values_.end()) return std::nullopt;
        auto v = c->second.find(std::string(key));
        if (v == c->second.end()) return std::nullopt;
        return v->second;
    }
    bool send(std::string_view uuid, std::string_view text) override {
        std::lock_guard lock(mutex_);
        return deliver(std::string(uuid), std::string(text));
    }
    bool kick(std::string_view uuid, int code, std::string_view reason) override {
        {
            std::lock_guard lock(mutex_);
            if (!open_.count(std::string(uuid))) return false;
            kicked[std::string(uuid)] = {code, std::string(reason)};
        }
        disconnect(std::string(uuid));
        return true;
    }
    std::size_t connections() const override {
        std::lock_guard lock(mutex_);
        return open_.size();
    }
    std::size_t channels() const override {
        std::lock_guard lock(mutex_);
        std::size_t n = 0;
        for (const auto& [channel, uuids] : channels_) n += uuids.empty() ? 0 : 1;
        return n;
    }

    std::map<std::string, std::pair<int, std::string>> kicked;  // uuid → close code, reason

  private:
    static std::string envelope(const hydra::Json& data) {
        return hydra::Json{{"service", "notify"}, {"code", 200}, {"data", data}}.dump();
    }
    bool deliver(const std::string& uuid, std::string text) {  // with the lock held
        if (!open_.count(uuid)) return false;
        inbox_[uuid].push_back(std::move(text));
        senders_[uuid].push_back(std::this_thread::get_id());
        return true;
    }

    mutable std::mutex mutex_;
    std::set<std::string> open_;
    std::map<std::string, std::vector<std::string>> inbox_;
    std::map<std::string, std::vector<std::thread::id>> senders_;  // the thread each inbox_ entry came from
    std::map<std::string, std::set<std::string>> users_, channels_;
    std::map<std::string, std::map<std::string, hydra::Json>> values_;
    std::vector<std::function<void(bool)>> unconfirmed_;
};

// Records every push. With `failure` set, pushes fail with it (push_async reports it to `done`).
class FakeQueue : public hydra::Queue {
  public:
    struct Pushed {
        std::string queue;
        std::string payload;
        hydra::Headers headers;
    };
    std::optional<hydra::QueueError> failure;

    void push(std::string_view queue, std::string_view payload, const hydra::Headers& headers = {},
              std::chrono::milliseconds = std::chrono::milliseconds{0}) override {
        std::lock_guard lock(mutex_);
        if (failure) throw *failure;
        pushed_.push_back({std::string(queue), std::string(payload), headers});
    }
    std::string backend() const override { return "fake"; }
    std::vector<Pushed> pushed() const {
        std::lock_guard lock(mutex_);
        return pushed_;
    }

  private:
    mutable std::mutex mutex_;
    std::vector<Pushed> pushed_;
};

// A client address as the servers key it: IPv4 mapped into IPv6.
inline std::array<std::uint8_t, 16> ipv4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    return {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d};
}

// The Context of a request as a server builds it: `params` the merged parameters (an object), `body` the raw text.
struct Request {
    hydra::ServerKind kind = hydra::ServerKind::api;
    std::string path{};
    hydra::Json params = hydra::Json::object();
    std::string body{};
    std::string uuid{};                                      // WS: the connection
    std::array<std::uint8_t, 16> peer = ipv4(127, 0, 0, 1);  // API and WS only
    hydra::Exchange* exchange = nullptr;
    hydra::Queue* queue = nullptr;
};

inline hydra::Context context(const Request& r) {
    hydra::Context::Init init;
    init.kind = r.kind;
    init.method = r.kind == hydra::ServerKind::api ? "POST" : "";
    init.path = r.path;
    init.route = r.path;
    init.params = r.params;
    init.body = r.body.empty() && !r.params.empty() ? hydra::dump(r.params) : r.body;
    init.headers = std::make_shared<hydra::Headers>();
    init.request_id = "test-request";
    init.uuid = r.uuid;
    if (r.kind != hydra::ServerKind::mqc) init.peer = r.peer;
    init.queue = r.queue;
    init.exchange = r.exchange;
    return hydra::testing::make_context(std::move(init));
}

}  // namespace test
