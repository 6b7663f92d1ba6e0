// The drain of `hydra run` on SIGTERM, against the real binary: /readyz turns 503 at once while the host still
// serves for shutdown.grace_ms; then the API and WS listeners refuse new connections, WebSocket clients are closed
// with 1001 one after the other over ws.drain_ms, and the process exits 0. A second SIGTERM ends the drain at once;
// shutdown.timeout_ms bounds it. (The dev profile drains without a grace and closes all at once: these cases set
// the keys.)
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <vector>

#include <hydra/app.h>
#include <hydra/ws_client.h>

#include "queue/sqlite/sqlite_queue.h"

#include "support/host.h"
#include "support/http.h"
#include "support/http_raw.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

int status_of_get(const std::string& address, const std::string& path) {
    try {
        return test::http(address, "GET", path).status;
    } catch (const std::exception&) {
        return -1;  // refused or cut
    }
}

// True when nothing can be asked of `address` any more: the connection is refused, or closed without an answer.
bool refuses_new_connections(const std::string& address) {
    test::RawHttp c(address);
    if (!c.connected()) return true;
    if (c.send_some("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == 0) return true;
    const std::string& in = c.read_all(5s);
    return c.closed() && in.empty();
}

// When a client got its close frame, with its code (`at` unset when it got something else).
struct Closed {
    std::optional<Clock::time_point> at;
    int code = 0;
    double ms_after(Clock::time_point since) const {
        return at ? std::chrono::duration<double, std::milli>(*at - since).count() : -1;
    }
};

std::vector<std::future<Closed>> await_closes(std::vector<WsClient>& clients, std::chrono::milliseconds timeout) {
    std::vector<std::future<Closed>> closes;
    for (auto& c : clients)
        closes.push_back(std::async(std::launch::async, [&c, timeout] {
            WsMessage m = c.receive(timeout);
            Closed r;
            if (m.type != WsMessage::Type::close) return r;
            r.at = Clock::now();
            r.code = m.close_code;
            return r;
        }));
    return closes;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(drain)

BOOST_AUTO_TEST_CASE(sigterm_turns_readyz_503_at_once_and_serves_on_until_the_grace_ends_then_refuses) {
    // A long grace: everything checked "during the grace" must happen within it, on a slow machine too.
    test::Host host({"--set", "shutdown.grace_ms=5000", "--set", "ws.drain_ms=500"});
    BOOST_REQUIRE_EQUAL(status_of_get(host.api, "/readyz"), 200);
    BOOST_REQUIRE_EQUAL(status_of_get(host.admin, "/readyz"), 200);
    test::RawHttp open(host.api);  // a keep-alive connection from before the signal
    open.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_REQUIRE_EQUAL(test::status_of(open.read_responses(1)), 200);
    WsClient ws = host.connect("/echo");

    const auto signalled = Clock::now();
    host.process->signal(SIGTERM);
    // Unready at once on both listeners, with the reason.
    BOOST_CHECK(test::wait_until([&] { return status_of_get(host.api, "/readyz") == 503; }, 10s));
    auto ready = test::http(host.admin, "GET", "/readyz");
    BOOST_CHECK_EQUAL(ready.status, 503);
    BOOST_CHECK_EQUAL(ready.json()["status"], "unready");
    BOOST_CHECK_EQUAL(ready.json()["reasons"], hydra::Json::array({"draining"}));
    // Still alive and serving: /healthz, the open connection, the WebSocket, a new connection.
    auto health = test::http(host.api, "GET", "/healthz");
    BOOST_CHECK_EQUAL(health.status, 200);
    BOOST_CHECK_EQUAL(health.json()["status"], "ok");
    open.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string& both = open.read_responses(2);
    BOOST_CHECK_EQUAL(test::status_of(both.substr(both.rfind("HTTP/1.1 "))), 200);
    ws.send_text("still here");
    WsMessage echoed = ws.receive(10s);
    BOOST_CHECK_EQUAL(echoed.data, "still here");
    WsClient late = host.connect("/echo");
    late.send_text("late");
    BOOST_CHECK_EQUAL(late.receive(10s).data, "late");
    const double served_until_ms = std::chrono::duration<double, std::milli>(Clock::now() - signalled).count();
    BOOST_TEST_MESSAGE("checked during the grace until " << served_until_ms << " ms");
    BOOST_REQUIRE_MESSAGE(served_until_ms < 5000, "too slow to check within the grace (" << served_until_ms << " ms)");

    // After the grace: new API and WS connections are refused (not before it: the order is what counts).
    BOOST_CHECK(test::wait_until([&] { return refuses_new_connections(host.api); }, 20s));
    const double refused_ms = std::chrono::duration<double, std::milli>(Clock::now() - signalled).count();
    BOOST_CHECK_GE(refused_ms, 5000 - 50);
    BOOST_CHECK_THROW(WsClient::connect("127.0.0.1", host.ws_port, "/echo"), std::exception);
    // The WebSockets got 1001.
    for (WsClient* c : {&ws, &late}) {
        WsMessage m = c->receive(20s);
        BOOST_CHECK_MESSAGE(m.type == WsMessage::Type::close, "got " << m.type << " " << m.data);
        BOOST_CHECK_EQUAL(m.close_code, 1001);
    }
    BOOST_CHECK_EQUAL(host.process->wait(30s).value_or(-1), 0);
}

BOOST_AUTO_TEST_CASE(websocket_clients_are_closed_with_1001_spread_over_ws_drain_ms) {
    constexpr int kClients = 50;
    constexpr int kGraceMs = 500;
    constexpr int kDrainMs = 2000;
    test::Host host({"--set", "shutdown.grace_ms=" + std::to_string(kGraceMs), "--set",
                     "ws.drain_ms=" + std::to_string(kDrainMs), "--set", "ws.io_threads=2"});
    std::vector<WsClient> clients;
    for (int i = 0; i < kClients; ++i) clients.push_back(host.connect("/echo"));
    for (auto& c : clients) {  // every one is open on the server
        c.send_text("hi");
        BOOST_REQUIRE_EQUAL(c.receive(10s).data, "hi");
    }
    auto closes = await_closes(clients, 30s);
    const Clock::time_point signalled = Clock::now();
    host.process->signal(SIGTERM);
    std::vector<double> at;
    for (auto& f : closes) {
        Closed c = f.get();
        BOOST_CHECK_EQUAL(c.code, 1001);
        if (c.at) at.push_back(c.ms_after(signalled));
    }
    BOOST_REQUIRE_EQUAL(at.size(), static_cast<std::size_t>(kClients));
    std::sort(at.begin(), at.end());
    BOOST_TEST_MESSAGE("closes from " << at.front() << " ms to " << at.back() << " ms after SIGTERM; median "
                                      << at[at.size() / 2] << " ms");
    // None before the grace ended; spread, not all at once: the first and the last close at least half of
    // ws.drain_ms apart (a slow machine only spreads them more), and the middle one well after the first.
    BOOST_CHECK_GE(at.front(), kGraceMs - 50);
    BOOST_CHECK_GE(at.back() - at.front(), kDrainMs / 2);
    BOOST_CHECK_GE(at[at.size() / 2] - at.front(), kDrainMs / 5);
    BOOST_CHECK_EQUAL(host.process->wait(30s).value_or(-1), 0);
}

BOOST_AUTO_TEST_CASE(a_second_sigterm_closes_the_remaining_clients_at_once_and_exits_0) {
    constexpr int kClients = 20;
    // A drain of a minute, and no overall bound before it: only the second signal can end it soon.
    test::Host host(
        {"--set", "shutdown.grace_ms=200", "--set", "ws.drain_ms=60000", "--set", "shutdown.timeout_ms=600000"});
    std::vector<WsClient> clients;
    for (int i = 0; i < kClients; ++i) clients.push_back(host.connect("/echo"));
    for (auto& c : clients) {
        c.send_text("hi");
        BOOST_REQUIRE_EQUAL(c.receive(10s).data, "hi");
    }
    auto closes = await_closes(clients, 120s);
    host.process->signal(SIGTERM);
    // The drain has begun: the first client's turn is at once.
    BOOST_REQUIRE(test::wait_until(
        [&] {
            return std::any_of(closes.begin(), closes.end(),
                               [](auto& f) { return f.wait_for(0s) == std::future_status::ready; });
        },
        20s));
    const Clock::time_point again = Clock::now();
    host.process->signal(SIGTERM);
    double last = 0;
    for (auto& f : closes) {
        Closed c = f.get();
        BOOST_CHECK_EQUAL(c.code, 1001);
        last = std::max(last, c.ms_after(again));
    }
    BOOST_TEST_MESSAGE("the last close came " << last << " ms after the second SIGTERM");
    // Without the second signal the last turn would be a minute away: a quarter of it is generous for any machine.
    BOOST_CHECK_LT(last, 15000);
    BOOST_CHECK_EQUAL(host.process->wait(30s).value_or(-1), 0);
}

BOOST_AUTO_TEST_CASE(shutdown_timeout_ms_bounds_the_whole_drain) {
    test::Host host(
        {"--set", "shutdown.grace_ms=200", "--set", "ws.drain_ms=120000", "--set", "shutdown.timeout_ms=2000"});
    WsClient a = host.connect("/echo");
    WsClient b = host.connect("/echo");
    a.send_text("a");
    b.send_text("b");
    BOOST_REQUIRE_EQUAL(a.receive(10s).data, "a");
    BOOST_REQUIRE_EQUAL(b.receive(10s).data, "b");
    const auto signalled = Clock::now();
    host.process->signal(SIGTERM);
    // ws.drain_ms would close the second one after a minute; the bound closes it, and the process exits 0, soon.
    for (WsClient* c : {&a, &b}) BOOST_CHECK_EQUAL(c->receive(60s).close_code, 1001);
    BOOST_CHECK_EQUAL(host.process->wait(60s).value_or(-1), 0);
    const double took_s = std::chrono::duration<double>(Clock::now() - signalled).count();
    BOOST_TEST_MESSAGE("exited " << took_s << " s after SIGTERM");
    BOOST_CHECK_LT(took_s, 60);
}

BOOST_AUTO_TEST_CASE(a_drain_lets_the_mqc_handler_in_flight_finish_and_commits_its_message) {
    // In process (App::drain, what `hydra run` calls on SIGTERM), with a handler the test holds in flight.
    const std::string path = test::temp_path("drain-queue.db");
    hydra::App app;
    std::promise<void> release;
    std::shared_future<void> released = release.get_future().share();
    std::atomic<int> entered{0};
    std::atomic<int> finished{0};
    app.mqc("/work",
            [&entered, &finished, released](hydra::Context&) {
                ++entered;
                released.wait();
                ++finished;
                return hydra::Json{{"ok", true}};
            },
            {.queue = "test:work"});
    app.start(hydra::Config::from_json(
        hydra::Json::object(), "test",
        {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.address=127.0.0.1:0", "log.level=error",
         "queue.sqlite.path=" + path, "shutdown.grace_ms=0", "ws.drain_ms=0", "api.shutdown_timeout_ms=60000"},
        hydra::ConfigSchema::builtin()));
    app.queue()->push("test:work", std::string_view(R"({"n":1})"));
    BOOST_REQUIRE(test::wait_until([&] { return entered.load() == 1; }));

    auto draining = std::async(std::launch::async, [&app] { app.drain(); });
    // The drain waits for the handler (up to api.shutdown_timeout_ms, a minute here): not over while it runs.
    BOOST_CHECK(draining.wait_for(1s) == std::future_status::timeout);
    release.set_value();
    BOOST_REQUIRE(draining.wait_for(60s) == std::future_status::ready);
    BOOST_CHECK_EQUAL(finished.load(), 1);
    BOOST_CHECK_EQUAL(entered.load(), 1);
    // Its outcome was committed: the message is neither waiting nor leased any more (it would be redelivered).
    for (const auto& q : hydra::queue::SqliteQueue::stats(path)) {
        if (q.queue != "test:work") continue;
        BOOST_CHECK_EQUAL(q.ready, 0);
        BOOST_CHECK_EQUAL(q.leased, 0);
        BOOST_CHECK_EQUAL(q.dead, 0);
    }
}

BOOST_AUTO_TEST_SUITE_END()
