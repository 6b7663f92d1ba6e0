// The chunked transfer coding (RFC 9112 section 7.1), decoded as the bytes arrive: request bodies on the API server,
// response bodies in the clients. Pure, fuzzed (tests/fuzz/http_chunked_fuzz.cpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "http/message.h"

namespace hydra::http {

// A chunked request body (RFC 9112 section 7.1), fed the bytes as they arrive; strict: the size is 1*HEXDIG with
// nothing around it, every line ends in CRLF, and a bare CR or LF anywhere is an error (lenient framing is how
// request smuggling between a proxy and a server starts). Chunk extensions and trailer fields are read and dropped.
class ChunkedDecoder {
  public:
    static constexpr std::size_t kMaxLine = 1024;     // a size line with its extensions
    static constexpr std::size_t kMaxTrailer = 8192;  // all trailer lines together

    struct Result {
        ParseStatus status = ParseStatus::need_more;
        std::size_t consumed = 0;  // bytes of the input used (the rest, a partial line, is offered again later)
        int error_status = 0;      // error: 400 malformed, 413 over max_body, 431 trailer too large
        std::string error;
    };

    explicit ChunkedDecoder(std::size_t max_body) : max_body_(max_body) {}
    // Appends chunk data to `body`. need_more: feed more (starting with the unconsumed bytes); ok: the body ended after
    // `consumed` bytes; error: the body is malformed and the connection cannot be trusted any more.
    Result feed(std::string_view bytes, std::string& body);

  private:
    enum class Phase : std::uint8_t { size, data, data_end, trailer, done, failed };
    std::size_t max_body_;
    Phase phase_ = Phase::size;
    std::uint64_t chunk_left_ = 0;
    std::uint64_t total_ = 0;
    std::size_t trailer_bytes_ = 0;
};

}  // namespace hydra::http
