#include "core/request_id.h"

#include <array>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/rand.h>

namespace hydra {

bool valid_request_id(std::string_view id) {
    if (id.empty() || id.size() > 64) return false;
    for (char c : id) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                  c == ':' || c == '-';
        if (!ok) return false;
    }
    return true;
}

std::string generate_uuid() {
    // Uuids are addresses: they come from the CSPRNG, drawn in blocks per thread so an accept rarely calls it.
    thread_local std::array<unsigned char, 1024> pool{};
    thread_local std::size_t used = pool.size();
    if (used + 16 > pool.size()) {
        if (RAND_bytes(pool.data(), static_cast<int>(pool.size())) != 1)
            throw std::runtime_error("generate_uuid: the random generator failed");
        used = 0;
    }
    std::uint64_t hi = 0, lo = 0;
    std::memcpy(&hi, pool.data() + used, 8);
    std::memcpy(&lo, pool.data() + used + 8, 8);
    OPENSSL_cleanse(pool.data() + used, 16);  // a uuid handed out is not left behind in the pool
    used += 16;
    hi = (hi & 0xffffffffffff0fffULL) | 0x0000000000004000ULL;  // version 4
    lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;  // variant 10
    std::array<unsigned char, 16> b{};
    for (int i = 0; i < 8; ++i) {
        b[i] = static_cast<unsigned char>(hi >> (56 - 8 * i));
        b[8 + i] = static_cast<unsigned char>(lo >> (56 - 8 * i));
    }
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(36);
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
        out += kHex[b[i] >> 4];
        out += kHex[b[i] & 15];
    }
    return out;
}

}  // namespace hydra
