// What a server reads from a request head (RFC 9112): the request line, the target, Host, how the body is framed,
// whether the connection persists, Expect: 100-continue. Strict, because lenient framing is how request smuggling
// between a proxy and a server starts. Pure: the API server's connections feed it each head parse_head() returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "http/head.h"

namespace hydra::http {

struct RequestHead {
    enum class Framing : std::uint8_t { none, length, chunked };

    std::string method;
    std::string target;  // as sent (an absolute-form target cut to its path and query)
    std::string path;    // percent-decoded, without the query
    std::string query;   // raw, after '?' ("" if none)
    int minor_version = 1;
    Framing framing = Framing::none;
    std::uint64_t content_length = 0;  // Framing::length
    bool keep_alive = false;           // the client's wish: HTTP/1.1 unless "close", HTTP/1.0 only with "keep-alive"
    bool expect_continue = false;      // a body follows and the client waits for "100 Continue" before sending it
    // Nonzero when the head is refused: 400 (malformed), 413 (Content-Length over max_body), 501 (a transfer coding
    // other than chunked), 505 (not HTTP/1.x); `error` says why.
    int error_status = 0;
    std::string error;
};

// Reads an ok head (its header fields stay where they are: the caller takes them). A declared Content-Length over
// `max_body` is refused before any of the body is read.
RequestHead parse_request(const Head& head, std::size_t max_body);

}  // namespace hydra::http
