#include "services/push/password.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <array>
#include <charconv>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace services::push {

namespace {

constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kHashBytes = 32;

std::string to_hex(const unsigned char* bytes, std::size_t n) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(n * 2);
    for (std::size_t i = 0; i < n; ++i) {
        out += kDigits[bytes[i] >> 4];
        out += kDigits[bytes[i] & 0xf];
    }
    return out;
}

std::optional<std::vector<unsigned char>> from_hex(std::string_view hex) {
    if (hex.size() % 2 != 0) return std::nullopt;
    std::vector<unsigned char> out(hex.size() / 2);
    for (std::size_t i = 0; i < out.size(); ++i) {
        unsigned value = 0;
        auto [end, ec] = std::from_chars(hex.data() + 2 * i, hex.data() + 2 * i + 2, value, 16);
        if (ec != std::errc() || end != hex.data() + 2 * i + 2) return std::nullopt;
        out[i] = static_cast<unsigned char>(value);
    }
    return out;
}

std::uint64_t memory_of(const KdfParams& k) { return 128 * k.r * (k.n + k.p + 2); }

std::array<unsigned char, kHashBytes> scrypt(const KdfParams& k, const std::string& password, const unsigned char* salt,
                                             std::size_t salt_len) {
    std::array<unsigned char, kHashBytes> out{};
    if (EVP_PBE_scrypt(password.data(), password.size(), salt, salt_len, k.n, k.r, k.p, memory_of(k) + 4096, out.data(),
                       out.size()) != 1)
        throw std::runtime_error("scrypt failed (N=" + std::to_string(k.n) + ", r=" + std::to_string(k.r) +
                                 ", p=" + std::to_string(k.p) + ")");
    return out;
}

struct Record {
    KdfParams params;
    std::vector<unsigned char> salt;
    std::vector<unsigned char> hash;
};

std::optional<Record> parse(const std::string& record) {
    std::vector<std::string_view> parts;
    std::string_view rest(record);
    for (std::size_t at; (at = rest.find('$')) != std::string_view::npos; rest.remove_prefix(at + 1))
        parts.push_back(rest.substr(0, at));
    parts.push_back(rest);
    if (parts.size() != 6 || parts[0] != "scrypt") return std::nullopt;
    Record r;
    for (auto [text, value] : {std::pair{parts[1], &r.params.n}, {parts[2], &r.params.r}, {parts[3], &r.params.p}}) {
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
        if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    }
    auto salt = from_hex(parts[4]);
    auto hash = from_hex(parts[5]);
    if (!salt || !hash || salt->empty() || hash->size() != kHashBytes || !kdf_problem(r.params).empty())
        return std::nullopt;
    r.salt = std::move(*salt);
    r.hash = std::move(*hash);
    return r;
}

}  // namespace

std::string kdf_problem(const KdfParams& k) {
    if (k.n < 2 || (k.n & (k.n - 1)) != 0) return "N must be a power of two (at least 2)";
    if (k.r == 0 || k.p == 0) return "r and p must be at least 1";
    if (k.r > 1024 || k.p > 1024 || k.n > kMaxKdfMemory || memory_of(k) > kMaxKdfMemory)
        return "N × r × 128 bytes must stay within 1 GiB";
    return "";
}

std::string make_password_record(const KdfParams& params, const std::string& password) {
    std::array<unsigned char, kSaltBytes> salt{};
    if (RAND_bytes(salt.data(), static_cast<int>(salt.size())) != 1)
        throw std::runtime_error("no random bytes for a salt");
    auto hash = scrypt(params, password, salt.data(), salt.size());
    return "scrypt$" + std::to_string(params.n) + "$" + std::to_string(params.r) + "$" + std::to_string(params.p) +
           "$" + to_hex(salt.data(), salt.size()) + "$" + to_hex(hash.data(), hash.size());
}

bool verify_password(const std::string& record, const std::string& password, const KdfParams& fallback) {
    std::optional<Record> r = parse(record);
    if (!r) {
        std::array<unsigned char, kSaltBytes> salt{};
        scrypt(fallback, password, salt.data(), salt.size());  // the same work as a real check
        return false;
    }
    auto hash = scrypt(r->params, password, r->salt.data(), r->salt.size());
    return CRYPTO_memcmp(hash.data(), r->hash.data(), hash.size()) == 0;
}

std::optional<KdfParams> record_params(const std::string& record) {
    std::optional<Record> r = parse(record);
    if (!r) return std::nullopt;
    return r->params;
}

}  // namespace services::push
