// Which browser origins may open a WebSocket (ws.allowed_origins): the check against cross-site WebSocket hijacking.
// A browser always sends Origin with an upgrade; a page on evil.example cannot make the victim's browser connect
// with the victim's cookies once the server refuses origins it does not know. Clients that are not browsers send no
// Origin and are not affected (they cannot be made to act for someone else).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace hydra::ws {

class OriginPolicy {
  public:
    // Each pattern: "*" (any origin), an exact origin "https://app.example.com[:port]", or one whose host starts
    // with "*." ("https://*.example.com": any subdomain, at any depth, never example.com itself). Scheme http or
    // https; compared without regard to case; a port in the pattern must match, none means the scheme's default.
    // An empty list allows every origin. Throws std::invalid_argument naming a malformed pattern.
    explicit OriginPolicy(const std::vector<std::string>& patterns = {});

    bool allows_any() const { return any_; }
    // Whether an upgrade with `origin` (its Origin header, as sent) may proceed.
    bool allows(std::string_view origin) const;

  private:
    struct Pattern {
        std::string scheme, host, port;  // host without its "*." when wildcard
        bool wildcard = false;
    };
    static bool parse(std::string_view text, Pattern& out, bool allow_wildcard);
    std::vector<Pattern> patterns_;
    bool any_ = true;
};

}  // namespace hydra::ws
