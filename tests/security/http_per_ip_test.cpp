// One client address must not be able to take the API server from everyone else: a cap on its open connections
// (api.max_connections_per_ip), a deadline for a request's head (api.header_timeout_ms) apart from the one for its
// body, and a request rate (api.rate_limit.*). Against the real binary, from 127.0.0.1.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "support/host.h"
#include "support/http_raw.h"
#include "support/wait.h"

using namespace std::chrono_literals;

namespace {

const std::string kHealth = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

// Waits (with a deadline) until a new connection from this address is served again (a page: probes such as
// /healthz are exempt from the rate limit).
bool served_again(const std::string& api) {
    return test::wait_until([&] { return test::timed_get(api, "/demo/", 2s) >= 0; }, 20s);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(http_per_ip)

BOOST_AUTO_TEST_CASE(connections_over_the_per_address_cap_get_503) {
    test::Host host({"--set", "api.max_connections_per_ip=4"});
    std::vector<std::unique_ptr<test::RawHttp>> held;
    for (int i = 0; i < 4; ++i) {
        held.push_back(std::make_unique<test::RawHttp>(host.api));
        held.back()->send(kHealth);  // answered: the server has counted it
        BOOST_REQUIRE_EQUAL(test::status_of(held.back()->read_responses(1)), 200);
    }
    test::RawHttp fifth(host.api);
    const std::string& in = fifth.read_all();
    BOOST_CHECK_MESSAGE(test::status_of(in) == 503, in);
    BOOST_CHECK_MESSAGE(in.find("too many connections from this address") != std::string::npos, in);
    BOOST_CHECK_MESSAGE(in.find("\"code\":503") != std::string::npos, in);
    BOOST_CHECK(fifth.closed());

    // The held connections still work; closing one makes room for a new one.
    held[0]->send(kHealth);
    const std::string& both = held[0]->read_responses(2);
    BOOST_CHECK_EQUAL(test::status_of(both.substr(both.rfind("HTTP/1.1 "))), 200);
    held.pop_back();
    BOOST_CHECK(served_again(host.api));
}

BOOST_AUTO_TEST_CASE(a_stalled_head_gets_408_but_a_slow_body_is_fine) {
    test::Host host({"--set", "api.header_timeout_ms=500", "--set", "api.request_timeout_ms=20000"});

    // The head never ends: 408 after the header timeout, not the (much longer) request timeout.
    test::RawHttp stalled(host.api);
    const auto start = std::chrono::steady_clock::now();
    stalled.send("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    const std::string& in = stalled.read_all(10s);
    const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    BOOST_CHECK_MESSAGE(test::status_of(in) == 408, in);
    BOOST_CHECK_MESSAGE(in.find("request head not received within 500 ms") != std::string::npos, in);
    BOOST_CHECK(stalled.closed());
    BOOST_CHECK_GE(waited, 0.45);

    // A complete head, then the body slowly (the client is slow, on purpose: a pause of twice the header timeout
    // between its pieces): within request_timeout_ms it is read and answered.
    test::RawHttp slow(host.api);
    const std::string body = R"({"msg":"slow but complete"})";
    slow.send("POST /msg/broadcast HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\n\r\n");
    for (std::size_t at = 0; at < body.size(); at += 10) {
        std::this_thread::sleep_for(1s);
        slow.send(body.substr(at, 10));
    }
    const std::string& answer = slow.read_responses(1);
    BOOST_CHECK_MESSAGE(test::status_of(answer) == 200, answer);
    BOOST_CHECK(!slow.closed());
}

BOOST_AUTO_TEST_CASE(requests_over_the_rate_get_429_with_retry_after) {
    test::Host host({"--set", "api.rate_limit.requests_per_s=2", "--set", "api.rate_limit.burst=10"});
    test::RawHttp c(host.api);
    std::string burst;
    // A page, not /healthz or /readyz: probes are exempt from the rate limit (a load balancer's must not fail).
    for (int i = 0; i < 30; ++i) burst += "GET /demo/ HTTP/1.1\r\nHost: x\r\n\r\n";
    const auto start = std::chrono::steady_clock::now();
    c.send(burst);
    const std::string& in = c.read_responses(30);
    const double took_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    BOOST_REQUIRE_EQUAL(test::RawHttp::count_responses(in), 30u);
    std::size_t ok = 0, limited = 0, pos = 0;
    while ((pos = in.find("HTTP/1.1 ", pos)) != std::string::npos) {
        const int status = std::stoi(in.substr(pos + 9, 3));
        ok += status == 200;
        limited += status == 429;
        pos += 9;
    }
    // The burst of 10, plus what refilled (2 a second) while they were answered; the rest is refused. The refill is
    // counted from the time taken, so a slow machine cannot fail this.
    BOOST_CHECK_GE(ok, 10u);
    BOOST_CHECK_LE(ok, 11u + static_cast<std::size_t>(2 * took_s));
    BOOST_CHECK_EQUAL(ok + limited, 30u);
    BOOST_CHECK_MESSAGE(in.find("Retry-After: 1\r\n") != std::string::npos, in.substr(0, 400));
    BOOST_CHECK_MESSAGE(in.find("{\"code\":429,\"msg\":\"too many requests") != std::string::npos, in);
    BOOST_CHECK(!c.closed());  // refused, not disconnected
    // Probes from this address are answered all the same.
    c.send(kHealth);
    const std::string& probed = c.read_responses(31);
    BOOST_CHECK_EQUAL(test::status_of(probed.substr(probed.rfind("HTTP/1.1 "))), 200);

    // Other addresses are not affected (none here); this one is served again once its bucket refills.
    BOOST_CHECK(served_again(host.api));
}

BOOST_AUTO_TEST_SUITE_END()
