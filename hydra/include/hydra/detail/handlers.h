// How App's registration templates turn a handler of any supported shape into Handler / MethodHandlers. Not part
// of the API: include <hydra/app.h>.
#pragma once

#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include <hydra/handler.h>

namespace hydra::detail {

template <class R>
Result to_result(R&& value) {
    return Result(std::forward<R>(value));
}

// Wraps a callable returning something convertible to Result (or void).
template <class F>
Handler wrap_callable(F f) {
    using R = std::invoke_result_t<F&, Context&>;
    if constexpr (std::is_void_v<R>) {
        return [f = std::move(f)](Context& ctx) mutable -> Result {
            f(ctx);
            return Result();
        };
    } else {
        static_assert(std::is_constructible_v<Result, R>,
                      "a handler must return Json, std::string, Result, Error or void");
        return [f = std::move(f)](Context& ctx) mutable -> Result { return Result(f(ctx)); };
    }
}

template <class T>
concept HasHandle = requires(T& t, Context& c) {
    t.handle(c);
};
template <class T>
concept HasGet = requires(T& t, Context& c) {
    t.get(c);
};
template <class T>
concept HasPost = requires(T& t, Context& c) {
    t.post(c);
};
template <class T>
concept HasPut = requires(T& t, Context& c) {
    t.put(c);
};
template <class T>
concept HasDelete = requires(T& t, Context& c) {
    t.del(c);
};
template <class T>
concept HasPatch = requires(T& t, Context& c) {
    t.patch(c);
};

template <class T>
MethodHandlers from_object(std::shared_ptr<T> obj) {
    MethodHandlers m;
    if constexpr (HasHandle<T>) m[""] = wrap_callable([obj](Context& c) { return obj->handle(c); });
    if constexpr (HasGet<T>) m["GET"] = wrap_callable([obj](Context& c) { return obj->get(c); });
    if constexpr (HasPost<T>) m["POST"] = wrap_callable([obj](Context& c) { return obj->post(c); });
    if constexpr (HasPut<T>) m["PUT"] = wrap_callable([obj](Context& c) { return obj->put(c); });
    if constexpr (HasDelete<T>) m["DELETE"] = wrap_callable([obj](Context& c) { return obj->del(c); });
    if constexpr (HasPatch<T>) m["PATCH"] = wrap_callable([obj](Context& c) { return obj->patch(c); });
    static_assert(HasHandle<T> || HasGet<T> || HasPost<T> || HasPut<T> || HasDelete<T> || HasPatch<T>,
                  "a handler object needs handle(Context&) or get/post/put/del/patch(Context&)");
    return m;
}

template <class T>
struct IsSharedPtr : std::false_type {};
template <class T>
struct IsSharedPtr<std::shared_ptr<T>> : std::true_type {};

// Any supported handler shape → handlers by method.
template <class H>
MethodHandlers make_handlers(H&& h) {
    using T = std::decay_t<H>;
    if constexpr (std::is_invocable_v<T&, Context&>) {
        return MethodHandlers{{"", wrap_callable(T(std::forward<H>(h)))}};
    } else if constexpr (IsSharedPtr<T>::value) {
        return from_object(T(std::forward<H>(h)));
    } else {
        return from_object(std::make_shared<T>(std::forward<H>(h)));
    }
}

// A single handler for routes without verbs (WS services, MQC routes).
template <class H>
Handler make_handler(H&& h) {
    MethodHandlers m = make_handlers(std::forward<H>(h));
    auto it = m.find("");
    if (it == m.end()) throw std::invalid_argument("this route takes a callable or an object with handle()");
    return it->second;
}

}  // namespace hydra::detail
