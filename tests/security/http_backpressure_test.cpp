// A client that pipelines requests and never reads the answers must not make the server buffer them without bound:
// past api.max_pending_output of unsent responses the server stops reading that connection (TCP holds the client
// back) and goes on once the client has read. Against the real binary; memory from /proc/<pid>/status.
#include <boost/test/unit_test.hpp>

#include <poll.h>

#include <chrono>
#include <string>
#include <vector>

#include "support/host.h"
#include "support/http_raw.h"

using namespace std::chrono_literals;

namespace {

// Counts complete responses in a stream read piece by piece (heads with Content-Length bodies).
struct ResponseCounter {
    std::string buffer;
    std::size_t count = 0;
    void feed(const char* data, std::size_t n) {
        buffer.append(data, n);
        for (;;) {
            const auto end = buffer.find("\r\n\r\n");
            if (end == std::string::npos) return;
            std::size_t length = 0;
            const auto cl = buffer.find("Content-Length: ");
            if (cl != std::string::npos && cl < end) length = std::stoul(buffer.substr(cl + 16));
            if (buffer.size() < end + 4 + length) return;
            BOOST_REQUIRE_MESSAGE(buffer.rfind("HTTP/1.1 200 ", 0) == 0, buffer.substr(0, 200));
            buffer.erase(0, end + 4 + length);
            ++count;
        }
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(http_backpressure)

BOOST_AUTO_TEST_CASE(pipelining_without_reading_keeps_the_server_bounded) {
    // The rate limit is off: one address sends thousands of requests here, and /healthz comes from the same address.
    test::Host host({"--set", "api.rate_limit.requests_per_s=0"});
    const int pid = host.process->pid();
    const std::string request = "GET /demo/ HTTP/1.1\r\nHost: x\r\n\r\n";  // a 2 KB page
    std::string burst;
    for (int i = 0; i < 256; ++i) burst += request;

    // Small fixed socket buffers on our side, so that what the kernel holds is small next to what is measured.
    test::RawHttp flood(host.api, 16 * 1024, 16 * 1024);
    BOOST_REQUIRE(flood.connected());
    const long before = test::memory_kib(pid);
    long settled = 0, peak = before;
    std::size_t sent = 0;
    std::vector<double> health_ms;
    const auto start = std::chrono::steady_clock::now();
    auto next_probe = start;
    // Send for 10 s, never reading. The old server went on answering into memory, tens of MB a second; now the
    // server stops at max_pending_output (1 MiB) of unsent answers plus what the kernel holds.
    while (std::chrono::steady_clock::now() - start < 10s) {
        const std::size_t at = sent % burst.size();
        const std::size_t n = flood.send_some(burst.substr(at));
        sent += n;
        if (n == 0) {
            pollfd p{flood.fd(), POLLOUT, 0};
            ::poll(&p, 1, 50);
        }
        if (std::chrono::steady_clock::now() >= next_probe) {
            health_ms.push_back(test::timed_get(host.api, "/healthz", 5s));
            next_probe += 500ms;
        }
        // After 4 s the server has done all it will do for this client (its first answers also warm up allocator
        // caches and handler threads, which a sanitizer build makes costly): from here on it must not grow.
        if (settled == 0 && std::chrono::steady_clock::now() - start >= 4s) settled = test::memory_kib(pid);
    }
    peak = std::max(peak, test::memory_kib(pid));
    const std::size_t requests = (sent + request.size() - 1) / request.size();
    BOOST_TEST_MESSAGE("sent " << requests << " requests; VmRSS " << before << " -> " << settled << " (4 s) -> " << peak
                               << " KiB (10 s)");
    BOOST_REQUIRE_MESSAGE(peak - settled < 16 * 1024,
                          "server grew by " << (peak - settled) / 1024 << " MB in 6 s while a client did not read");
    BOOST_REQUIRE_MESSAGE(peak - before < 192 * 1024,
                          "server grew by " << (peak - before) / 1024 << " MB while a client did not read");
    // Another connection is served meanwhile: each probe answered within timed_get's 5 s (a generous bound: a
    // noisy machine, a sanitizer build; a server stuck on the flood does not answer at all).
    for (double ms : health_ms) BOOST_CHECK_MESSAGE(ms >= 0, "/healthz not answered within 5 s");

    // Once the client reads, every request it sent is answered, in order (the server resumed reading).
    const std::size_t partial = sent % request.size();
    std::string rest = partial == 0 ? std::string() : request.substr(partial);
    ResponseCounter counter;
    const auto deadline = std::chrono::steady_clock::now() + 60s;
    while (counter.count < requests && std::chrono::steady_clock::now() < deadline) {
        pollfd p{flood.fd(), static_cast<short>(POLLIN | (rest.empty() ? 0 : POLLOUT)), 0};
        if (::poll(&p, 1, 1000) <= 0) continue;
        if ((p.revents & POLLOUT) && !rest.empty()) rest.erase(0, flood.send_some(rest));
        if (p.revents & POLLIN) {
            char buf[65536];
            const ssize_t n = ::recv(flood.fd(), buf, sizeof buf, 0);
            BOOST_REQUIRE_MESSAGE(n > 0, "the server closed the connection after " << counter.count << " answers");
            counter.feed(buf, static_cast<std::size_t>(n));
        }
    }
    BOOST_CHECK_EQUAL(counter.count, requests);
}

BOOST_AUTO_TEST_SUITE_END()
