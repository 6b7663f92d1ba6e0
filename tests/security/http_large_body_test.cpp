// Large bodies are parsed off the API server's I/O loop: a 1 MB JSON body takes milliseconds to parse, and while the
// loop parses, every other connection on it waits. Against the real binary: clients post ~1 MB JSON to the
// asynchronous /msg/send (whose small requests are handled on the loop) while /healthz is timed.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "support/host.h"
#include "support/http_raw.h"
#include "support/wait.h"

using namespace std::chrono_literals;

namespace {

std::vector<double> health_samples(const std::string& api, int n) {
    std::vector<double> ms;
    for (int i = 0; i < n; ++i) ms.push_back(test::timed_get(api, "/healthz", 10s));
    return ms;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(http_large_body)

BOOST_AUTO_TEST_CASE(large_json_bodies_do_not_hold_up_other_requests) {
    test::Host host({"--set", "api.rate_limit.requests_per_s=0"});
    // ~1 MB of small numbers: slow to parse. No "msg": each is parsed, then refused with 400 (nothing is queued).
    std::string body = "{\"pad\":[";
    while (body.size() < 1000 * 1000) body += "1234,";
    body += "0]}";
    const std::string request =
        "POST /msg/send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;

    const std::vector<double> idle = health_samples(host.api, 200);
    std::atomic<bool> stop{false};
    std::atomic<int> posted{0}, wrong{0};
    std::vector<std::thread> clients;
    for (int t = 0; t < 4; ++t)
        clients.emplace_back([&] {
            test::RawHttp c(host.api);
            std::size_t answered = 0;
            while (!stop) {
                if (::send(c.fd(), request.data(), request.size(), MSG_NOSIGNAL) !=
                    static_cast<ssize_t>(request.size()))
                    break;
                const std::string& in = c.read_responses(++answered, 30s);
                if (test::RawHttp::count_responses(in) != answered) break;
                if (in.rfind("HTTP/1.1 400 ", in.rfind("HTTP/1.1 ")) == std::string::npos) ++wrong;
                ++posted;
            }
        });
    // Measure once the load runs.
    BOOST_REQUIRE(test::wait_until([&] { return posted >= 4; }, 30s));
    const std::vector<double> loaded = health_samples(host.api, 200);
    stop = true;
    for (auto& t : clients) t.join();

    const double p99_idle = test::percentile(idle, 99), p99_loaded = test::percentile(loaded, 99);
    BOOST_TEST_MESSAGE("/healthz p50 " << test::percentile(idle, 50) << " -> " << test::percentile(loaded, 50)
                                       << " ms, p99 " << p99_idle << " -> " << p99_loaded << " ms; " << posted
                                       << " large bodies posted");
    BOOST_CHECK_GE(posted.load(), 4);
    BOOST_CHECK_EQUAL(wrong.load(), 0);
    for (double ms : loaded) BOOST_REQUIRE_GE(ms, 0);  // every /healthz answered
    // Parsed on the loop, each 1 MB body held every other request of the loop: /healthz p50 was over 5 s, p99 over
    // 9 s here (sanitizer build, 2 cores). Off the loop, /healthz only competes for CPU with the four parser threads:
    // p99 around 70 ms on the same machine. The bound is generous (14x that; a small shared machine, a sanitizer
    // build): it catches the loop being blocked (seconds), not scheduling noise.
    BOOST_CHECK_MESSAGE(p99_loaded < std::max(1000.0, 10 * p99_idle),
                        "/healthz p99 " << p99_loaded << " ms under load (idle: " << p99_idle << " ms)");
}

BOOST_AUTO_TEST_SUITE_END()
