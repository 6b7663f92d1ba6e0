#include "ws/origin.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "http/message.h"

namespace hydra::ws {

namespace {

bool host_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '[' || c == ']' || c == ':';
}

}  // namespace

// scheme "://" host [":" port], nothing else (no path, no user info); with allow_wildcard the host may start "*.".
bool OriginPolicy::parse(std::string_view text, Pattern& out, bool allow_wildcard) {
    const std::string s = http::to_lower(text);
    const auto sep = s.find("://");
    if (sep == std::string::npos) return false;
    out.scheme = s.substr(0, sep);
    if (out.scheme != "http" && out.scheme != "https") return false;
    std::string authority = s.substr(sep + 3);
    if (allow_wildcard && authority.rfind("*.", 0) == 0) {
        out.wildcard = true;
        authority.erase(0, 2);
    }
    // A port follows the last ':' outside an IPv6 literal's brackets.
    const auto bracket = authority.rfind(']');
    const auto colon = authority.rfind(':');
    if (colon != std::string::npos && (bracket == std::string::npos || colon > bracket)) {
        out.port = authority.substr(colon + 1);
        authority.erase(colon);
        if (out.port.empty() || out.port.size() > 5 ||
            !std::all_of(out.port.begin(), out.port.end(), [](unsigned char c) { return std::isdigit(c); }))
            return false;
        if ((out.scheme == "https" && out.port == "443") || (out.scheme == "http" && out.port == "80"))
            out.port.clear();
    }
    if (authority.empty() || !std::all_of(authority.begin(), authority.end(), host_char)) return false;
    if (authority.front() == '.' || authority.back() == '.') return false;
    out.host = authority;
    return true;
}

OriginPolicy::OriginPolicy(const std::vector<std::string>& patterns) {
    for (const auto& text : patterns) {
        if (text == "*") {
            patterns_.clear();
            any_ = true;
            return;
        }
        Pattern p;
        if (!parse(text, p, true))
            throw std::invalid_argument("'" + text +
                                        "' is not an origin (scheme://host[:port], host may start with *.)");
        patterns_.push_back(std::move(p));
    }
    any_ = patterns_.empty();
}

bool OriginPolicy::allows(std::string_view origin) const {
    if (any_) return true;
    if (origin.size() > 1024) return false;
    Pattern o;
    if (!parse(origin, o, false)) return false;  // "null", a path, garbage: not an origin we know
    for (const auto& p : patterns_) {
        if (p.scheme != o.scheme || p.port != o.port) continue;
        if (!p.wildcard) {
            if (o.host == p.host) return true;
        } else if (o.host.size() > p.host.size() + 1 &&
                   o.host.compare(o.host.size() - p.host.size(), p.host.size(), p.host) == 0 &&
                   o.host[o.host.size() - p.host.size() - 1] == '.') {
            return true;
        }
    }
    return false;
}

}  // namespace hydra::ws
