// A graceful stop of both servers: SIGINT/SIGTERM make `hydra run` call App::stop(), so the in-process cases drive
// App::stop() directly (with handlers the test holds in flight), and one case sends SIGTERM to the real binary.
// API: stop accepting, close idle keep-alive connections at once, answer requests in flight with `Connection: close`.
// WS: every connection gets close 1001 `server shutting down`.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <string>
#include <vector>

#include <hydra/app.h>
#include <hydra/ws_client.h>

#include "support/config.h"
#include "support/host.h"
#include "support/http_raw.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Context;
using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

// Threads of this process whose name starts with `prefix` ("api-worker-0").
int threads_named(const std::string& prefix) {
    int n = 0;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(task.path() / "comm");
        std::string name;
        if (std::getline(comm, name) && name.rfind(prefix, 0) == 0) ++n;
    }
    return n;
}

hydra::Config both_servers(std::vector<std::string> sets = {}) { return test::app_config(std::move(sets)); }

int port_of(const std::string& address) { return std::stoi(address.substr(address.rfind(':') + 1)); }

// True when nothing can be asked of `address` any more: the connection is refused, or closed without an answer.
bool refuses_new_connections(const std::string& address) {
    test::RawHttp c(address);
    if (!c.connected()) return true;
    if (c.send_some("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n") == 0) return true;
    const std::string& in = c.read_all(5s);
    return c.closed() && in.empty();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(graceful_shutdown)

BOOST_AUTO_TEST_CASE(stop_closes_idle_keep_alive_connections_and_answers_in_flight_requests_with_connection_close) {
    hydra::App app;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<bool> entered{false};
    app.api("/hello", [](Context&) { return Json{{"hello", "world"}}; });
    app.api("/block", [&entered, released](Context&) {
        entered = true;
        released.wait();
        return Json{{"done", true}};
    });
    // Long timeouts: whatever closes before they end is the stop's doing (not its grace, not keep-alive).
    app.start(both_servers({"api.shutdown_timeout_ms=60000", "api.keep_alive_timeout_ms=60000"}));
    const std::string addr = app.api_address();

    // An idle keep-alive connection: one request answered, the connection left open.
    test::RawHttp idle(addr);
    idle.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string first = idle.read_responses(1);
    BOOST_REQUIRE_EQUAL(test::status_of(first), 200);
    BOOST_REQUIRE(first.find("Connection: close") == std::string::npos);
    // A request in flight: its handler runs until the test releases it.
    test::RawHttp busy(addr);
    busy.send("GET /block HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_REQUIRE(test::wait_until([&] { return entered.load(); }));

    auto stopping = std::async(std::launch::async, [&app] { app.stop(); });
    // The idle connection is closed at once (with no further bytes), while the request in flight still runs.
    const std::string& after = idle.read_all(20s);
    BOOST_CHECK_MESSAGE(idle.closed(), "an idle keep-alive connection was left open by the stop");
    BOOST_CHECK_EQUAL(after, first);
    // No new connection is served.
    BOOST_CHECK(test::wait_until([&] { return refuses_new_connections(addr); }));
    // The stop waits for the request in flight.
    BOOST_CHECK(stopping.wait_for(0ms) == std::future_status::timeout);

    release.set_value();
    const std::string& in = busy.read_all(20s);
    BOOST_CHECK_MESSAGE(test::status_of(in) == 200, in);
    BOOST_CHECK_MESSAGE(in.find("Connection: close\r\n") != std::string::npos, in);
    BOOST_CHECK_MESSAGE(in.find(R"({"done":true})") != std::string::npos, in);
    BOOST_CHECK_EQUAL(test::RawHttp::count_responses(in), 1u);
    BOOST_CHECK(busy.closed());
    BOOST_CHECK(stopping.wait_for(20s) == std::future_status::ready);
    BOOST_CHECK(!app.running());
}

BOOST_AUTO_TEST_CASE(stop_closes_every_websocket_with_1001_server_shutting_down) {
    std::mutex mu;
    std::vector<std::string> closes;  // what on_close saw
    hydra::App app;
    app.ws("/echo", [](Context& ctx) { return ctx.params(); });
    hydra::WsEndpoint raw;
    raw.on_message = [](Context& ctx) -> hydra::Result { return ctx.body(); };
    raw.on_close = [&](Context&, int code, const std::string& reason) {
        std::lock_guard lock(mu);
        closes.push_back(std::to_string(code) + " " + reason);
    };
    app.ws_endpoint("/raw", raw);
    app.start(both_servers());
    const int port = port_of(app.ws_address());

    // Connections on both I/O loops, on service routing and on a raw endpoint, each used once.
    std::vector<WsClient> clients;
    for (int i = 0; i < 6; ++i) {
        clients.push_back(WsClient::connect("127.0.0.1", port, i % 2 == 0 ? "/" : "/raw"));
        if (i % 2 == 0) {
            clients.back().send_text(R"({"service":"/echo","i":1})");
            BOOST_REQUIRE(clients.back().receive(5s).type == WsMessage::Type::text);
        } else {
            clients.back().send_text("hi");
            BOOST_REQUIRE_EQUAL(clients.back().receive(5s).data, "hi");
        }
    }
    BOOST_REQUIRE(test::wait_until([&] { return app.exchange()->connections() == 6; }));

    auto stopping = std::async(std::launch::async, [&app] { app.stop(); });
    for (auto& c : clients) {
        WsMessage m = c.receive(20s);
        BOOST_CHECK_MESSAGE(m.type == WsMessage::Type::close, "got " << m.type << " " << m.data);
        BOOST_CHECK_EQUAL(m.close_code, 1001);
        BOOST_CHECK_EQUAL(m.close_reason, "server shutting down");
    }
    BOOST_CHECK(stopping.wait_for(20s) == std::future_status::ready);
    std::lock_guard lock(mu);
    BOOST_CHECK_EQUAL(closes.size(), 3u);
    for (const auto& c : closes) BOOST_CHECK_EQUAL(c, "1001 server shutting down");
}

BOOST_AUTO_TEST_CASE(handlers_that_outlive_the_shutdown_timeout_still_find_the_server_and_the_queue_they_use) {
    hydra::App app;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<int> entered{0};
    std::atomic<int> finished{0};
    app.api("/late", [&entered, &finished, released](Context& ctx) {
        ++entered;
        released.wait();
        // The queue was stopped meanwhile: the push fails, but on an object that is still there.
        try {
            ctx.queue().push("test:late", std::string_view(R"({"late":true})"));
        } catch (const std::exception&) {
        }
        ++finished;
        return Json{{"late", true}};
    });
    // One handler thread: the second request waits in line behind the first, and starts only after stop().
    app.start(both_servers({"api.threads=1", "api.shutdown_timeout_ms=100"}));
    test::RawHttp first(app.api_address());
    first.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_REQUIRE(test::wait_until([&] { return entered.load() == 1; }));
    test::RawHttp second(app.api_address());
    second.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_REQUIRE(test::wait_until([&] { return test::unread_by_server(second) == 0; }));

    app.stop();  // gives up on both after 100 ms: their clients are disconnected
    BOOST_CHECK(first.read_all(20s).empty());
    BOOST_CHECK(!app.running());
    // Both handlers run to their end after the stop, the second one routed, authorized and parsed only now (the
    // sanitizer build reports any use of what stop() freed).
    release.set_value();
    BOOST_CHECK(test::wait_until([&] { return finished.load() == 2; }, 20s));
    BOOST_CHECK_EQUAL(entered.load(), 2);
    // Then their thread ends: nothing of the stopped server is left behind.
    BOOST_CHECK(test::wait_until([] { return threads_named("api-worker") == 0; }, 20s));
}

BOOST_AUTO_TEST_CASE(sigterm_closes_idle_http_connections_and_websockets_with_1001_then_exits_0) {
    // Long timeouts, as above: the idle connection can only be closed by the stop itself.
    test::Host host({"--set", "api.shutdown_timeout_ms=60000", "--set", "api.keep_alive_timeout_ms=60000"});
    test::RawHttp idle(host.api);
    idle.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string first = idle.read_responses(1);
    BOOST_REQUIRE_EQUAL(test::status_of(first), 200);
    WsClient ws = host.connect("/echo");
    ws.send_text("before");
    BOOST_REQUIRE_EQUAL(ws.receive(10s).data, "before");

    host.process->signal(SIGTERM);
    WsMessage m = ws.receive(20s);
    BOOST_CHECK_MESSAGE(m.type == WsMessage::Type::close, "got " << m.type << " " << m.data);
    BOOST_CHECK_EQUAL(m.close_code, 1001);
    BOOST_CHECK_EQUAL(m.close_reason, "server shutting down");
    BOOST_CHECK_EQUAL(idle.read_all(20s), first);
    BOOST_CHECK_MESSAGE(idle.closed(), "an idle keep-alive connection outlived SIGTERM");
    // ~Host checks the exit status: 0.
}

BOOST_AUTO_TEST_SUITE_END()
