// Exchange::notify_confirmed against the real WS server: the outcome of each push is reported exactly once, true
// only when the whole frame reached the socket, false when a client that does not read had its queue dropped.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include <hydra/app.h>
#include <hydra/ws_client.h>

#include "support/temp.h"
#include "support/wait.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

// Outcomes of n pushes: 0 = not reported yet, 1 = written, 2 = not written; `calls` counts every report.
struct Outcomes {
    explicit Outcomes(std::size_t n) : state(n), calls(n) {}
    std::vector<std::atomic<int>> state;
    std::vector<std::atomic<int>> calls;
    std::atomic<std::size_t> reported{0};
    std::atomic<std::size_t> not_written{0};

    std::function<void(bool)> callback(std::size_t i) {
        return [this, i](bool written) {
            state[i].store(written ? 1 : 2);
            calls[i].fetch_add(1);
            if (!written) not_written.fetch_add(1);
            reported.fetch_add(1);
        };
    }
    bool wait_reported(std::size_t n, std::chrono::milliseconds timeout = 20s) {
        return test::wait_until([&] { return reported.load() >= n; }, timeout);
    }
    std::size_t count(int s) const {
        std::size_t n = 0;
        for (const auto& v : state) n += v.load() == s ? 1 : 0;
        return n;
    }
};

struct Server {
    hydra::App app{{.plat = "test", .system = "ws"}};
    int port = 0;

    explicit Server(std::vector<std::string> sets = {}) {
        hydra::WsEndpoint quiet;  // accepts connections, answers nothing
        quiet.on_message = [](hydra::Context&) -> hydra::Result { return {}; };
        app.ws_endpoint("/quiet", quiet);
        sets.insert(sets.begin(),
                    {"api.enabled=false", "admin.enabled=false", "ws.address=127.0.0.1:0", "log.level=error",
                     "ws.io_threads=1", "mqc.enabled=false", "queue.sqlite.path=" + test::temp_path("q.db")});
        app.start(hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin()));
        std::string addr = app.ws_address();
        port = std::stoi(addr.substr(addr.rfind(':') + 1));
    }
    hydra::Exchange& ex() { return *app.exchange(); }
    bool wait_connections(std::size_t n) {
        return test::wait_until([&] { return ex().connections() == n; });
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_confirm)

BOOST_AUTO_TEST_CASE(a_reading_client_gets_every_push_confirmed_once) {
    Server s;
    WsClient c = WsClient::connect("127.0.0.1", s.port, "/quiet");
    std::string uuid = c.response_header("X-Request-Id").value();
    BOOST_REQUIRE(s.wait_connections(1));

    constexpr std::size_t n = 200;
    Outcomes out(n);
    for (std::size_t i = 0; i < n; ++i) BOOST_REQUIRE(s.ex().notify_confirmed(uuid, Json{{"i", i}}, out.callback(i)));
    for (std::size_t i = 0; i < n; ++i) {
        WsMessage m = c.receive(5s);
        BOOST_REQUIRE(m.type == WsMessage::Type::text);
        BOOST_CHECK_EQUAL(Json::parse(m.data)["data"]["i"], i);
    }
    BOOST_REQUIRE(out.wait_reported(n));
    BOOST_CHECK_EQUAL(out.count(1), n);

    // an unknown uuid is refused at once and never reported
    Outcomes none(1);
    BOOST_CHECK(!s.ex().notify_confirmed("nobody", Json{}, none.callback(0)));

    c.close();
    s.app.stop();
    for (std::size_t i = 0; i < n; ++i) BOOST_CHECK_EQUAL(out.calls[i].load(), 1);
    BOOST_CHECK_EQUAL(none.calls[0].load(), 0);
}

BOOST_AUTO_TEST_CASE(pushes_dropped_with_a_full_send_queue_are_reported_not_written) {
    Server s({"ws.send_queue_bytes=65536"});
    hydra::WsConnectOptions opts;
    opts.target = "/quiet";
    opts.receive_buffer = 4096;
    WsClient sleeper = WsClient::connect("127.0.0.1", s.port, opts);  // never reads until the end
    std::string uuid = sleeper.response_header("X-Request-Id").value();
    BOOST_REQUIRE(s.wait_connections(1));

    // Pushes of 4 KiB until the queue overflows (64 MiB cannot fit in the socket buffers and a 64 KiB queue): the
    // frames not yet handed to the socket are reported at once.
    constexpr std::size_t n = 16000;
    std::string pad(4096, 'x');
    Outcomes out(n);
    std::size_t accepted = 0;
    for (std::size_t i = 0; i < n && out.not_written.load() == 0; ++i)
        if (s.ex().notify_confirmed(uuid, Json{{"i", i}, {"pad", pad}}, out.callback(i))) ++accepted;
    BOOST_REQUIRE(test::wait_until([&] { return out.not_written.load() > 0; }));

    // The client now reads: it finds the frames in order, then the close 1008. Only then can the frame that was
    // half written when the queue was dropped be completed.
    std::size_t received = 0;
    WsMessage m;
    for (;;) {
        m = sleeper.receive(5s);
        if (m.type != WsMessage::Type::text) break;
        BOOST_CHECK_EQUAL(Json::parse(m.data)["data"]["i"], received);
        ++received;
    }
    BOOST_CHECK(m.type == WsMessage::Type::close);
    BOOST_CHECK_EQUAL(m.close_code, 1008);

    BOOST_REQUIRE(out.wait_reported(accepted));
    std::size_t written = out.count(1);
    std::size_t dropped = out.count(2);
    BOOST_TEST_MESSAGE("accepted " << accepted << ", written " << written << ", dropped " << dropped);
    BOOST_CHECK_GT(written, 0u);
    BOOST_CHECK_EQUAL(written + dropped, accepted);
    BOOST_CHECK_EQUAL(received, written);  // exactly the frames reported written reached the client
    for (std::size_t i = 0; i < n; ++i)    // in order: every written push precedes every dropped one
        if (out.state[i].load() == 1) BOOST_CHECK_LT(i, written);

    s.app.stop();
    for (std::size_t i = 0; i < n; ++i) BOOST_CHECK_LE(out.calls[i].load(), 1);
    std::size_t calls = 0;
    for (const auto& k : out.calls) calls += static_cast<std::size_t>(k.load());
    BOOST_CHECK_EQUAL(calls, accepted);
}

BOOST_AUTO_TEST_SUITE_END()
