// WebSocket opening handshake: the RFC 6455 section 4 checks over the HTTP/1.1 head parser of http/head.
#include "ws/handshake.h"

#include <Poco/Base64Encoder.h>
#include <Poco/SHA1Engine.h>

#include <random>
#include <sstream>

namespace hydra::ws {
namespace {

using http::any_has_token;
using http::append_header;
using http::append_headers;
using http::count_headers;
using http::for_each_token;
using http::Head;
using http::http_version;
using http::is_token;
using http::parse_head;
using http::trim;

constexpr std::string_view kWebSocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool is_base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// Base64 of exactly 16 bytes: 22 alphabet characters then "==".
bool valid_client_key(std::string_view key) {
    if (key.size() != 24 || key.substr(22) != "==") return false;
    for (char c : key.substr(0, 22))
        if (!is_base64_char(c)) return false;
    return true;
}

UpgradeParse request_error(int status, std::string reason, HeaderFields response_headers = {}) {
    UpgradeParse r;
    r.status = ParseStatus::error;
    r.http_status = status;
    r.reason = std::move(reason);
    r.response_headers = std::move(response_headers);
    return r;
}

std::string base64(const void* data, std::size_t len) {
    std::ostringstream out;
    Poco::Base64Encoder encoder(out);
    static_cast<Poco::Base64EncoderIOS&>(encoder).rdbuf()->setLineLength(0);
    encoder.write(static_cast<const char*>(data), static_cast<std::streamsize>(len));
    encoder.close();
    return out.str();
}

}  // namespace

UpgradeParse parse_upgrade_request(std::string_view bytes, std::size_t max_header_bytes) {
    Head head = parse_head(bytes, max_header_bytes);
    if (head.status == ParseStatus::need_more) return UpgradeParse{};
    if (head.too_large) return request_error(431, "request header too large");
    if (head.status == ParseStatus::error) return request_error(400, head.error);

    // Request line: method SP target SP version.
    const std::string_view line = head.start_line;
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
        return request_error(400, "malformed request line");
    const std::string_view method = line.substr(0, sp1);
    const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const std::string_view version = line.substr(sp2 + 1);
    if (!is_token(method) || target.empty()) return request_error(400, "malformed request line");
    if (method != "GET") return request_error(405, "method not allowed", {{"Allow", "GET"}});
    const auto [major, minor] = http_version(version);
    if (major < 0) return request_error(400, "malformed request line");
    if (major != 1) return request_error(505, "HTTP version not supported");
    if (minor < 1) return request_error(400, "HTTP/1.1 required");
    if (target.front() != '/') return request_error(400, "invalid request target");

    const HeaderFields& headers = head.headers;
    if (!any_has_token(headers, "Upgrade", "websocket")) return request_error(400, "missing Upgrade: websocket");
    if (!any_has_token(headers, "Connection", "upgrade")) return request_error(400, "missing Connection: upgrade");
    const auto ws_version = find_header(headers, "Sec-WebSocket-Version");
    if (count_headers(headers, "Sec-WebSocket-Version") != 1 || *ws_version != "13")
        return request_error(426, "Sec-WebSocket-Version must be 13", {{"Sec-WebSocket-Version", "13"}});
    const auto key = find_header(headers, "Sec-WebSocket-Key");
    if (count_headers(headers, "Sec-WebSocket-Key") != 1 || !valid_client_key(*key))
        return request_error(400, "invalid Sec-WebSocket-Key");
    // RFC 6455 section 4.1 requires Host, and RFC 9112 a 400 for an HTTP/1.1 request without it.
    if (count_headers(headers, "Host") != 1) return request_error(400, "missing Host");

    UpgradeParse r;
    r.status = ParseStatus::ok;
    r.consumed = head.consumed;
    UpgradeRequest& req = r.request;
    req.method = std::string(method);
    const std::size_t q = target.find('?');
    req.path = std::string(target.substr(0, q));
    if (q != std::string_view::npos) req.query = std::string(target.substr(q + 1));
    req.key = std::string(*key);
    for (const auto& [n, v] : headers)
        if (iequals(n, "Sec-WebSocket-Protocol"))
            for_each_token(v, [&](std::string_view t) { req.protocols.emplace_back(t); });
    req.headers = std::move(head.headers);
    return r;
}

std::string accept_key(std::string_view client_key) {
    Poco::SHA1Engine sha1;
    sha1.update(client_key.data(), client_key.size());
    sha1.update(kWebSocketGuid.data(), kWebSocketGuid.size());
    const Poco::DigestEngine::Digest& digest = sha1.digest();
    return base64(digest.data(), digest.size());
}

std::string handshake_response(std::string_view accept, const HeaderFields& extra_headers) {
    std::string out = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    append_header(out, "Sec-WebSocket-Accept", accept);
    append_headers(out, extra_headers);
    out += "\r\n";
    return out;
}

std::string http_error_response(int status, std::string_view reason, const HeaderFields& extra_headers) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " ";
    out += http_status_text(status);
    out += "\r\nContent-Type: text/plain; charset=utf-8\r\n";
    append_header(out, "Content-Length", std::to_string(reason.size() + 1));
    out += "Connection: close\r\n";
    append_headers(out, extra_headers);
    out += "\r\n";
    out += reason;
    out += '\n';
    return out;
}

// ---- Client side ----

namespace {

// A fresh Sec-WebSocket-Key.
std::string make_client_key() {
    thread_local std::random_device rd;
    std::uint8_t bytes[16];
    for (std::size_t i = 0; i < sizeof bytes; i += 4) {
        const std::uint32_t r = rd();
        for (std::size_t j = 0; j < 4; ++j) bytes[i + j] = static_cast<std::uint8_t>(r >> (8 * j));
    }
    return base64(bytes, sizeof bytes);
}

std::string build_upgrade_request(std::string_view host, std::string_view target, std::string_view key,
                                  const HeaderFields& extra_headers) {
    std::string out = "GET ";
    for (char c : target.empty() ? std::string_view("/") : target)
        if (c != '\r' && c != '\n' && c != ' ') out += c;
    out += " HTTP/1.1\r\n";
    append_header(out, "Host", host);
    out += "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    append_header(out, "Sec-WebSocket-Key", key);
    out += "Sec-WebSocket-Version: 13\r\n";
    append_headers(out, extra_headers);
    out += "\r\n";
    return out;
}

}  // namespace

ClientUpgrade make_upgrade_request(std::string_view host, std::string_view target, const HeaderFields& extra_headers) {
    ClientUpgrade r;
    r.key = make_client_key();
    r.request = build_upgrade_request(host, target, r.key, extra_headers);
    return r;
}

UpgradeResponse parse_upgrade_response(std::string_view bytes, std::string_view client_key,
                                       std::size_t max_header_bytes) {
    UpgradeResponse r;
    Head head = parse_head(bytes, max_header_bytes);
    if (head.status == ParseStatus::need_more) return r;
    r.status = ParseStatus::error;
    if (head.too_large) {
        r.error = "response header too large";
        return r;
    }
    if (head.status == ParseStatus::error) {
        r.error = head.error;
        return r;
    }
    // Status line: HTTP/1.x SP 3DIGIT SP reason-phrase (the phrase may be empty or contain spaces).
    const std::string_view line = head.start_line;
    const auto [major, minor] = http_version(line.substr(0, 8));
    if (major != 1 || line.size() < 12 || line[8] != ' ' || (line.size() > 12 && line[12] != ' ')) {
        r.error = "malformed status line";
        return r;
    }
    (void)minor;
    int status = 0;
    for (std::size_t i = 9; i < 12; ++i) {
        if (line[i] < '0' || line[i] > '9') {
            r.error = "malformed status line";
            return r;
        }
        status = status * 10 + (line[i] - '0');
    }
    r.http_status = status;
    r.headers = std::move(head.headers);
    if (status != 101) {
        r.error = "unexpected status: " + std::string(line.substr(9));
        return r;
    }
    if (!any_has_token(r.headers, "Upgrade", "websocket")) {
        r.error = "missing Upgrade: websocket";
        return r;
    }
    if (!any_has_token(r.headers, "Connection", "upgrade")) {
        r.error = "missing Connection: upgrade";
        return r;
    }
    const auto accept = r.header("Sec-WebSocket-Accept");
    if (!accept || count_headers(r.headers, "Sec-WebSocket-Accept") != 1 || *accept != accept_key(client_key)) {
        r.error = "invalid Sec-WebSocket-Accept";
        return r;
    }
    // We never offer extensions, and the server must not use one that was not offered (RFC 6455 section 4.1).
    for (const auto& [n, v] : r.headers) {
        if (iequals(n, "Sec-WebSocket-Extensions") && !trim(v).empty()) {
            r.error = "unrequested Sec-WebSocket-Extensions";
            return r;
        }
    }
    r.status = ParseStatus::ok;
    r.consumed = head.consumed;
    return r;
}

}  // namespace hydra::ws
