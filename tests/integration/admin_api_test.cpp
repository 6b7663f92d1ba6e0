// The admin exchange endpoints (/v1/...) on the admin listener, over HTTP reaching WS clients.
#include <boost/test/unit_test.hpp>

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
    std::string admin;

    explicit AdminFixture(std::vector<std::string> sets = {}) {
        services::admin::register_routes(app);
        app.ws_endpoint("/echo", services::system::echo_endpoint());
        app.ws("/join", [](hydra::Context& ctx) {
            ctx.exchange().subscribe(ctx.uuid(), ctx.require("channel"));
            return Json{{"joined", ctx.param("channel")}};
        });
        app.ws("/as", [](hydra::Context& ctx) {
            ctx.exchange().bind(ctx.require("user"), ctx.uuid());
            return Json{{"user", ctx.param("user")}};
        });
        // Clients name themselves (X-Request-Id) so the tests can address them.
        sets.insert(sets.begin(),
                    {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.address=127.0.0.1:0",
                     "log.level=error", "ws.client_uuid=request_id", "queue.sqlite.path=" + test::temp_path("q.db")});
        app.start(hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin()));
        std::string ws = app.ws_address();
        ws_port = std::stoi(ws.substr(ws.rfind(':') + 1));
        api = app.api_address();
        admin = app.admin_address();
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

    auto r =
        test::http(f.admin, "POST", "/v1/mesh/publish", R"({"c":"room:1002","d":"{\"say\":\"hi \\\"there\\\"\"}"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["delivered"], 1);
    BOOST_CHECK_EQUAL(a.receive(5s).data, R"({"say":"hi \"there\""})");  // verbatim
    BOOST_CHECK(b.receive(200ms).type == WsMessage::Type::timeout);      // not subscribed

    r = test::http(f.admin, "POST", "/v1/exchange/notify", R"({"uuid":"client-a","data":{"msg":"充值成功"}})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(Json::parse(a.receive(5s).data),
                      (Json{{"service", "notify"}, {"code", 200}, {"data", {{"msg", "充值成功"}}}}));
    r = test::http(f.admin, "POST", "/v1/exchange/notify", R"({"uuid":"nobody","data":1})");
    BOOST_CHECK_EQUAL(r.status, 404);
    r = test::http(f.admin, "POST", "/v1/exchange/notify", R"({"data":1})");
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK_EQUAL(r.json()["msg"], "missing parameter uuid");

    r = test::http(f.admin, "POST", "/v1/exchange/broadcast", R"({"data":{"n":7}})");
    BOOST_CHECK_EQUAL(r.json()["connections"], 2);
    BOOST_CHECK_EQUAL(Json::parse(a.receive(5s).data)["data"]["n"], 7);
    BOOST_CHECK_EQUAL(Json::parse(b.receive(5s).data)["data"]["n"], 7);
}

BOOST_AUTO_TEST_CASE(notify_user_reaches_every_device_of_the_user) {
    AdminFixture f;
    WsClient phone = WsClient::connect("127.0.0.1", f.ws_port, "/");
    WsClient laptop = WsClient::connect("127.0.0.1", f.ws_port, "/");
    WsClient other = WsClient::connect("127.0.0.1", f.ws_port, "/");
    for (auto* c : {&phone, &laptop}) {
        c->send_text(R"({"service":"/as","user":"alice"})");
        BOOST_CHECK_EQUAL(Json::parse(c->receive(5s).data)["data"]["user"], "alice");
    }
    other.send_text(R"({"service":"/as","user":"bob"})");
    BOOST_CHECK_EQUAL(Json::parse(other.receive(5s).data)["data"]["user"], "bob");

    auto r = test::http(f.admin, "POST", "/v1/exchange/notify_user", R"({"user":"alice","data":{"msg":"hi"}})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["connections"], 2);
    const Json expected{{"service", "notify"}, {"code", 200}, {"data", {{"msg", "hi"}}}};
    BOOST_CHECK_EQUAL(Json::parse(phone.receive(5s).data), expected);
    BOOST_CHECK_EQUAL(Json::parse(laptop.receive(5s).data), expected);
    BOOST_CHECK(other.receive(200ms).type == WsMessage::Type::timeout);  // another user

    r = test::http(f.admin, "POST", "/v1/exchange/notify_user", R"({"user":"carol","data":1})");
    BOOST_CHECK_EQUAL(r.status, 404);
    r = test::http(f.admin, "POST", "/v1/exchange/notify_user", R"({"user":"alice"})");
    BOOST_CHECK_EQUAL(r.status, 400);
    BOOST_CHECK_EQUAL(r.json()["msg"], "missing parameter data");
}

BOOST_AUTO_TEST_CASE(admin_listener_can_be_switched_off) {
    AdminFixture f({"admin.enabled=false"});
    BOOST_CHECK_EQUAL(f.admin, "");
    // Its routes are not served by the API listener instead.
    auto r = test::http(f.api, "POST", "/v1/exchange/broadcast", R"({"data":1})");
    BOOST_CHECK_EQUAL(r.status, 404);
}

BOOST_AUTO_TEST_SUITE_END()
