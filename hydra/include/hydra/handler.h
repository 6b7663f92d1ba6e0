// Handlers and middleware: any callable taking Context& (or an object with handle()/get()/post()/... methods),
// type-erased to one signature (by <hydra/detail/handlers.h>, which App's registration templates use).
#pragma once

#include <functional>
#include <map>
#include <string>

#include <hydra/context.h>
#include <hydra/result.h>

namespace hydra {

using Handler = std::function<Result(Context&)>;

// Answers an asynchronous API request (App::api_async): call it once, from any thread; later calls are ignored.
// When every copy is dropped without a call, the client gets a 500.
using Reply = std::function<void(Result)>;
// Runs on the API server's I/O loop, so it must not block: it starts work that ends elsewhere (a push_async) and
// returns; that work calls `reply`. An Error thrown before `reply` was called answers the request.
using AsyncHandler = std::function<void(Context&, Reply)>;

// Around-style middleware: run code before, call next() (or not, to reject), run code after.
using Next = std::function<Result()>;
using Middleware = std::function<Result(Context&, const Next&)>;

// The handlers of one route by HTTP method; key "" serves any method.
using MethodHandlers = std::map<std::string, Handler>;

}  // namespace hydra
