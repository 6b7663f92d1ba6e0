// http/: the HTTP/1.1 basics shared by the API server and the WebSocket handshake.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "http/chunked.h"
#include "http/head.h"
#include "http/request.h"
#include "http/target.h"

using namespace hydra::http;
using hydra::HeaderFields;

BOOST_AUTO_TEST_SUITE(http)

BOOST_AUTO_TEST_CASE(percent_decoding) {
    std::string out;
    BOOST_CHECK(percent_decode("%41b+c%2f", out, false));
    BOOST_CHECK_EQUAL(out, "Ab+c/");
    BOOST_CHECK(percent_decode("a+b%20c", out, true));
    BOOST_CHECK_EQUAL(out, "a b c");
    BOOST_CHECK(percent_decode("", out, true));
    BOOST_CHECK_EQUAL(out, "");
    BOOST_CHECK(percent_decode("%e4%bd%a0", out, false));  // bytes pass through: UTF-8 is the caller's business
    BOOST_CHECK_EQUAL(out, "\xe4\xbd\xa0");
    for (const char* bad : {"%", "%4", "a%zz", "%g1", "x%2"}) BOOST_CHECK_MESSAGE(!percent_decode(bad, out, true), bad);
}

BOOST_AUTO_TEST_CASE(heads_tokens_and_versions) {
    Head h = parse_head("GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n\r\nrest", 1024);
    BOOST_REQUIRE(h.status == ParseStatus::ok);
    BOOST_CHECK_EQUAL(h.start_line, "GET / HTTP/1.1");
    BOOST_CHECK_EQUAL(h.consumed, 60u);
    BOOST_CHECK(has_token(*find_header(h.headers, "connection"), "upgrade"));
    BOOST_CHECK(!has_token(*find_header(h.headers, "Connection"), "close"));
    BOOST_CHECK_EQUAL(count_headers(h.headers, "HOST"), 1u);

    BOOST_CHECK(parse_head("GET / HTTP/1.1\r\nHost: x\r\n", 1024).status == ParseStatus::need_more);
    Head big = parse_head(std::string(2048, 'a'), 1024);
    BOOST_CHECK(big.status == ParseStatus::error && big.too_large);
    BOOST_CHECK_EQUAL(parse_head("GET / HTTP/1.1\r\n folded\r\n\r\n", 1024).error, "obsolete header line folding");
    BOOST_CHECK_EQUAL(parse_head("GET / HTTP/1.1\r\nA: b\x01\r\n\r\n", 1024).error,
                      "invalid character in header value");

    BOOST_CHECK(http_version("HTTP/1.1") == std::make_pair(1, 1));
    BOOST_CHECK(http_version("HTTP/1.0") == std::make_pair(1, 0));
    BOOST_CHECK(http_version("HTTP/11") == std::make_pair(-1, -1));
    BOOST_CHECK_EQUAL(http_status_text(413), "Content Too Large");
    BOOST_CHECK_EQUAL(http_status_text(299), "OK");
    BOOST_CHECK_EQUAL(http_status_text(599), "Error");

    std::string out;
    append_header(out, "X-A", "evil\r\nSet-Cookie: x");
    BOOST_CHECK_EQUAL(out, "X-A: evilSet-Cookie: x\r\n");  // CR/LF dropped: no header injection
}

namespace {

// Feeds `bytes` to a fresh decoder in pieces of `step` bytes, the way a connection would (unconsumed bytes are
// offered again with the next piece). Returns the final result; `body` gets the data.
ChunkedDecoder::Result decode(std::string_view bytes, std::string& body, std::size_t step = 0,
                              std::size_t max_body = 1 << 20) {
    ChunkedDecoder d(max_body);
    body.clear();
    std::string pending;
    std::size_t at = 0;
    ChunkedDecoder::Result r;
    do {
        const std::size_t n = step == 0 ? bytes.size() - at : std::min(step, bytes.size() - at);
        pending.append(bytes.substr(at, n));
        at += n;
        r = d.feed(pending, body);
        pending.erase(0, r.consumed);
    } while (r.status == ParseStatus::need_more && at < bytes.size());
    r.consumed = at - pending.size();  // of the whole input
    return r;
}

}  // namespace

BOOST_AUTO_TEST_CASE(chunked_bodies_in_any_pieces) {
    const std::string wire =
        "4;ext=1;q=\"a b\"\r\n{\"a\"\r\n3\r\n:42\r\nA\r\n0123456789\r\n1\r\n}\r\n0\r\nX-T: t\r\n\r\nNEXT";
    for (std::size_t step : {0, 1, 2, 3, 7}) {
        std::string body;
        auto r = decode(wire, body, step);
        BOOST_REQUIRE_MESSAGE(r.status == ParseStatus::ok, "step " << step << ": " << r.error);
        BOOST_CHECK_EQUAL(body, "{\"a\":420123456789}");
        BOOST_CHECK_EQUAL(r.consumed, wire.size() - 4);  // the next request's bytes are left alone
    }
    std::string body;
    BOOST_CHECK(decode("0\r\n\r\n", body).status == ParseStatus::ok);
    BOOST_CHECK(body.empty());
    BOOST_CHECK(decode("5\r\nhel", body).status == ParseStatus::need_more);
    BOOST_CHECK(decode("5\r", body).status == ParseStatus::need_more);
    BOOST_CHECK(decode("5\r\nhello\r", body).status == ParseStatus::need_more);
}

BOOST_AUTO_TEST_CASE(chunked_framing_is_strict) {
    struct Case {
        std::string wire;
        int status;
        std::string error;
    };
    const std::vector<Case> cases = {
        {" 5 \r\nhello\r\n0\r\n\r\n", 400, "malformed chunk size"},  // whitespace around the size
        {"5 \r\nhello\r\n0\r\n\r\n", 400, "malformed chunk size"},
        {"5\t;x\r\nhello\r\n0\r\n\r\n", 400, "malformed chunk size"},
        {"5;ext\nhello\r\n0\r\n\r\n", 400, "bare CR or LF"},     // a bare LF ends the size line
        {"5;a\rb\r\nhello\r\n0\r\n\r\n", 400, "bare CR or LF"},  // a CR inside the extension
        {"5\nhello\r\n0\r\n\r\n", 400, "bare CR or LF"},
        {"zz\r\n", 400, "malformed chunk size"},
        {"\r\n", 400, "malformed chunk size"},
        {"-5\r\nhello\r\n", 400, "malformed chunk size"},
        {"0x5\r\nhello\r\n", 400, "malformed chunk size"},
        {"5;\x01\r\nhello\r\n", 400, "malformed chunk extension"},
        {"5\r\nhelloXX0\r\n\r\n", 400, "missing CRLF after the data"},
        {"5\r\nhello\n0\r\n\r\n", 400, "missing CRLF after the data"},
        {"10000000000000000\r\n", 400, "too large"},  // 2^64: would overflow
        {"0\r\nbad trailer\r\n\r\n", 400, "malformed trailer field"},
        {"0\r\nX: a\nb\r\n\r\n", 400, "bare CR or LF"},
        {"0\r\n\n", 400, "bare CR or LF"},
        {std::string(2000, '1'), 400, "line too long"},
        {"0\r\n" + std::string(9000, 'a'), 431, "trailer fields too large"},
        {"0\r\nX: " + std::string(9000, 'a') + "\r\n\r\n", 431, "trailer fields too large"},
        {"65\r\n", 413, "request body exceeds 100 bytes"},
        {"40\r\n" + std::string(64, 'a') + "\r\n40\r\n", 413, "request body exceeds 100 bytes"},
    };
    for (const auto& k : cases) {
        for (std::size_t step : {0, 1}) {
            std::string body;
            auto r = decode(k.wire, body, step, 100);
            BOOST_CHECK_MESSAGE(r.status == ParseStatus::error, k.wire.substr(0, 40)
                                                                    << " accepted (step " << step << ")");
            BOOST_CHECK_EQUAL(r.error_status, k.status);
            BOOST_CHECK_MESSAGE(r.error.find(k.error) != std::string::npos, k.wire.substr(0, 40) << " -> " << r.error);
        }
    }
    // Hex digits in either case, leading zeros, and exactly max_body are fine.
    std::string body;
    BOOST_CHECK(decode("000a\r\n0123456789\r\n0\r\n\r\n", body, 0, 10).status == ParseStatus::ok);
    BOOST_CHECK(decode("5A\r\n" + std::string(90, 'x') + "\r\n0\r\n\r\n", body, 0, 90).status == ParseStatus::ok);
}

BOOST_AUTO_TEST_CASE(authorization_credentials_of_one_scheme) {
    auto of = [](const std::string& value) -> std::optional<std::string> {
        const HeaderFields headers{{"authorization", value}};
        auto credentials = authorization(headers, "Bearer");
        return credentials ? std::optional<std::string>(*credentials) : std::nullopt;
    };
    BOOST_CHECK(of("Bearer abc.def") == std::optional<std::string>("abc.def"));
    BOOST_CHECK(of("bearer \t abc ") == std::optional<std::string>("abc"));
    BOOST_CHECK(!of("Bearerabc"));
    BOOST_CHECK(!of("Bearer"));
    BOOST_CHECK(!of("Basic abc"));
    BOOST_CHECK(!authorization({}, "Bearer"));
}

BOOST_AUTO_TEST_CASE(request_heads_their_target_framing_and_persistence) {
    auto request = [](const std::string& bytes, std::size_t max_body = 100) {
        Head head = parse_head(bytes, 4096);
        BOOST_REQUIRE(head.status == ParseStatus::ok);
        return parse_request(head, max_body);
    };
    RequestHead r = request(
        "POST http://example.com/a%20b?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        "Expect: 100-continue\r\n\r\n");
    BOOST_CHECK_EQUAL(r.error_status, 0);
    BOOST_CHECK_EQUAL(r.method, "POST");
    BOOST_CHECK_EQUAL(r.target, "/a%20b?x=1");  // the absolute form cut to its path and query
    BOOST_CHECK_EQUAL(r.path, "/a b");
    BOOST_CHECK_EQUAL(r.query, "x=1");
    BOOST_CHECK(r.framing == RequestHead::Framing::length);
    BOOST_CHECK_EQUAL(r.content_length, 5u);
    BOOST_CHECK(r.keep_alive && r.expect_continue);

    r = request("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    BOOST_CHECK(r.framing == RequestHead::Framing::chunked && !r.keep_alive && !r.expect_continue);
    r = request("GET / HTTP/1.0\r\n\r\n");  // HTTP/1.0: no Host needed, closes unless asked to keep alive
    BOOST_CHECK(r.error_status == 0 && r.minor_version == 0 && !r.keep_alive);
    BOOST_CHECK(request("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    r = request("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n");
    BOOST_CHECK(r.framing == RequestHead::Framing::none && !r.expect_continue);

    const std::vector<std::pair<std::string, int>> refused = {
        {"get / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
        {"GET x HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400},
        {"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", 413},
    };
    for (const auto& [bytes, status] : refused) BOOST_CHECK_MESSAGE(request(bytes).error_status == status, bytes);
}

BOOST_AUTO_TEST_SUITE_END()
