// Clients choose methods, paths and close codes: none of them may become a label value of their own, or a client
// could grow the metrics (memory, scrape size) without bound. They fold into a bounded set.
#include <boost/test/unit_test.hpp>

#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http.h"
#include "support/http_raw.h"
#include "support/metrics.h"
#include "support/wait.h"

using namespace std::chrono_literals;
using test::sample;
using test::sum_of;

namespace {

// How many samples of `name` exist.
std::size_t series(const test::Samples& samples, const std::string& name) {
    std::size_t n = 0;
    for (const auto& [key, value] : samples) n += key.compare(0, name.size() + 1, name + "{") == 0;
    return n;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(metrics_labels)

BOOST_AUTO_TEST_CASE(methods_paths_and_close_codes_chosen_by_clients_fold_into_a_bounded_set_of_labels) {
    test::Host host;
    constexpr int kEach = 40;
    for (int i = 0; i < kEach; ++i) {
        // An invented method on a real route, and a real method on invented paths.
        test::RawHttp raw(host.api);
        const std::string method =
            std::string("BREW") + static_cast<char>('A' + i % 26) + static_cast<char>('A' + i / 26);
        raw.send(method + " /msg/send HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        BOOST_CHECK_GE(test::status_of(raw.read_all()), 400);
        BOOST_CHECK_EQUAL(test::http(host.api, "GET", "/probe/" + std::to_string(i) + "\"x\\").status, 404);
    }
    for (int i = 0; i < kEach; ++i) {
        hydra::WsClient c = host.connect("/echo");
        c.send_close(static_cast<std::uint16_t>((i % 2 == 0 ? 4000 : 3000) + i));
        BOOST_CHECK(c.receive(10s).type == hydra::WsMessage::Type::close);
    }
    test::Samples s;
    BOOST_REQUIRE(test::wait_until([&] {
        s = test::scrape(host.admin);
        return sum_of(s, "hydra_ws_closes_total") == kEach;
    }));
    BOOST_CHECK_EQUAL(sample(s, "hydra_ws_closes_total", R"(code="4xxx")"), kEach / 2);
    BOOST_CHECK_EQUAL(sample(s, "hydra_ws_closes_total", R"(code="3xxx")"), kEach / 2);
    BOOST_CHECK_EQUAL(series(s, "hydra_ws_closes_total"), 2u);
    // Every invented method is "other" (a 405 of /msg/send); every invented path "unmatched" (404).
    BOOST_CHECK_EQUAL(
        sample(s, "hydra_http_requests_total", R"(code="4xx",listener="api",method="other",route="/msg/send")"), kEach);
    BOOST_CHECK_EQUAL(
        sample(s, "hydra_http_requests_total", R"(code="4xx",listener="api",method="GET",route="unmatched")"), kEach);
    // Those two, and GET /metrics on the admin listener once a scrape was answered before this one.
    BOOST_CHECK_LE(series(s, "hydra_http_requests_total"), 3u);
    for (const auto& [key, value] : s) {
        BOOST_CHECK_MESSAGE(key.find("BREW") == std::string::npos, key);
        BOOST_CHECK_MESSAGE(key.find("/probe/") == std::string::npos, key);
    }
}

BOOST_AUTO_TEST_SUITE_END()
