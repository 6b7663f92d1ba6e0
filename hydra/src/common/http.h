// HTTP/1.1 message basics shared by the API server and the WebSocket handshake: a strict head parser (RFC 9112),
// the chunked body decoder, header lookups, tokens, percent-decoding and status texts. Pure functions over bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace hydra::http {

// Header fields in the order received (names as sent) or to be sent.
using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

enum class ParseStatus : std::uint8_t { NeedMore, Ok, Error };

// ASCII case-insensitive equality, as used for header names and tokens.
bool iequals(std::string_view a, std::string_view b);
// RFC 9110 token (method, header name).
bool is_token(std::string_view s);
// Without leading and trailing spaces and tabs.
std::string_view trim(std::string_view s);
// Whether a comma-separated header value ("keep-alive, Upgrade") contains `token`, case-insensitively.
bool has_token(std::string_view value, std::string_view token);
// Any header named `name` (fields may be repeated, meaning one comma-joined list) contains `token`.
bool any_has_token(const HttpHeaders& headers, std::string_view name, std::string_view token);
// First header named `name` (case-insensitive).
std::optional<std::string_view> find_header(const HttpHeaders& headers, std::string_view name);
// The credentials of `Authorization: <scheme> <credentials>` when the scheme is `scheme` (any case; RFC 9110 11.4),
// without the blanks around them; nullopt when there is no such header or another scheme.
std::optional<std::string_view> authorization(const HttpHeaders& headers, std::string_view scheme);
std::size_t count_headers(const HttpHeaders& headers, std::string_view name);

// Calls f(token) for each non-empty element of a comma-separated list.
template <class F>
void for_each_token(std::string_view value, F&& f) {
    while (true) {
        const std::size_t comma = value.find(',');
        const std::string_view item = trim(value.substr(0, comma));
        if (!item.empty()) f(item);
        if (comma == std::string_view::npos) return;
        value.remove_prefix(comma + 1);
    }
}

// Appends "name: value\r\n", dropping CR/LF so a caller-provided value cannot start a new header line.
void append_header(std::string& out, std::string_view name, std::string_view value);
void append_headers(std::string& out, const HttpHeaders& headers);

// A received head: the start line and the header fields, before any request or upgrade semantics.
struct Head {
    ParseStatus status = ParseStatus::NeedMore;
    std::size_t consumed = 0;  // Ok: length of the head including the empty line
    std::string_view start_line;
    HttpHeaders headers;
    std::string error;  // Error: which syntax rule was broken (see too_large for the size)
    bool too_large = false;
};
// Parses a head from the start of `bytes` (everything read so far). NeedMore until the empty line arrives; Error with
// too_large once max_bytes are here without it. Rejects obsolete line folding and control characters.
Head parse_head(std::string_view bytes, std::size_t max_bytes);

// A chunked request body (RFC 9112 section 7.1), fed the bytes as they arrive; strict: the size is 1*HEXDIG with
// nothing around it, every line ends in CRLF, and a bare CR or LF anywhere is an error (lenient framing is how
// request smuggling between a proxy and a server starts). Chunk extensions and trailer fields are read and dropped.
class ChunkedDecoder {
  public:
    static constexpr std::size_t kMaxLine = 1024;     // a size line with its extensions
    static constexpr std::size_t kMaxTrailer = 8192;  // all trailer lines together

    struct Result {
        ParseStatus status = ParseStatus::NeedMore;
        std::size_t consumed = 0;  // bytes of the input used (the rest, a partial line, is offered again later)
        int error_status = 0;      // Error: 400 malformed, 413 over max_body, 431 trailer too large
        std::string error;
    };

    explicit ChunkedDecoder(std::size_t max_body) : max_body_(max_body) {}
    // Appends chunk data to `body`. NeedMore: feed more (starting with the unconsumed bytes); Ok: the body ended after
    // `consumed` bytes; Error: the body is malformed and the connection cannot be trusted any more.
    Result feed(std::string_view bytes, std::string& body);

  private:
    enum class Phase : std::uint8_t { size, data, data_end, trailer, done, failed };
    std::size_t max_body_;
    Phase phase_ = Phase::size;
    std::uint64_t chunk_left_ = 0;
    std::uint64_t total_ = 0;
    std::size_t trailer_bytes_ = 0;
};

// "HTTP/<d>.<d>" → {major, minor}; {-1, -1} if malformed.
std::pair<int, int> http_version(std::string_view v);

// "%41b+c" → "Ab c" (with plus_as_space; a form) or "Ab+c" (a path). False on a malformed escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_as_space);

// The standard reason phrase ("Upgrade Required"), or "Error" / "OK" for codes not listed.
std::string_view http_status_text(int status);

}  // namespace hydra::http
