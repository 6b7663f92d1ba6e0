// Lenient HTTP/1.1 framing is how request smuggling works: a proxy and the server disagree on where a body ends,
// and the rest of the body becomes a second request. The real binary must refuse each ambiguous framing with 400 and
// close, so nothing after it is ever taken for a request.
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "support/host.h"
#include "support/http_raw.h"

BOOST_AUTO_TEST_SUITE(http_framing)

BOOST_AUTO_TEST_CASE(ambiguous_chunked_framing_is_refused_and_closes) {
    test::Host host;
    struct Case {
        std::string name;
        std::string bytes;
        std::string reason;
    };
    // Each request is followed by a smuggled GET that must never be answered.
    const std::string smuggled = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    const std::string post = "POST /msg/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n";
    const std::vector<Case> cases = {
        {"spaces around the chunk size",
         post + "Transfer-Encoding: chunked\r\n\r\n 5 \r\n{\"a\":\r\n0\r\n\r\n" + smuggled, "malformed chunk size"},
        {"space after the chunk size", post + "Transfer-Encoding: chunked\r\n\r\n5 \r\n{\"a\":\r\n0\r\n\r\n" + smuggled,
         "malformed chunk size"},
        {"bare LF inside a chunk extension",
         post + "Transfer-Encoding: chunked\r\n\r\n5;ext\nxx\r\n{\"a\":\r\n0\r\n\r\n" + smuggled, "bare CR or LF"},
        {"bare LF after the chunk size", post + "Transfer-Encoding: chunked\r\n\r\n5\n{\"a\":\r\n0\r\n\r\n" + smuggled,
         "bare CR or LF"},
        {"chunked on HTTP/1.0",
         "POST /msg/broadcast HTTP/1.0\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
         "5\r\n{\"a\":\r\n0\r\n\r\n" +
             smuggled,
         "Transfer-Encoding in an HTTP/1.0 request"},
        {"bare LF in a trailer", post + "Transfer-Encoding: chunked\r\n\r\n0\r\nX: a\nGET /healthz HTTP/1.1\r\n\r\n",
         "bare CR or LF"},
    };
    for (const auto& k : cases) {
        test::RawHttp c(host.api);
        BOOST_REQUIRE(c.connected());
        c.send(k.bytes);
        const std::string& in = c.read_all();
        BOOST_CHECK_MESSAGE(test::status_of(in) == 400, k.name << " -> " << in.substr(0, 200));
        BOOST_CHECK_MESSAGE(in.find(k.reason) != std::string::npos, k.name << " -> " << in.substr(0, 300));
        BOOST_CHECK_MESSAGE(in.find("Connection: close\r\n") != std::string::npos, k.name);
        BOOST_CHECK_MESSAGE(c.closed(), k.name << ": connection left open");
        BOOST_CHECK_MESSAGE(test::RawHttp::count_responses(in) == 1, k.name << ": the smuggled request was answered");
    }
    // Strict is not broken: a well-formed chunked body with an extension and a trailer is still read.
    test::RawHttp ok(host.api);
    ok.send(
        post +
        "Transfer-Encoding: chunked\r\n\r\n5;ext=\"a b\"\r\n{\"msg\r\n5\r\n\":\"a\"\r\n1\r\n}\r\n0\r\nX-T: t\r\n\r\n");
    const std::string& in = ok.read_responses(1);
    BOOST_CHECK_MESSAGE(test::status_of(in) == 200, in);
    BOOST_CHECK(!ok.closed());
}

BOOST_AUTO_TEST_SUITE_END()
