#include "http/request.h"

#include <algorithm>
#include <charconv>
#include <optional>
#include <string_view>

#include "http/target.h"

namespace hydra::http {
namespace {

RequestHead refused(RequestHead& r, int status, std::string why) {
    r.error_status = status;
    r.error = std::move(why);
    return std::move(r);
}

}  // namespace

RequestHead parse_request(const Head& head, std::size_t max_body) {
    RequestHead r;

    // Request line: method SP target SP version.
    const std::string_view line = head.start_line;
    const std::size_t sp1 = line.find(' ');
    const std::size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
        return refused(r, 400, "malformed request line");
    const std::string_view method = line.substr(0, sp1);
    std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const auto [major, minor] = http_version(line.substr(sp2 + 1));
    const bool upper = !method.empty() && method.size() <= 16 &&
                       std::all_of(method.begin(), method.end(), [](char ch) { return ch >= 'A' && ch <= 'Z'; });
    if (!upper || target.empty() || major < 0) return refused(r, 400, "malformed request line");
    if (major != 1) return refused(r, 505, "HTTP version not supported");
    // Absolute form (a proxy's "http://host/path"): the path is what follows the authority.
    if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0) {
        const std::size_t slash = target.find('/', target.find("//") + 2);
        target = slash == std::string_view::npos ? std::string_view("/") : target.substr(slash);
    }
    if (target.front() != '/') return refused(r, 400, "invalid request target");
    if (minor >= 1 && count_headers(head.headers, "Host") != 1) return refused(r, 400, "missing or repeated Host");

    r.method = std::string(method);
    r.target = std::string(target);
    r.minor_version = minor;
    const std::size_t q = target.find('?');
    if (q != std::string_view::npos) r.query = std::string(target.substr(q + 1));
    if (!percent_decode(target.substr(0, q), r.path, false))
        return refused(r, 400, "malformed request target: bad percent-encoding");

    // Framing (RFC 9112 section 6): chunked, or Content-Length, or no body.
    const std::optional<std::string_view> te = find_header(head.headers, "Transfer-Encoding");
    const std::optional<std::string_view> cl = find_header(head.headers, "Content-Length");
    if (te) {
        // RFC 9112 section 6.1: the framing of such a message is faulty.
        if (minor == 0) return refused(r, 400, "Transfer-Encoding in an HTTP/1.0 request");
        if (cl) return refused(r, 400, "both Transfer-Encoding and Content-Length");
        if (count_headers(head.headers, "Transfer-Encoding") != 1 || !iequals(trim(*te), "chunked"))
            return refused(r, 501, "unsupported Transfer-Encoding: " + std::string(*te));
        r.framing = RequestHead::Framing::chunked;
    } else if (cl) {
        for (const auto& [n, v] : head.headers)
            if (iequals(n, "Content-Length") && v != *cl) return refused(r, 400, "conflicting Content-Length headers");
        auto parsed = std::from_chars(cl->data(), cl->data() + cl->size(), r.content_length);
        if (cl->empty() || parsed.ec != std::errc() || parsed.ptr != cl->data() + cl->size())
            return refused(r, 400, "malformed Content-Length");
        if (r.content_length > max_body)
            return refused(r, 413, "request body exceeds " + std::to_string(max_body) + " bytes");
        if (r.content_length > 0) r.framing = RequestHead::Framing::length;
    }

    const std::optional<std::string_view> connection = find_header(head.headers, "Connection");
    r.keep_alive = minor >= 1 ? !(connection && has_token(*connection, "close"))
                              : (connection && has_token(*connection, "keep-alive"));
    r.expect_continue =
        minor >= 1 && r.framing != RequestHead::Framing::none && any_has_token(head.headers, "Expect", "100-continue");
    return r;
}

}  // namespace hydra::http
