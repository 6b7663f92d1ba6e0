#include "api/router.h"

#include <stdexcept>

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

std::string normalize_path(std::string_view path) {
    std::string p(path.empty() ? "/" : path);
    if (p[0] != '/') p.insert(p.begin(), '/');
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

void Router::add(const std::string& pattern, MethodHandlers handlers) {
    if (pattern.empty() || pattern[0] != '/') throw std::invalid_argument("route must start with '/': " + pattern);
    std::string norm = normalize_path(pattern);
    Route route{norm, split(norm), {}};
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
    // The same pattern registered again adds verbs; the same verb twice is a programming error.
    for (auto& existing : routes_) {
        if (existing.pattern != norm) continue;
        for (auto& [verb, h] : handlers) {
            if (existing.handlers.count(verb))
                throw std::invalid_argument("route registered twice: " + (verb.empty() ? "*" : verb) + " " + norm);
            existing.handlers[verb] = std::move(h);
        }
        return;
    }
    route.handlers = std::move(handlers);
    if (!has_param) exact_[norm] = routes_.size();
    routes_.push_back(std::move(route));
}

void Router::fill(const Route& route, std::string_view method, Match& m) const {
    m.pattern = route.pattern;
    auto it = route.handlers.find(std::string(method));
    if (it == route.handlers.end()) it = route.handlers.find("");
    if (it != route.handlers.end()) {
        m.status = Status::found;
        m.handler = &it->second;
        return;
    }
    m.status = Status::method_not_allowed;
    for (const auto& [verb, h] : route.handlers) {
        if (!m.allow.empty()) m.allow += ", ";
        m.allow += verb;
    }
}

Router::Match Router::match(std::string_view method, std::string_view path) const {
    Match m;
    std::string norm = normalize_path(path);
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
