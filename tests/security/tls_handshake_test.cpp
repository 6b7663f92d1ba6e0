// Hostile TLS clients against the real binary: stalled handshakes are dropped after *.tls.handshake_timeout_ms and
// cost the others nothing; garbage, plain HTTP and old protocol versions end in one log line, not an answer.
#include <random>

#include <boost/test/unit_test.hpp>

#include "support/host.h"
#include "support/http_raw.h"
#include "support/tls.h"
#include "support/wait.h"

using namespace std::chrono_literals;

namespace {

std::string ws_address(const test::Host& host) { return "127.0.0.1:" + std::to_string(host.ws_port); }

// An https GET of `path` with curl, trusting `ca`: curl's exit status.
int curl_get(const test::Certificate& ca, const std::string& address, const std::string& path,
             const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"/usr/bin/curl", "-sS", "-o",       "/dev/null",
                                     "--max-time",    "30",  "--cacert", ca.cert};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("https://localhost:" + address.substr(address.rfind(':') + 1) + path);
    test::ChildProcess p(args);
    return p.wait(60s).value_or(-1);
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
    return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(tls_handshake)

BOOST_AUTO_TEST_CASE(a_client_that_stalls_mid_handshake_is_dropped_after_the_timeout_and_others_are_served) {
    const test::Certificate cert = test::make_certificate();
    auto args = test::tls_settings(cert, {"api", "ws"});
    // Nothing else would close them within the test: the idle and upgrade timeouts are a minute.
    args.insert(args.end(), {"--set", "api.tls.handshake_timeout_ms=500", "--set", "ws.tls.handshake_timeout_ms=500",
                             "--set", "api.keep_alive_timeout_ms=60000", "--set", "api.header_timeout_ms=60000",
                             "--set", "ws.handshake_timeout_ms=60000"});
    test::Host host(args);
    // Silent after connecting, and silent after the first bytes of a ClientHello, on both listeners.
    std::vector<std::unique_ptr<test::RawHttp>> stalled;
    for (const std::string& address : {host.api, ws_address(host)}) {
        stalled.push_back(std::make_unique<test::RawHttp>(address));
        stalled.push_back(std::make_unique<test::RawHttp>(address));
        stalled.back()->send(std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11));
    }
    for (auto& s : stalled) BOOST_REQUIRE(s->connected());
    // While they stall, others complete their handshakes and are served.
    BOOST_CHECK_EQUAL(curl_get(cert, host.api, "/no-such-route"), 0);
    // Each stalled one is closed by the server (well within the 20 s we wait; the timeout is 0.5 s).
    for (auto& s : stalled) {
        const std::string& got = s->read_all(20s);
        BOOST_CHECK(s->closed());
        BOOST_CHECK(got.find("HTTP/") == std::string::npos);
    }
}

BOOST_AUTO_TEST_CASE(plain_http_and_garbage_get_no_answer_and_one_log_line_each) {
    const test::Certificate cert = test::make_certificate();
    auto args = test::tls_settings(cert, {"api", "ws"});
    args.insert(args.end(), {"--set", "log.level=info"});
    test::Host host(args);
    std::mt19937 rng(7);
    std::string noise(64 * 1024, '\0');
    for (char& ch : noise) ch = static_cast<char>(rng());
    const std::vector<std::string> attempts = {
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        noise,
        // A ClientHello record header announcing 16 KiB, then garbage.
        std::string("\x16\x03\x01\x40\x00", 5) + noise.substr(0, 16384),
    };
    std::size_t expected = 0;
    for (const std::string& address : {host.api, ws_address(host)}) {
        for (const auto& bytes : attempts) {
            test::RawHttp c(address);
            BOOST_REQUIRE(c.connected());
            c.send_some(bytes);
            const std::string& got = c.read_all(20s);
            BOOST_CHECK(c.closed());
            BOOST_CHECK(got.find("HTTP/") == std::string::npos);  // no error page in plain text
            ++expected;
        }
    }
    BOOST_REQUIRE(test::wait_until(
        [&] { return count(host.process->err(), "TLS handshake with 127.0.0.1 failed") >= expected; }));
    BOOST_CHECK_EQUAL(count(host.process->err(), "TLS handshake with 127.0.0.1 failed"), expected);
    // And the server still serves.
    BOOST_CHECK_EQUAL(curl_get(cert, host.api, "/no-such-route"), 0);
}

BOOST_AUTO_TEST_CASE(tls_1_1_is_refused_and_tls_1_2_and_1_3_are_accepted) {
    const test::Certificate cert = test::make_certificate();
    auto args = test::tls_settings(cert, {"api"});
    args.insert(args.end(), {"--set", "log.level=info"});
    test::Host host(args);
    // (SECLEVEL=0: the client is willing, so that a refusal is the server's.)
    test::ChildProcess old(
        {"/bin/sh", "-c",
         "/usr/bin/openssl s_client -connect " + host.api + " -tls1_1 -cipher DEFAULT@SECLEVEL=0 </dev/null 2>&1"});
    old.wait(60s);
    BOOST_CHECK_MESSAGE(old.out().find("Cipher is (NONE)") != std::string::npos ||
                            old.out().find("alert protocol version") != std::string::npos,
                        old.out());
    BOOST_CHECK(host.process->wait_for_stderr("TLS handshake with 127.0.0.1 failed: unsupported protocol", 20s));
    BOOST_CHECK_EQUAL(curl_get(cert, host.api, "/x", {"--tlsv1.2", "--tls-max", "1.2"}), 0);
    BOOST_CHECK_EQUAL(curl_get(cert, host.api, "/x", {"--tlsv1.3"}), 0);
}

BOOST_AUTO_TEST_SUITE_END()
