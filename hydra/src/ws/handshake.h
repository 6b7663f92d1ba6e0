// WebSocket opening handshake (RFC 6455 section 4): parsing and validating the client's HTTP/1.1 Upgrade request and
// building the server's answers, plus the client-side counterparts for hydra's own WebSocket client.
// Pure functions over bytes; the event loop feeds whatever it has read so far.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "http/head.h"

namespace hydra::ws {

using http::find_header;
using http::has_token;
using http::http_status_text;
using http::iequals;
using http::ParseStatus;

// Request or response header blocks larger than this are refused (431) rather than buffered.
inline constexpr std::size_t kMaxHandshakeBytes = 8192;

struct UpgradeRequest {
    std::string method;
    std::string path;   // the request target up to '?', as sent (not percent-decoded)
    std::string query;  // after '?' (without it); "" if none
    HeaderFields headers;
    std::string key;                     // Sec-WebSocket-Key
    std::vector<std::string> protocols;  // Sec-WebSocket-Protocol tokens, in the client's order of preference

    std::optional<std::string_view> header(std::string_view name) const { return find_header(headers, name); }
};

struct UpgradeParse {
    ParseStatus status = ParseStatus::need_more;
    // ok: length of the header block including the empty line. Bytes after it already belong to the WebSocket.
    std::size_t consumed = 0;
    UpgradeRequest request;  // ok only
    // error: the status to answer with, a short reason ("missing Upgrade: websocket"), and headers the answer must
    // carry (426: Sec-WebSocket-Version: 13, 405: Allow: GET). Pass them to http_error_response().
    int http_status = 0;
    std::string reason;
    HeaderFields response_headers;
};

// Parses the client's opening handshake from the start of `bytes` (everything read so far). need_more until the
// empty line arrives; 431 once the header block exceeds max_header_bytes. Error statuses: 405 (not GET), 400
// (malformed, HTTP/1.0, bad Upgrade/Connection/Sec-WebSocket-Key, missing Host), 505 (HTTP/2+), 426
// (Sec-WebSocket-Version other than 13).
UpgradeParse parse_upgrade_request(std::string_view bytes, std::size_t max_header_bytes = kMaxHandshakeBytes);

// Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")).
std::string accept_key(std::string_view client_key);

// "HTTP/1.1 101 Switching Protocols" with Upgrade, Connection and Sec-WebSocket-Accept, then extra_headers
// (e.g. Sec-WebSocket-Protocol). CR/LF in extra headers are dropped so they cannot inject lines.
std::string handshake_response(std::string_view accept, const HeaderFields& extra_headers = {});
// An error answer with a text/plain body holding the reason, and Connection: close.
std::string http_error_response(int status, std::string_view reason, const HeaderFields& extra_headers = {});

// ---- Client side ----

struct ClientUpgrade {
    std::string request;
    std::string key;  // keep it to check the server's answer
};
// The GET request for ws://host/target with a fresh random key (base64 of 16 random bytes).
ClientUpgrade make_upgrade_request(std::string_view host, std::string_view target,
                                   const HeaderFields& extra_headers = {});

struct UpgradeResponse {
    ParseStatus status = ParseStatus::need_more;
    std::size_t consumed = 0;  // ok: bytes after this are already frames
    int http_status = 0;       // the server's status code, when the status line could be read
    std::string error;         // error: what was wrong
    HeaderFields headers;

    std::optional<std::string_view> header(std::string_view name) const { return find_header(headers, name); }
};

// Validates the server's answer to a request sent with `client_key`: status 101, Upgrade: websocket, Connection:
// upgrade, the right Sec-WebSocket-Accept, and no extension (we never offer any).
UpgradeResponse parse_upgrade_response(std::string_view bytes, std::string_view client_key,
                                       std::size_t max_header_bytes = kMaxHandshakeBytes);

}  // namespace hydra::ws
