#include "api/router.h"

#include <algorithm>
#include <stdexcept>

#include "http/target.h"

namespace hydra {
namespace {

std::vector<std::string> split(std::string_view path) {
    std::vector<std::string> out;
    std::size_t i = 1;
    while (i <= path.size()) {
        std::size_t j = path.find('/', i);
        if (j == std::string_view::npos) j = path.size();
        out.emplace_back(path.substr(i, j - i));
        i = j + 1;
    }
    if (path == "/") out.clear();
    return out;
}

}  // namespace

void Router::add(const std::string& pattern, MethodHandlers handlers, AsyncHandlers async, Auth auth) {
    if (pattern.empty() || pattern[0] != '/') throw std::invalid_argument("route must start with '/': " + pattern);
    std::string norm = http::normalize_path(pattern);
    Route route{norm, split(norm), {}, {}, {}};
    bool has_param = false;
    for (const auto& seg : route.segments) {
        if (seg.empty()) throw std::invalid_argument("route has an empty segment: " + pattern);
        if (seg[0] == ':' || seg[0] == '*') {
            if (seg.size() == 1) throw std::invalid_argument("route has an unnamed parameter: " + pattern);
            if (seg[0] == '*' && &seg != &route.segments.back())
                throw std::invalid_argument("a *wildcard must be the last segment: " + pattern);
            has_param = true;
        }
    }
    if (!async.empty()) has_async_ = true;
    // The same pattern registered again adds verbs; the same verb twice is a programming error.
    auto twice = [&](const Route& r, const std::string& verb) {
        if (r.handlers.count(verb) || r.async.count(verb))
            throw std::invalid_argument("route registered twice: " + (verb.empty() ? "*" : verb) + " " + norm);
    };
    auto mark = [&](Route& r) {
        if (auth == Auth::none) return;
        for (auto& [verb, h] : handlers) r.auth[verb] = auth;
        for (auto& [verb, h] : async) r.auth[verb] = auth;
    };
    for (auto& existing : routes_) {
        if (existing.pattern != norm) continue;
        for (auto& [verb, h] : handlers) twice(existing, verb);
        for (auto& [verb, h] : async) twice(existing, verb);
        mark(existing);
        for (auto& [verb, h] : handlers) existing.handlers[verb] = std::move(h);
        for (auto& [verb, h] : async) existing.async[verb] = std::move(h);
        return;
    }
    mark(route);
    route.handlers = std::move(handlers);
    route.async = std::move(async);
    if (!has_param) exact_[norm] = routes_.size();
    routes_.push_back(std::move(route));
}

std::string Router::first_with(Auth auth) const {
    for (const auto& route : routes_)
        for (const auto& [verb, a] : route.auth)
            if (a == auth) return (verb.empty() ? "*" : verb) + " " + route.pattern;
    return {};
}

void Router::fill(const Route& route, std::string_view method, Match& m) const {
    m.pattern = route.pattern;
    for (const std::string& verb : {std::string(method), std::string()}) {  // the verb's own handler first
        auto found = [&] {
            m.status = Status::found;
            if (auto a = route.auth.find(verb); a != route.auth.end()) m.auth = a->second;
        };
        if (auto it = route.handlers.find(verb); it != route.handlers.end()) {
            found();
            m.handler = &it->second;
            return;
        }
        if (auto it = route.async.find(verb); it != route.async.end()) {
            found();
            m.async = &it->second;
            return;
        }
    }
    m.status = Status::method_not_allowed;
    std::vector<std::string> verbs;
    for (const auto& [verb, h] : route.handlers) verbs.push_back(verb);
    for (const auto& [verb, h] : route.async) verbs.push_back(verb);
    std::sort(verbs.begin(), verbs.end());
    for (const auto& verb : verbs) {
        if (!m.allow.empty()) m.allow += ", ";
        m.allow += verb;
    }
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
    Match m;
    std::string norm = http::normalize_path(path);
    if (auto it = exact_.find(norm); it != exact_.end()) {
        fill(routes_[it->second], method, m);
        return m;
    }
    std::vector<std::string> segs = split(norm);
    for (const auto& route : routes_) {
        if (exact_.count(route.pattern)) continue;
        bool wildcard = !route.segments.empty() && route.segments.back()[0] == '*';
        std::size_t fixed = route.segments.size() - (wildcard ? 1 : 0);
        if (wildcard ? segs.size() < fixed : segs.size() != fixed) continue;
        Json params = Json::object();
        bool ok = true;
        for (std::size_t i = 0; i < fixed && ok; ++i) {
            const std::string& want = route.segments[i];
            if (want[0] == ':')
                params[want.substr(1)] = segs[i];
            else
                ok = want == segs[i];
        }
        if (ok && wildcard) {
            std::string rest;
            for (std::size_t i = fixed; i < segs.size(); ++i) rest += (i > fixed ? "/" : "") + segs[i];
            params[route.segments.back().substr(1)] = rest;
        }
        if (!ok) continue;
        fill(route, method, m);
        m.path_params = std::move(params);
        if (m.status == Status::found) return m;
    }
    return m;
}

}  // namespace hydra
