#include "ws/resume.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <stdexcept>

#include "core/request_id.h"

namespace hydra::ws {

namespace {
// base64url (RFC 4648 section 5) without padding, of HMAC-SHA256(secret, uuid).
std::string resume_mac(std::string_view secret, std::string_view uuid) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
             reinterpret_cast<const unsigned char*>(uuid.data()), uuid.size(), mac, &mac_len) == nullptr)
        throw std::runtime_error("resume token: HMAC failed");
    std::string out(4 * ((mac_len + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), mac, static_cast<int>(mac_len));
    out.resize(static_cast<std::size_t>(n));
    while (!out.empty() && out.back() == '=') out.pop_back();
    for (auto& c : out) c = c == '+' ? '-' : c == '/' ? '_' : c;
    return out;
}
}  // namespace

std::string resume_token(std::string_view secret, std::string_view uuid) {
    std::string token(uuid);
    token += '.';
    token += resume_mac(secret, uuid);
    return token;
}

std::optional<std::string> resume_uuid(std::string_view secret, std::string_view token) {
    if (token.size() > kMaxResumeToken) return std::nullopt;
    auto dot = token.rfind('.');
    if (dot == std::string_view::npos) return std::nullopt;
    std::string_view uuid = token.substr(0, dot);
    std::string_view presented = token.substr(dot + 1);
    if (!valid_request_id(uuid)) return std::nullopt;
    std::string expected = resume_mac(secret, uuid);
    if (presented.size() != expected.size() || CRYPTO_memcmp(presented.data(), expected.data(), expected.size()) != 0)
        return std::nullopt;
    return std::string(uuid);
}

std::string random_resume_secret() {
    std::string secret(32, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(secret.data()), static_cast<int>(secret.size())) != 1)
        throw std::runtime_error("ws: cannot draw a random resume secret");
    return secret;
}

}  // namespace hydra::ws
