// A received HTTP/1.1 head (RFC 9112): the strict parser of the start line and header fields that the API server, the
// WebSocket handshake and the clients share. Pure functions over bytes, fuzzed (tests/fuzz/http_head_fuzz.cpp).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>

#include "http/message.h"

namespace hydra::http {

// A received head: the start line and the header fields, before any request or upgrade semantics.
struct Head {
    ParseStatus status = ParseStatus::need_more;
    std::size_t consumed = 0;  // ok: length of the head including the empty line
    std::string_view start_line;
    HeaderFields headers;
    std::string error;  // error: which syntax rule was broken (see too_large for the size)
    bool too_large = false;
};
// Parses a head from the start of `bytes` (everything read so far). need_more until the empty line arrives; error with
// too_large once max_bytes are here without it. Rejects obsolete line folding and control characters.
Head parse_head(std::string_view bytes, std::size_t max_bytes);

// "HTTP/<d>.<d>" → {major, minor}; {-1, -1} if malformed.
std::pair<int, int> http_version(std::string_view v);

}  // namespace hydra::http
