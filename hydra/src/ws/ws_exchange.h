// The WSExchange registry: uuid → connection, user → uuids, channel → uuids, per-connection values.
// Thread-safe; delivery is handed to the I/O loop that owns each connection.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <hydra/exchange.h>

#include "core/string_hash.h"

namespace hydra::ws {

using Frame = std::shared_ptr<const std::string>;  // an encoded frame, shared by every recipient

// What the exchange needs from the server: hand frames to the loops that own the connections.
class Delivery {
  public:
    virtual ~Delivery() = default;
    virtual void deliver(std::uint64_t conn_id, Frame frame) = 0;
    // deliver() that reports the outcome on the connection's loop, exactly once: written(true) when the whole frame
    // was handed to the socket, written(false) when the connection closed or dropped its send queue first.
    virtual void deliver_confirmed(std::uint64_t conn_id, Frame frame, std::function<void(bool written)> written) = 0;
    virtual void deliver_many(std::vector<std::uint64_t> conn_ids, Frame frame) = 0;
    virtual std::size_t deliver_all(Frame frame) = 0;
    virtual void close(std::uint64_t conn_id, int code, std::string reason) = 0;
};

class WsExchange : public Exchange {
  public:
    explicit WsExchange(Delivery& delivery) : delivery_(delivery) {}

    // Server side: a connection opened / closed. add() returns false if the uuid is taken.
    bool add(const std::string& uuid, std::uint64_t conn_id);
    void remove(const std::string& uuid);

    bool notify(std::string_view uuid, const Json& data) override;
    bool notify_json(std::string_view uuid, std::string_view data_json) override;
    bool notify_confirmed(std::string_view uuid, const Json& data, std::function<void(bool written)> written) override;
    std::size_t broadcast(const Json& data) override;
    bool bind(std::string_view user, std::string_view uuid) override;
    std::size_t notify_user(std::string_view user, const Json& data) override;
    bool subscribe(std::string_view uuid, std::string_view channel) override;
    bool unsubscribe(std::string_view uuid, std::string_view channel) override;
    std::size_t publish(std::string_view channel, std::string_view payload) override;
    bool set(std::string_view uuid, std::string_view key, const Json& value) override;
    std::optional<Json> get(std::string_view uuid, std::string_view key) const override;
    bool send(std::string_view uuid, std::string_view text) override;
    bool kick(std::string_view uuid, int code, std::string_view reason) override;
    std::size_t connections() const override;
    std::size_t channels() const override;

    // Presence changes, for the cluster: (uuid, user, open). Called with no lock held; set before start.
    using PresenceObserver = std::function<void(const std::string& uuid, const std::string& user, bool open)>;
    void set_presence_observer(PresenceObserver observer) { observer_ = std::move(observer); }
    bool is_local(std::string_view uuid) const { return find(uuid).has_value(); }
    // Every open connection's uuid and bound user (the cluster re-announces them after presence was lost).
    std::vector<std::pair<std::string, std::string>> presence() const;

    // hydra's push envelope {"service":"notify","code":200,"data":...} as one text frame.
    static Frame notify_frame(const Json& data);

  private:
    struct Entry {
        std::uint64_t conn_id = 0;
        std::string user;
        std::vector<std::string> channels;
        Json values;  // null until the first set()
    };
    std::optional<std::uint64_t> find(std::string_view uuid) const;
    bool erase(const std::string& uuid);  // with mutex_ held
    bool bind_locked(std::string_view user, std::string_view uuid);

    Delivery& delivery_;
    PresenceObserver observer_;
    mutable std::shared_mutex mutex_;
    // Looked up by string_view (a notify's uuid) without building a std::string for it.
    template <class V>
    using ByName = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;
    ByName<Entry> by_uuid_;
    ByName<std::unordered_set<std::string>> users_;
    ByName<std::unordered_set<std::string>> channels_;
};

}  // namespace hydra::ws
