// Context accessors and the middleware chain, shared by the API, WS and MQC servers.
#include <hydra/context.h>
#include <hydra/handler.h>

#include <algorithm>
#include <cctype>

namespace hydra {

Context::Context(Init init) : init_(std::move(init)), log_(init_.request_id) {
    if (!init_.params.is_object()) init_.params = Json::object();
}

const Json* Context::find(std::string_view name) const {
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
    std::string key(name);
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return std::tolower(c); });
    if (!init_.headers) return std::nullopt;
    auto it = init_.headers->find(key);
    if (it == init_.headers->end()) return std::nullopt;
    return it->second;
}

const HeaderMap& Context::headers() const {
    static const HeaderMap kNone;
    return init_.headers ? *init_.headers : kNone;
}

Exchange& Context::exchange() const {
    if (init_.exchange == nullptr) throw Error(503, "this host runs no WS server");
    return *init_.exchange;
}

void QueueRef::push(std::string_view queue, std::string_view payload, Headers headers,
                    std::chrono::milliseconds delay) const {
    if (queue_ == nullptr) throw Error(503, "this host has no queue backend");
    if (!request_id_.empty()) headers.emplace("x-request-id", request_id_);
    try {
        queue_->push(queue, payload, headers, delay);
    } catch (const QueueError& e) {
        // A push that did not become durable is a temporary unavailability for the caller, not a server bug.
        throw Error(e.retryable() ? 503 : 400, e.what());
    }
}

void QueueRef::push_async(std::string_view queue, std::string_view payload, PushDone done, Headers headers) const {
    if (queue_ == nullptr) {
        Error e(503, "this host has no queue backend");
        return done(&e);
    }
    if (!request_id_.empty()) headers.emplace("x-request-id", request_id_);
    queue_->push_async(queue, payload, headers, std::chrono::milliseconds{0},
                       [done = std::move(done)](const QueueError* error) {
                           if (error == nullptr) return done(nullptr);
                           Error e(error->retryable() ? 503 : 400, error->what());
                           done(&e);
                       });
}

void QueueRef::push_batch(std::string_view queue, std::span<const std::string> payloads, Headers headers) const {
    if (queue_ == nullptr) throw Error(503, "this host has no queue backend");
    if (!request_id_.empty()) headers.emplace("x-request-id", request_id_);
    try {
        queue_->push_batch(queue, payloads, headers);
    } catch (const QueueError& e) {
        throw Error(e.retryable() ? 503 : 400, e.what());
    }
}

Result run_chain(const std::vector<Middleware>& chain, Context& ctx, const Handler& handler) {
    // Index-based recursion: each middleware's next() runs the rest of the chain.
    std::function<Result(std::size_t)> step = [&](std::size_t i) -> Result {
        if (i == chain.size()) return handler(ctx);
        return chain[i](ctx, [&step, i] { return step(i + 1); });
    };
    return step(0);
}

}  // namespace hydra
