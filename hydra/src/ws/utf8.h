// Incremental UTF-8 validation (RFC 3629) for WebSocket text messages and close reasons, which may arrive split
// across frames and reads at any byte boundary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hydra::ws {

// Validates a byte stream chunk by chunk. Rejects overlong forms, UTF-16 surrogates (U+D800..U+DFFF), code points
// above U+10FFFF and stray continuation bytes. feed() fails as soon as the bytes seen so far cannot be the start of
// valid UTF-8, so a bad fragment is rejected without waiting for the end of the message.
// Idle cost is 4 bytes and no allocation.
class Utf8Validator {
  public:
    // Validates the next chunk. Returns false once the stream is invalid (and keeps returning false until reset()).
    bool feed(const std::uint8_t* data, std::size_t len);
    bool feed(std::string_view data) { return feed(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()); }

    // True if everything fed so far is valid and does not end inside a multi-byte sequence.
    bool complete() const { return !failed_ && need_ == 0; }
    bool failed() const { return failed_; }

    void reset() { *this = Utf8Validator{}; }

  private:
    // Continuation bytes still expected, and the range allowed for the next one (narrower than 80..BF right after
    // E0, ED, F0 and F4: that is how overlongs, surrogates and > U+10FFFF are excluded).
    std::uint8_t need_ = 0;
    std::uint8_t lo_ = 0x80;
    std::uint8_t hi_ = 0xBF;
    bool failed_ = false;
};

// Whole-buffer check.
bool is_valid_utf8(std::string_view s);

// The largest n <= max_len such that s[0, n) does not end in the middle of a multi-byte character (assuming s is
// valid UTF-8). Used to truncate text to a byte budget, e.g. a close reason to 123 bytes.
std::size_t utf8_truncate_length(std::string_view s, std::size_t max_len);

}  // namespace hydra::ws
