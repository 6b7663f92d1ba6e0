#include "ws/ws_exchange.h"

#include <algorithm>
#include <mutex>

#include "ws/dispatch.h"
#include "ws/frame.h"
#include "ws/utf8.h"

namespace hydra::ws {

namespace {
Frame text_frame(std::string_view text) {
    // Non-UTF-8 payloads (a publish of raw bytes) go out as binary so clients never see an invalid text frame.
    return std::make_shared<const std::string>(is_valid_utf8(text) ? encode_text(text) : encode_binary(text));
}
}  // namespace

Frame WsExchange::notify_frame(const Json& data) { return text_frame(envelope("notify", 200, "data", data)); }

bool WsExchange::add(const std::string& uuid, std::uint64_t conn_id) {
    {
        std::unique_lock lock(mutex_);
        if (!by_uuid_.emplace(uuid, Entry{conn_id, {}, {}, {}}).second) return false;
    }
    if (observer_) observer_(uuid, {}, true);
    return true;
}

void WsExchange::remove(const std::string& uuid) {
    {
        std::unique_lock lock(mutex_);
        if (!erase(uuid)) return;
    }
    if (observer_) observer_(uuid, {}, false);
}

bool WsExchange::erase(const std::string& uuid) {
    auto it = by_uuid_.find(uuid);
    if (it == by_uuid_.end()) return false;
    Entry& e = it->second;
    if (!e.user.empty()) {
        auto u = users_.find(e.user);
        if (u != users_.end()) {
            u->second.erase(uuid);
            if (u->second.empty()) users_.erase(u);
        }
    }
    for (const auto& ch : e.channels) {
        auto c = channels_.find(ch);
        if (c == channels_.end()) continue;
        c->second.erase(uuid);
        if (c->second.empty()) channels_.erase(c);
    }
    by_uuid_.erase(it);
    return true;
}

std::optional<std::uint64_t> WsExchange::find(std::string_view uuid) const {
    std::shared_lock lock(mutex_);
    auto it = by_uuid_.find(uuid);
    if (it == by_uuid_.end()) return std::nullopt;
    return it->second.conn_id;
}

bool WsExchange::notify(std::string_view uuid, const Json& data) { return notify_json(uuid, dump(data)); }

bool WsExchange::notify_json(std::string_view uuid, std::string_view data_json) {
    auto id = find(uuid);
    if (!id) return false;
    delivery_.deliver(*id, text_frame(envelope_text("notify", 200, "data", data_json)));
    return true;
}

bool WsExchange::notify_confirmed(std::string_view uuid, const Json& data, std::function<void(bool written)> written) {
    auto id = find(uuid);
    if (!id) return false;
    if (written)
        delivery_.deliver_confirmed(*id, notify_frame(data), std::move(written));
    else
        delivery_.deliver(*id, notify_frame(data));
    return true;
}

std::size_t WsExchange::broadcast(const Json& data) { return delivery_.deliver_all(notify_frame(data)); }

bool WsExchange::bind(std::string_view user, std::string_view uuid) {
    if (!bind_locked(user, uuid)) return false;
    if (observer_) observer_(std::string(uuid), std::string(user), true);
    return true;
}

bool WsExchange::bind_locked(std::string_view user, std::string_view uuid) {
    if (user.empty()) return false;
    std::unique_lock lock(mutex_);
    auto it = by_uuid_.find(uuid);
    if (it == by_uuid_.end()) return false;
    Entry& e = it->second;
    if (e.user == user) return true;
    if (!e.user.empty()) {
        auto old = users_.find(e.user);
        if (old != users_.end()) {
            old->second.erase(it->first);
            if (old->second.empty()) users_.erase(old);
        }
    }
    e.user = std::string(user);
    users_[e.user].insert(it->first);
    return true;
}

// As publish(): handed over under the lock, so nothing sent to a user's devices is still on its way after bind()
// moved one of them to another user.
std::size_t WsExchange::notify_user(std::string_view user, const Json& data) {
    Frame frame = notify_frame(data);  // built before the lock, as in publish()
    std::vector<std::uint64_t> ids;
    std::shared_lock lock(mutex_);
    auto u = users_.find(user);
    if (u == users_.end()) return 0;
    for (const auto& uuid : u->second) ids.push_back(by_uuid_.at(uuid).conn_id);
    std::size_t n = ids.size();
    delivery_.deliver_many(std::move(ids), std::move(frame));
    return n;
}

bool WsExchange::subscribe(std::string_view uuid, std::string_view channel) {
    if (channel.empty()) return false;
    std::unique_lock lock(mutex_);
    auto it = by_uuid_.find(uuid);
    if (it == by_uuid_.end()) return false;
    auto& chans = it->second.channels;
    if (std::find(chans.begin(), chans.end(), channel) == chans.end()) chans.emplace_back(channel);
    channels_[std::string(channel)].insert(it->first);
    return true;
}

bool WsExchange::unsubscribe(std::string_view uuid, std::string_view channel) {
    std::unique_lock lock(mutex_);
    auto it = by_uuid_.find(uuid);
    if (it == by_uuid_.end()) return false;
    auto& chans = it->second.channels;
    auto pos = std::find(chans.begin(), chans.end(), channel);
    if (pos == chans.end()) return false;
    chans.erase(pos);
    auto c = channels_.find(channel);
    if (c != channels_.end()) {
        c->second.erase(it->first);
        if (c->second.empty()) channels_.erase(c);
    }
    return true;
}

// Handed to the connections' loops before the lock is released: once unsubscribe() returns, no frame of an earlier
// publish is still on its way to the loops, so what the unsubscriber sends next goes after it (a chat room's quit
// answer comes after the room's last message, not before a late one).
std::size_t WsExchange::publish(std::string_view channel, std::string_view payload) {
    Frame frame = text_frame(payload);  // built before the lock: writers (subscribe, bind...) wait for readers
    std::vector<std::uint64_t> ids;
    std::shared_lock lock(mutex_);
    auto c = channels_.find(channel);
    if (c == channels_.end()) return 0;
    ids.reserve(c->second.size());
    for (const auto& uuid : c->second) ids.push_back(by_uuid_.at(uuid).conn_id);
    std::size_t n = ids.size();
    delivery_.deliver_many(std::move(ids), std::move(frame));
    return n;
}

bool WsExchange::set(std::string_view uuid, std::string_view key, const Json& value) {
    std::unique_lock lock(mutex_);
    auto it = by_uuid_.find(uuid);
    if (it == by_uuid_.end()) return false;
    if (!it->second.values.is_object()) it->second.values = Json::object();
    it->second.values[std::string(key)] = value;
    return true;
}

std::optional<Json> WsExchange::get(std::string_view uuid, std::string_view key) const {
    std::shared_lock lock(mutex_);
    auto it = by_uuid_.find(uuid);
    if (it == by_uuid_.end() || !it->second.values.is_object()) return std::nullopt;
    auto v = it->second.values.find(key);
    if (v == it->second.values.end()) return std::nullopt;
    return *v;
}

bool WsExchange::send(std::string_view uuid, std::string_view text) {
    auto id = find(uuid);
    if (!id) return false;
    delivery_.deliver(*id, text_frame(text));
    return true;
}

bool WsExchange::kick(std::string_view uuid, int code, std::string_view reason) {
    auto id = find(uuid);
    if (!id) return false;
    delivery_.close(*id, code, std::string(reason));
    return true;
}

std::size_t WsExchange::connections() const {
    std::shared_lock lock(mutex_);
    return by_uuid_.size();
}

std::size_t WsExchange::channels() const {
    std::shared_lock lock(mutex_);
    return channels_.size();
}

std::vector<std::pair<std::string, std::string>> WsExchange::presence() const {
    std::shared_lock lock(mutex_);
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(by_uuid_.size());
    for (const auto& [uuid, entry] : by_uuid_) out.emplace_back(uuid, entry.user);
    return out;
}

}  // namespace hydra::ws
