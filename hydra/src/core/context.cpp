// Context accessors, shared by the API, WS and MQC servers.
#include <hydra/context.h>
#include <hydra/testing.h>

#include "core/context_access.h"
#include "http/message.h"
#include "net/client_limits.h"

#include <algorithm>
#include <cctype>

namespace hydra {

Context::Context(Init init) : init_(std::move(init)), log_(init_.request_id) {}

Context testing::make_context(Context::Init init) { return detail::ContextAccess::make(std::move(init)); }

const Json& Context::params() const {
    static const Json empty = Json::object();
    return init_.params.is_object() ? init_.params : empty;
}

const Json* Context::find(std::string_view name) const {
    if (!init_.params.is_object()) return nullptr;
    auto it = init_.params.find(name);
    return it == init_.params.end() ? nullptr : &*it;
}

bool Context::has(std::string_view name) const {
    const Json* v = find(name);
    return v != nullptr && !v->is_null();
}

std::string Context::param(std::string_view name, std::string_view fallback) const {
    const Json* v = find(name);
    if (v == nullptr || v->is_null()) return std::string(fallback);
    if (v->is_string()) return v->get<std::string>();
    return v->dump();
}

std::string Context::require(std::string_view name) const {
    std::string v = param(name);
    if (v.empty()) throw Error(400, "missing parameter " + std::string(name));
    return v;
}

std::optional<std::string> Context::header(std::string_view name) const {
    if (!init_.headers) return std::nullopt;
    auto it = init_.headers->find(http::to_lower(name));
    if (it == init_.headers->end()) return std::nullopt;
    return it->second;
}

const Headers& Context::headers() const {
    static const Headers kNone;
    return init_.headers ? *init_.headers : kNone;
}

const Json& Context::claims() const {
    static const Json kNone;
    return init_.claims ? *init_.claims : kNone;
}

const std::string& Context::user() const {
    static const std::string kNone;
    if (!init_.claims || !init_.claims->is_object()) return kNone;
    auto it = init_.claims->find("sub");
    return it != init_.claims->end() && it->is_string() ? it->get_ref<const std::string&>() : kNone;
}

Exchange& Context::exchange() const {
    if (init_.exchange == nullptr) throw Error(503, "this host runs no WS server");
    return *init_.exchange;
}

namespace {

// A push that did not become durable is a temporary unavailability for the caller (503), or a bad request (400,
// e.g. an invalid queue name), not a server bug.
Error caller_error(const QueueError& e) { return Error(e.retryable() ? 503 : 400, e.what()); }

Error no_queue() { return Error(503, "this host has no queue backend"); }

}  // namespace

// The request id travels as a header of every push.
Headers QueueRef::traced(Headers headers) const {
    if (!request_id_.empty()) headers.emplace("x-request-id", request_id_);
    return headers;
}

void QueueRef::push(std::string_view queue, std::string_view payload, Headers headers,
                    std::chrono::milliseconds delay) const {
    if (queue_ == nullptr) throw no_queue();
    try {
        queue_->push(queue, payload, traced(std::move(headers)), delay);
    } catch (const QueueError& e) {
        throw caller_error(e);
    }
}

void QueueRef::push_async(std::string_view queue, std::string_view payload, PushDone done, Headers headers) const {
    if (queue_ == nullptr) {
        Error e = no_queue();
        return done(&e);
    }
    queue_->push_async(queue, payload, traced(std::move(headers)), std::chrono::milliseconds{0},
                       [done = std::move(done)](const QueueError* error) {
                           if (error == nullptr) return done(nullptr);
                           Error e = caller_error(*error);
                           done(&e);
                       });
}

void QueueRef::push_batch(std::string_view queue, std::span<const std::string> payloads, Headers headers) const {
    if (queue_ == nullptr) throw no_queue();
    try {
        queue_->push_batch(queue, payloads, traced(std::move(headers)));
    } catch (const QueueError& e) {
        throw caller_error(e);
    }
}

const std::string& Context::peer_address() const {
    if (peer_text_.empty() && init_.peer) peer_text_ = client_key_text(*init_.peer);
    return peer_text_;
}

}  // namespace hydra
