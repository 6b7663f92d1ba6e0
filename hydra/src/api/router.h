// Route table of the API server: exact paths and `:name` segments, with handlers per HTTP method.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <hydra/app.h>
#include <hydra/handler.h>

namespace hydra {

// The asynchronous handlers of one route by HTTP method; key "" serves any method.
using AsyncHandlers = std::map<std::string, AsyncHandler>;

class Router {
  public:
    enum class Status { found, not_found, method_not_allowed };
    struct Match {
        Status status = Status::not_found;
        const Handler* handler = nullptr;     // found: one of these two is set
        const AsyncHandler* async = nullptr;  // (App::api_async)
        std::string pattern;
        Json path_params = Json::object();
        std::string allow;       // for 405: the verbs the path does answer, comma-separated
        Auth auth = Auth::none;  // found: what the request must present (ApiOptions::auth)
    };

    // Throws std::invalid_argument for a malformed pattern or a verb registered twice on the same route. `auth`
    // applies to the verbs registered by this call.
    void add(const std::string& pattern, MethodHandlers handlers, AsyncHandlers async = {}, Auth auth = Auth::none);
    Match match(std::string_view method, std::string_view path) const;
    std::size_t size() const { return routes_.size(); }
    // Whether any route has an async handler (App::api_async).
    bool has_async() const { return has_async_; }
    // The first verb and route registered with `auth` ("GET /auth/whoami"; "*" for any verb), or "" for none.
    std::string first_with(Auth auth) const;

  private:
    struct Route {
        std::string pattern;
        std::vector<std::string> segments;  // ":name" for a parameter
        MethodHandlers handlers;
        AsyncHandlers async;               // a verb is in one of the two maps
        std::map<std::string, Auth> auth;  // by verb; absent = Auth::none
    };
    void fill(const Route& route, std::string_view method, Match& m) const;

    std::vector<Route> routes_;
    std::unordered_map<std::string, std::size_t> exact_;  // normalized path → index
    bool has_async_ = false;
};

}  // namespace hydra
