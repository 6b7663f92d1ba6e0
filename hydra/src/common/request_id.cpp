#include "common/request_id.h"

#include <array>
#include <cstdint>
#include <random>

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
    // One generator per thread, seeded from the OS: no lock on the hot path of connection accept.
    thread_local std::mt19937_64 rng{[] {
        std::random_device rd;
        return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
    }()};
    std::uint64_t hi = rng();
    std::uint64_t lo = rng();
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
