// A client that pipelines requests and never reads the answers must not make the server buffer them without bound:
// past api.max_pending_output of unsent responses the server stops reading that connection (TCP holds the client
// back) and goes on once the client has read. Against the real binary; memory from /proc/<pid>/status.
#include <boost/test/unit_test.hpp>

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "support/host.h"
#include "support/http_raw.h"
#include "support/wait.h"

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

// CPU seconds the process has used (user + system).
double cpu_seconds(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // after "pid (comm) "
    std::string field;
    unsigned long utime = 0, stime = 0;
    for (int i = 3; i <= 15 && fields >> field; ++i) {
        if (i == 14) utime = std::stoul(field);
        if (i == 15) stime = std::stoul(field);
    }
    return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

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
    std::size_t sent = 0;
    std::vector<double> health_ms;
    auto next_probe = std::chrono::steady_clock::now();
    // Sends without ever reading for `period`; true when nothing could be sent for the last `quiet` of it, false
    // at the end of `period` or once the server has grown by 192 MB.
    auto flood_for = [&](std::chrono::milliseconds period, std::chrono::milliseconds quiet) {
        const auto start = std::chrono::steady_clock::now();
        auto last_progress = start;
        while (std::chrono::steady_clock::now() - start < period) {
            const std::size_t at = sent % burst.size();
            const std::size_t n = flood.send_some(burst.substr(at));
            sent += n;
            const auto now = std::chrono::steady_clock::now();
            if (n > 0) last_progress = now;
            if (n == 0) {
                if (now - last_progress >= quiet) return true;
                pollfd p{flood.fd(), POLLOUT, 0};
                ::poll(&p, 1, 50);
            }
            if (now >= next_probe) {
                health_ms.push_back(test::timed_get(host.api, "/healthz", 10s));
                next_probe += 500ms;
                if (test::memory_kib(pid) - before > 192 * 1024) return false;  // buffering without bound
            }
        }
        return false;
    };
    // The old server went on answering into memory, tens of MB a second. Now it stops reading this client at
    // max_pending_output (1 MiB) of unsent answers, and what it holds is that plus the kernel's buffers: the flood
    // stalls (nothing sent for 2 s) however slow the machine.
    BOOST_REQUIRE_MESSAGE(flood_for(120s, 2s), "the server went on reading a client that does not read");
    // It still answers what it had read (into at most max_pending_output, the rest waits unparsed): wait until it
    // is idle, less than 50 ms of CPU in a second (the /healthz probes cost a few); a sanitizer build takes seconds.
    // From then on it must not grow.
    BOOST_REQUIRE_MESSAGE(test::wait_until(
                              [&] {
                                  const double cpu = cpu_seconds(pid);
                                  flood_for(1s, 1s);
                                  return cpu_seconds(pid) - cpu < 0.05;
                              },
                              60s),
                          "the server went on working for a client that does not read");
    const long settled = test::memory_kib(pid);
    flood_for(3s, 3s);
    const long peak = std::max(settled, test::memory_kib(pid));
    const std::size_t requests = (sent + request.size() - 1) / request.size();
    BOOST_TEST_MESSAGE("sent " << requests << " requests; VmRSS " << before << " -> " << settled << " (idle) -> "
                               << peak << " KiB (3 s later)");
    BOOST_REQUIRE_MESSAGE(peak - settled < 16 * 1024,
                          "server grew by " << (peak - settled) / 1024 << " MB after it stopped reading");
    BOOST_REQUIRE_MESSAGE(peak - before < 192 * 1024,
                          "server grew by " << (peak - before) / 1024 << " MB while a client did not read");
    // Another connection is served meanwhile: every probe got its 200 (the 10 s bound only catches a stall).
    BOOST_REQUIRE(!health_ms.empty());
    for (double ms : health_ms) BOOST_CHECK_MESSAGE(ms >= 0, "/healthz was not answered within 10 s");

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
