// Incremental UTF-8 validation: a small state machine over the RFC 3629 table of well-formed byte sequences.
#include "ws/utf8.h"

#include <cstring>

namespace hydra::ws {

bool Utf8Validator::feed(const std::uint8_t* data, std::size_t len) {
    if (failed_) return false;
    std::size_t i = 0;
    while (i < len) {
        if (need_ == 0) {
            // Text is mostly ASCII: skip it 8 bytes at a time.
            while (i + 8 <= len) {
                std::uint64_t word;
                std::memcpy(&word, data + i, sizeof word);
                if (word & 0x8080808080808080ull) break;
                i += 8;
            }
            if (i >= len) break;
            const std::uint8_t b = data[i++];
            if (b < 0x80) continue;
            // Lead byte: how many continuation bytes follow, and the range of the first one.
            if (b >= 0xC2 && b <= 0xDF) {
                need_ = 1, lo_ = 0x80, hi_ = 0xBF;
            } else if (b == 0xE0) {
                need_ = 2, lo_ = 0xA0, hi_ = 0xBF;  // excludes overlong 3-byte forms
            } else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) {
                need_ = 2, lo_ = 0x80, hi_ = 0xBF;
            } else if (b == 0xED) {
                need_ = 2, lo_ = 0x80, hi_ = 0x9F;  // excludes surrogates U+D800..U+DFFF
            } else if (b == 0xF0) {
                need_ = 3, lo_ = 0x90, hi_ = 0xBF;  // excludes overlong 4-byte forms
            } else if (b >= 0xF1 && b <= 0xF3) {
                need_ = 3, lo_ = 0x80, hi_ = 0xBF;
            } else if (b == 0xF4) {
                need_ = 3, lo_ = 0x80, hi_ = 0x8F;  // excludes > U+10FFFF
            } else {
                // 80..BF stray continuation, C0/C1 overlong 2-byte, F5..FF out of range.
                failed_ = true;
                return false;
            }
        } else {
            const std::uint8_t b = data[i++];
            if (b < lo_ || b > hi_) {
                failed_ = true;
                return false;
            }
            --need_;
            lo_ = 0x80, hi_ = 0xBF;
        }
    }
    return true;
}

bool is_valid_utf8(std::string_view s) {
    Utf8Validator v;
    return v.feed(s) && v.complete();
}

std::size_t utf8_truncate_length(std::string_view s, std::size_t max_len) {
    if (s.size() <= max_len) return s.size();
    std::size_t n = max_len;
    // s[n] is the first byte cut off; if it is a continuation byte, the character it belongs to started earlier and
    // must be dropped whole.
    while (n > 0 && (static_cast<std::uint8_t>(s[n]) & 0xC0) == 0x80) --n;
    return n;
}

}  // namespace hydra::ws
