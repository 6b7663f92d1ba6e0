// WSExchange: reach WebSocket clients from any handler of any server, by uuid, user, channel, or all.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <hydra/json.h>

namespace hydra {

class Exchange {
  public:
    virtual ~Exchange() = default;

    // Sends {"service":"notify","code":200,"data":data} to one connection; false if the uuid is unknown.
    virtual bool notify(std::string_view uuid, const Json& data) = 0;
    // notify() with the data serialized already: `data_json` is one JSON value (the caller vouches for it), sent
    // without building or serializing a Json. The default, and a cluster routing it to another host, parse it
    // (parse_json: throws when it is not JSON).
    virtual bool notify_json(std::string_view uuid, std::string_view data_json) {
        return notify(uuid, parse_json(data_json));
    }
    // notify() that reports the outcome: `written(true)` once the whole frame was written to the connection's
    // socket, `written(false)` if the connection closed or dropped its send queue first. Called once, on the
    // connection's I/O loop (keep it short, never block), and never when this returns false (uuid unknown).
    // Across hosts of a cluster, written means handed to the owner host. The default reports the hand-off.
    virtual bool notify_confirmed(std::string_view uuid, const Json& data, std::function<void(bool written)> written) {
        const bool queued = notify(uuid, data);
        if (queued && written) written(true);
        return queued;
    }
    // The same envelope to every connection; returns how many connections it was queued for.
    virtual std::size_t broadcast(const Json& data) = 0;

    // One user on several devices: bind a connection to a user (unbound when it closes).
    virtual bool bind(std::string_view user, std::string_view uuid) = 0;
    virtual std::size_t notify_user(std::string_view user, const Json& data) = 0;

    // Channels (connmix semantics): publish delivers the payload verbatim, as a text message (binary if it is not
    // UTF-8).
    virtual bool subscribe(std::string_view uuid, std::string_view channel) = 0;
    virtual bool unsubscribe(std::string_view uuid, std::string_view channel) = 0;
    virtual std::size_t publish(std::string_view channel, std::string_view payload) = 0;

    // Per-connection context values.
    virtual bool set(std::string_view uuid, std::string_view key, const Json& value) = 0;
    virtual std::optional<Json> get(std::string_view uuid, std::string_view key) const = 0;

    // Sends a raw message to one connection (no envelope): text, or binary if it is not UTF-8.
    virtual bool send(std::string_view uuid, std::string_view text) = 0;
    // Closes a connection with a close code and reason.
    virtual bool kick(std::string_view uuid, int code, std::string_view reason) = 0;

    virtual std::size_t connections() const = 0;
    virtual std::size_t channels() const = 0;
};

}  // namespace hydra
