// The admin exchange endpoints (/v1/...) over HTTP reaching WS clients, and connection churn leaving no trace.
#include <boost/test/unit_test.hpp>

#include <thread>

#include <hydra/app.h>
#include <hydra/ws_client.h>

#include "services/admin/exchange_api.h"
#include "services/system/echo.h"
#include "support/http.h"
#include "support/temp.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

struct AdminFixture {
    hydra::App app;
    int ws_port = 0;
    std::string api;

    explicit AdminFixture(std::vector<std::string> sets = {}) {
        services::admin::register_routes(app);
        app.ws_endpoint("/echo", services::system::echo_endpoint());
        app.ws("/join", [](hydra::Context& ctx) {
            ctx.exchange().subscribe(ctx.uuid(), ctx.require("channel"));
            return Json{{"joined", ctx.param("channel")}};
        });
        // Clients name themselves (X-Request-Id) so the tests can address them.
        sets.insert(sets.begin(), {"api.address=127.0.0.1:0", "ws.address=127.0.0.1:0", "log.level=error",
                                   "ws.client_uuid=request_id", "queue.sqlite.path=" + test::temp_path("q.db")});
        app.start(hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin()));
        std::string ws = app.ws_address();
        ws_port = std::stoi(ws.substr(ws.rfind(':') + 1));
        api = app.api_address();
    }
    bool wait_connections(std::size_t n) {
        for (int i = 0; i < 1000 && app.exchange()->connections() != n; ++i) std::this_thread::sleep_for(5ms);
        return app.exchange()->connections() == n;
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(admin_api)

BOOST_AUTO_TEST_CASE(publish_notify_and_broadcast_over_http) {
    AdminFixture f;
    WsClient a = WsClient::connect("127.0.0.1", f.ws_port, "/", {{"X-Request-Id", "client-a"}});
    WsClient b = WsClient::connect("127.0.0.1", f.ws_port, "/echo");
    a.send_text(R"({"service":"/join","channel":"room:1002"})");
    BOOST_CHECK_EQUAL(Json::parse(a.receive(5s).data)["data"]["joined"], "room:1002");

    auto r = test::http(f.api, "POST", "/v1/mesh/publish", R"({"c":"room:1002","d":"{\"say\":\"hi \\\"there\\\"\"}"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["delivered"], 1);
    BOOST_CHECK_EQUAL(a.receive(5s).data, R"({"say":"hi \"there\""})");  // verbatim
    BOOST_CHECK(b.receive(200ms).type == WsMessage::Type::timeout);      // not subscribed

    r = test::http(f.api, "POST", "/v1/exchange/notify", R"({"uuid":"client-a","data":{"msg":"充值成功"}})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(Json::parse(a.receive(5s).data),
                      (Json{{"service", "notify"}, {"code", 200}, {"data", {{"msg", "充值成功"}}}}));
    r = test::http(f.api, "POST", "/v1/exchange/notify", R"({"uuid":"nobody","data":1})");
    BOOST_CHECK_EQUAL(r.status, 404);
    r = test::http(f.api, "POST", "/v1/exchange/notify", R"({"data":1})");
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK_EQUAL(r.json()["msg"], "missing parameter uuid");

    r = test::http(f.api, "POST", "/v1/exchange/broadcast", R"({"data":{"n":7}})");
    BOOST_CHECK_EQUAL(r.json()["connections"], 2);
    BOOST_CHECK_EQUAL(Json::parse(a.receive(5s).data)["data"]["n"], 7);
    BOOST_CHECK_EQUAL(Json::parse(b.receive(5s).data)["data"]["n"], 7);
}

BOOST_AUTO_TEST_CASE(admin_endpoints_can_be_switched_off) {
    AdminFixture f({"api.admin=false"});
    auto r = test::http(f.api, "POST", "/v1/exchange/broadcast", R"({"data":1})");
    BOOST_CHECK_EQUAL(r.status, 404);
}

BOOST_AUTO_TEST_CASE(connect_disconnect_churn_leaves_nothing_behind) {
    AdminFixture f({"ws.max_connections_per_ip=0"});  // 10000 connections from 127.0.0.1, closed abruptly or not
    hydra::Exchange& ex = *f.app.exchange();
    // Each cycle registers a user binding, a channel and a value, then leaves: abruptly, or with a close frame.
    for (int i = 0; i < 10000; ++i) {
        WsClient c = WsClient::connect("127.0.0.1", f.ws_port, "/", {{"X-Request-Id", "churn-" + std::to_string(i)}});
        std::string uuid = "churn-" + std::to_string(i);
        BOOST_REQUIRE(ex.bind("user-" + std::to_string(i % 10), uuid));
        BOOST_REQUIRE(ex.subscribe(uuid, "ch-" + std::to_string(i % 50)));
        BOOST_REQUIRE(ex.set(uuid, "k", i));
        if (i % 2 == 0) c.close();
    }
    BOOST_CHECK(f.wait_connections(0));
    BOOST_CHECK_EQUAL(ex.channels(), 0u);
    BOOST_CHECK_EQUAL(ex.notify_user("user-3", Json{}), 0u);
    BOOST_CHECK(!ex.get("churn-1", "k"));
}

BOOST_AUTO_TEST_SUITE_END()
