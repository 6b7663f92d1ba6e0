// Context: what a handler sees of one request (API), packet (WS) or message (MQC).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <hydra/error.h>
#include <hydra/exchange.h>
#include <hydra/json.h>
#include <hydra/log.h>
#include <hydra/queue.h>

namespace hydra {

enum class ServerKind { api, ws, mqc };

// ctx.queue(): pushes that carry the request id, so a message can be traced from API to WS push.
class QueueRef {
  public:
    QueueRef(Queue* queue, std::string request_id) : queue_(queue), request_id_(std::move(request_id)) {}

    // See Queue::push. Throws Error(503) when the host has no queue backend.
    void push(std::string_view queue, std::string_view payload, Headers headers = {},
              std::chrono::milliseconds delay = std::chrono::milliseconds{0}) const;
    void push(std::string_view queue, const Json& payload, Headers headers = {},
              std::chrono::milliseconds delay = std::chrono::milliseconds{0}) const {
        push(queue, std::string_view(payload.dump()), std::move(headers), delay);
    }
    // Called once when a push_async() ended: `error` is null when the message is durable, else the failure as an
    // Error (503 when trying again may help, 400 otherwise). It runs on a thread of the queue: keep it short.
    using PushDone = std::function<void(const Error* error)>;
    // See Queue::push_async: returns without waiting; `done` may run before it returns (e.g. no queue backend:
    // Error 503).
    void push_async(std::string_view queue, std::string_view payload, PushDone done, Headers headers = {}) const;
    void push_async(std::string_view queue, const Json& payload, PushDone done, Headers headers = {}) const {
        push_async(queue, std::string_view(payload.dump()), std::move(done), std::move(headers));
    }
    // See Queue::push_batch: all of them durable when it returns.
    void push_batch(std::string_view queue, std::span<const std::string> payloads, Headers headers = {}) const;

  private:
    Headers traced(Headers headers) const;

    Queue* queue_;
    std::string request_id_;
};

namespace detail {
struct ContextAccess;
}

class Context {
  public:
    // What the server that owns a request fills in. Handlers get a Context, they never make one; a unit test of a
    // handler makes one with hydra::testing::make_context (<hydra/testing.h>).
    struct Init {
        ServerKind kind = ServerKind::api;
        std::string method;  // HTTP verb on API; empty elsewhere
        std::string path;    // the request path, WS service name or MQC route
        std::string route;   // the registered pattern that matched
        Json params;         // an object, or null for none (no allocation per message when there are no params)
        std::shared_ptr<const Headers> headers;  // names lower-case; shared by all messages of a WS connection
        std::string body;
        bool binary = false;  // WS: the message was a binary frame
        std::string request_id;
        std::string uuid;  // WS connection uuid
        // The client's address (API, WS) as the per-address limits key it: an IPv6 /64, or IPv4 mapped into IPv6.
        std::optional<std::array<std::uint8_t, 16>> peer;
        Queue* queue = nullptr;
        Exchange* exchange = nullptr;
        // The verified token's claims (WS with ws.auth=jwt, shared by all messages of a connection; an API route
        // registered with Auth::jwt); null for none.
        std::shared_ptr<const Json> claims;
    };

    ServerKind kind() const { return init_.kind; }
    const std::string& method() const { return init_.method; }
    const std::string& path() const { return init_.path; }
    const std::string& route() const { return init_.route; }
    const std::string& request_id() const { return init_.request_id; }
    const std::string& uuid() const { return init_.uuid; }
    // The client's address as hydra counts it for its per-address limits: an IPv4 address ("203.0.113.7") or an
    // IPv6 /64 ("2001:db8:1:2::/64"); the TCP peer, never a header such as X-Forwarded-For. Empty on MQC.
    // Formatted when asked for (most handlers never do).
    const std::string& peer_address() const;
    const std::string& body() const { return init_.body; }
    bool binary() const { return init_.binary; }

    // The claims of the token the client authenticated with (an object), or null when there was none (ws.auth=none,
    // an API route without Auth::jwt). On WS, a refreshed token's claims from the refresh on.
    const Json& claims() const;
    // The token's `sub` ("" when none): on WS, the user the connection is bound to (exchange().notify_user reaches
    // it); on an API route with Auth::jwt, the caller.
    const std::string& user() const;

    // Params merged from query string, form body and JSON body (later wins), then path params (`/order/:id`).
    const Json& params() const;
    bool has(std::string_view name) const;
    // A param as a string (numbers and booleans converted); `fallback` when absent or null.
    std::string param(std::string_view name, std::string_view fallback = {}) const;
    // A param that must be present and non-empty: otherwise Error(400, "missing parameter <name>").
    std::string require(std::string_view name) const;
    // A param converted to T (int64_t, int, double, bool, std::string, Json): Error(400) when absent or wrong type.
    template <class T>
    T get(std::string_view name) const;

    std::optional<std::string> header(std::string_view name) const;  // case-insensitive
    const Headers& headers() const;

    // Response headers (API only); X-Request-Id is always added.
    void set_response_header(std::string name, std::string value) { response_headers_[std::move(name)] = value; }
    const std::map<std::string, std::string>& response_headers() const { return response_headers_; }

    QueueRef queue() const { return QueueRef(init_.queue, init_.request_id); }
    // Throws Error(503) when the host runs no WS server.
    Exchange& exchange() const;
    const Logger& log() const { return log_; }

    // Free-form values middleware hands to handlers (e.g. the authenticated user). Null until something is set
    // (`ctx.locals()["user"] = ...` makes it an object).
    Json& locals() { return locals_; }

  private:
    friend struct detail::ContextAccess;
    explicit Context(Init init);

    const Json* find(std::string_view name) const;

    Init init_;
    mutable std::string peer_text_;  // peer_address(), once asked for
    Logger log_;
    Json locals_;
    std::map<std::string, std::string> response_headers_;
};

template <class T>
T Context::get(std::string_view name) const {
    const Json* value = find(name);
    if (value == nullptr || value->is_null()) throw Error(400, "missing parameter " + std::string(name));
    try {
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
            if (value->is_string()) {
                std::size_t used = 0;
                const std::string& s = value->template get_ref<const std::string&>();
                long long n = std::stoll(s, &used);
                if (used != s.size()) throw std::invalid_argument(s);
                return static_cast<T>(n);
            }
            if (!value->is_number_integer()) throw std::invalid_argument("type");
            return value->template get<T>();
        } else if constexpr (std::is_same_v<T, std::string>) {
            return param(name);
        } else {
            return value->template get<T>();
        }
    } catch (const Error&) {
        throw;
    } catch (const std::exception&) {
        throw Error(400, "invalid parameter " + std::string(name));
    }
}

}  // namespace hydra
