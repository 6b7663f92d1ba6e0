// What one connection does must not cost the server more than that connection: a declared Content-Length reserves
// nothing before the body arrives, and an exception while serving a connection (an allocation failing) closes that
// connection, not the process.
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "api/http_server.h"
#include "support/host.h"
#include "support/http_raw.h"

using namespace std::chrono_literals;

BOOST_AUTO_TEST_SUITE(http_robustness)

BOOST_AUTO_TEST_CASE(a_declared_content_length_reserves_nothing) {
    test::Host host({"--set", "api.max_body=1073741824"});
    const int pid = host.process->pid();
    const long before = test::memory_kib(pid, "VmSize");
    // 64 connections each announce a 1 GiB body and send one byte of it.
    std::vector<std::unique_ptr<test::RawHttp>> conns;
    for (int i = 0; i < 64; ++i) {
        conns.push_back(std::make_unique<test::RawHttp>(host.api));
        conns.back()->send("POST /msg/broadcast HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n{");
    }
    // Observable that the server has read every head: a request behind them on a fresh connection is answered
    // (each loop takes events in order; the heads were sent first).
    BOOST_REQUIRE_GE(test::timed_get(host.api, "/healthz"), 0);
    const long after = test::memory_kib(pid, "VmSize");
    BOOST_TEST_MESSAGE("VmSize " << before << " -> " << after << " KiB");
    // Reserving the declared length took 64 GiB of address space (with gigabytes of it resident on some
    // allocators); the bodies as they came take nothing worth counting.
    BOOST_CHECK_MESSAGE(after - before < 512 * 1024, "address space grew by " << (after - before) / 1024 << " MB");
}

BOOST_AUTO_TEST_CASE(an_exception_while_serving_closes_only_that_connection) {
    // The real http::Server; its error page fails the way an allocation can fail while a 400 is built.
    hydra::http::Server::Settings settings;
    settings.address = "127.0.0.1:0";
    settings.workers = 2;
    hydra::http::Server server(
        settings,
        [](hydra::http::Request&) {
            hydra::http::Response r;
            r.body = "ok";
            return r;
        },
        [](int status, const std::string& reason) -> hydra::http::Response {
            if (status == 400) throw std::bad_alloc();
            hydra::http::Response r;
            r.status = status;
            r.body = reason;
            return r;
        });
    server.start();

    test::RawHttp bad(server.address());
    bad.send("GET /x HTTP/1.1\r\n\r\n");  // no Host: 400, whose page throws
    const std::string& in = bad.read_all(10s);
    BOOST_CHECK_MESSAGE(bad.closed(), "the connection was left open");
    BOOST_CHECK(in.empty());

    // Everyone else is still served, and the server's bookkeeping let the connection go.
    test::RawHttp good(server.address());
    good.send("GET /y HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string& answer = good.read_responses(1);
    BOOST_CHECK_MESSAGE(test::status_of(answer) == 200, answer);
    BOOST_CHECK_EQUAL(server.open_connections(), 1);
    server.stop(1s);
}

BOOST_AUTO_TEST_SUITE_END()
