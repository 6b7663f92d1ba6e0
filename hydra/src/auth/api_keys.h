// API keys (auth.api_keys): shared secrets that backends and operators present on routes registered with
// Auth::api_key and on every admin route, as `Authorization: apikey <key>` or `X-API-Key: <key>`.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http/message.h"

namespace hydra::auth {

class ApiKeys {
  public:
    ApiKeys() = default;
    explicit ApiKeys(const std::vector<std::string>& keys);

    bool empty() const { return digests_.empty(); }
    // Whether `presented` is one of the keys. Compares SHA-256 digests in constant time (CRYPTO_memcmp), against
    // every key: neither the length of a key nor which one matched shows in the time taken.
    bool accepts(std::string_view presented) const;

    // The key a request presents: `Authorization: apikey <key>` (scheme case-insensitive), else `X-API-Key`.
    static std::optional<std::string_view> presented(const HeaderFields& headers);
    // Why `headers` is refused ("" = accepted): for the 401's message.
    std::string refusal(const HeaderFields& headers) const;

  private:
    using Digest = std::array<unsigned char, 32>;
    static Digest digest(std::string_view text);
    std::vector<Digest> digests_;
};

}  // namespace hydra::auth
