// common/http: the HTTP/1.1 basics shared by the API server and the WebSocket handshake.
#include <boost/test/unit_test.hpp>

#include <string>

#include "common/http.h"

using namespace hydra::http;

BOOST_AUTO_TEST_SUITE(http_basics)

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
    BOOST_REQUIRE(h.status == ParseStatus::Ok);
    BOOST_CHECK_EQUAL(h.start_line, "GET / HTTP/1.1");
    BOOST_CHECK_EQUAL(h.consumed, 60u);
    BOOST_CHECK(has_token(*find_header(h.headers, "connection"), "upgrade"));
    BOOST_CHECK(!has_token(*find_header(h.headers, "Connection"), "close"));
    BOOST_CHECK_EQUAL(count_headers(h.headers, "HOST"), 1u);

    BOOST_CHECK(parse_head("GET / HTTP/1.1\r\nHost: x\r\n", 1024).status == ParseStatus::NeedMore);
    Head big = parse_head(std::string(2048, 'a'), 1024);
    BOOST_CHECK(big.status == ParseStatus::Error && big.too_large);
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

BOOST_AUTO_TEST_SUITE_END()
