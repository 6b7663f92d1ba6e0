// Cross-site WebSocket hijacking: with ws.allowed_origins set, a page on another origin cannot open a WebSocket from
// the victim's browser (HTTP 403 before the upgrade); clients that send no Origin (not browsers) are not affected.
// Against the real binary.
#include <boost/test/unit_test.hpp>

#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http_raw.h"
#include "support/process.h"

using hydra::WsClient;
using hydra::WsHandshakeError;
using namespace std::chrono_literals;

namespace {

// The HTTP status of an upgrade to "/" with these headers: 101 when it succeeded.
int upgrade_status(test::Host& host, std::map<std::string, std::string> headers) {
    try {
        WsClient c = WsClient::connect("127.0.0.1", host.ws_port, "/", headers);
        test::login(c, "alice", "alice-pw");  // and the connection works
        return 101;
    } catch (const WsHandshakeError& e) {
        if (e.status() == 403) BOOST_CHECK_NE(e.body().find("origin not allowed"), std::string::npos);
        return e.status();
    }
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_origin)

BOOST_AUTO_TEST_CASE(an_upgrade_from_an_origin_not_listed_is_403) {
    test::Host host({"--set", R"(ws.allowed_origins=["https://app.example.com","https://*.example.org"])"});
    BOOST_CHECK_EQUAL(upgrade_status(host, {{"Origin", "https://app.example.com"}}), 101);
    BOOST_CHECK_EQUAL(upgrade_status(host, {{"Origin", "https://chat.example.org"}}), 101);
    BOOST_CHECK_EQUAL(upgrade_status(host, {}), 101);  // not a browser
    BOOST_CHECK_EQUAL(upgrade_status(host, {{"Origin", "http://evil.example"}}), 403);
    BOOST_CHECK_EQUAL(upgrade_status(host, {{"Origin", "http://app.example.com"}}), 403);  // another scheme
    BOOST_CHECK_EQUAL(upgrade_status(host, {{"Origin", "https://example.org"}}), 403);
    BOOST_CHECK_EQUAL(upgrade_status(host, {{"Origin", "https://app.example.com.evil.example"}}), 403);
    BOOST_CHECK_EQUAL(upgrade_status(host, {{"Origin", "null"}}), 403);  // sandboxed frames, file:// pages
}

BOOST_AUTO_TEST_CASE(two_origin_headers_are_403_even_if_one_is_listed) {
    test::Host host({"--set", R"(ws.allowed_origins=["https://app.example.com"])"});
    test::RawHttp c("127.0.0.1:" + std::to_string(host.ws_port));
    c.send(
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: https://app.example.com\r\nOrigin: http://evil.example\r\n\r\n");
    BOOST_CHECK_EQUAL(test::status_of(c.read_responses(1)), 403);
}

BOOST_AUTO_TEST_CASE(without_a_list_every_origin_is_accepted) {
    test::Host host;  // dev: no check
    BOOST_CHECK_EQUAL(upgrade_status(host, {{"Origin", "http://evil.example"}}), 101);
}

BOOST_AUTO_TEST_CASE(a_malformed_origin_pattern_stops_the_start_naming_the_key) {
    test::ChildProcess p({HYDRA_BINARY, "conf", "check", "--set", R"(ws.allowed_origins=["app.example.com"])"},
                         std::string(HYDRA_SOURCE_DIR));
    BOOST_CHECK_EQUAL(p.wait(30s).value_or(-1), 2);
    BOOST_CHECK_NE(p.err().find("ws.allowed_origins[0]"), std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
