#include "auth/api_keys.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

namespace hydra::auth {

ApiKeys::ApiKeys(const std::vector<std::string>& keys) {
    digests_.reserve(keys.size());
    for (const auto& key : keys) digests_.push_back(digest(key));
}

ApiKeys::Digest ApiKeys::digest(std::string_view text) {
    Digest d;
    SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), d.data());
    return d;
}

bool ApiKeys::accepts(std::string_view presented) const {
    if (presented.empty()) return false;
    const Digest d = digest(presented);
    int matches = 0;
    for (const auto& key : digests_) matches |= CRYPTO_memcmp(key.data(), d.data(), d.size()) == 0;
    return matches != 0;
}

std::optional<std::string_view> ApiKeys::presented(const HeaderFields& headers) {
    if (auto key = http::authorization(headers, "apikey")) return key;
    return http::find_header(headers, "X-API-Key");
}

std::string ApiKeys::refusal(const HeaderFields& headers) const {
    auto key = presented(headers);
    if (!key || key->empty()) return "an API key is required (Authorization: apikey <key> or X-API-Key: <key>)";
    if (!accepts(*key)) return "invalid API key";
    return {};
}

}  // namespace hydra::auth
