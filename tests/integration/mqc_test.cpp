// The MQC server inside the App: API → queue → MQC handler → WSExchange → WebSocket client, on SQLite.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <fstream>
#include <thread>

#include <SQLiteCpp/SQLiteCpp.h>

#include <hydra/app.h>
#include <hydra/ws_client.h>

#include "support/http.h"
#include "support/sqlite.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Context;
using hydra::Json;
using hydra::WsClient;
using namespace std::chrono_literals;

namespace {

hydra::Config config(const std::string& db, std::vector<std::string> sets = {}) {
    sets.insert(sets.begin(),
                {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.address=127.0.0.1:0", "log.level=error",
                 "queue.sqlite.path=" + db, "queue.retry_backoff_ms=20", "queue.max_attempts=2"});
    return hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin());
}

int ws_port(const hydra::App& app) {
    std::string a = app.ws_address();
    return std::stoi(a.substr(a.rfind(':') + 1));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(mqc)

BOOST_AUTO_TEST_CASE(api_push_reaches_the_websocket_client_through_the_mqc_handler) {
    std::string db = test::temp_path("q.db");
    std::string seen_rid;
    std::mutex mu;
    hydra::App app{{.plat = "mall", .system = "wsserver"}};
    app.api("/msg/send", [](Context& ctx) {
        ctx.queue().push("mall:wsserver:msg", Json{{"uuid", ctx.require("uuid")}, {"msg", ctx.require("msg")}});
        return Json{{"code", 0}, {"msg", "success"}};
    });
    app.mqc("/msg/push",
            [&](Context& ctx) {
                {
                    std::lock_guard lock(mu);
                    seen_rid = ctx.request_id();
                }
                if (!ctx.exchange().notify(ctx.require("uuid"), Json{{"msg", ctx.require("msg")}}))
                    throw hydra::Error(404, "client not connected");
                return Json{};
            },
            {.queue = "mall:wsserver:msg", .concurrency = 4});
    hydra::WsEndpoint hold;
    hold.on_message = [](Context&) -> hydra::Result { return {}; };
    app.ws_endpoint("/push", hold);
    app.start(config(db, {"ws.client_uuid=request_id"}));  // the client names itself device-1

    WsClient client = WsClient::connect("127.0.0.1", ws_port(app), "/push", {{"X-Request-Id", "device-1"}});
    auto r = test::http(app.api_address(), "POST", "/msg/send", R"({"uuid":"device-1","msg":"充值成功"})",
                        "application/json", {{"X-Request-Id", "trace-77"}});
    BOOST_CHECK_EQUAL(r.status, 200);
    auto m = client.receive(5s);
    BOOST_REQUIRE(m.type == hydra::WsMessage::Type::text);
    BOOST_CHECK_EQUAL(Json::parse(m.data),
                      (Json{{"service", "notify"}, {"code", 200}, {"data", {{"msg", "充值成功"}}}}));
    {
        std::lock_guard lock(mu);
        BOOST_CHECK_EQUAL(seen_rid, "trace-77");  // the request id travels with the message
    }
    r = test::http(app.api_address(), "POST", "/msg/send", R"({"uuid":"device-1"})");
    BOOST_CHECK_EQUAL(r.status, 400);
    app.stop();
}

BOOST_AUTO_TEST_CASE(failing_handler_is_retried_then_dead_lettered) {
    std::string db = test::temp_path("q.db");
    std::atomic<int> calls{0};
    {
        hydra::App app;
        app.mqc("/always/fails",
                [&](Context&) -> hydra::Result {
                    ++calls;
                    return hydra::Error(500, "downstream unavailable");
                },
                {.queue = "t:fail"});
        app.start(config(db));
        app.queue()->push("t:fail", R"({"n":1})");
        BOOST_CHECK(test::wait_until([&] { return test::row_count(db, "dead_letters") > 0; }));
        app.stop();
    }
    BOOST_CHECK_EQUAL(calls.load(), 2);  // queue.max_attempts=2
    BOOST_CHECK_EQUAL(test::row_count(db, "dead_letters"), 1);
    BOOST_CHECK_EQUAL(test::sqlite_text(db, "SELECT error FROM dead_letters"), "downstream unavailable");
}

BOOST_AUTO_TEST_CASE(routes_can_be_mapped_to_queues_in_config) {
    std::string db = test::temp_path("q.db");
    std::atomic<int> got{0};
    hydra::App app;
    app.mqc("/mapped", [&](Context& ctx) {
        got += ctx.get<int>("n");
        return Json{};
    });
    app.start(config(db, {R"(mqc.routes=[{"route":"/mapped","queue":"cfg:q","concurrency":2}])"}));
    app.queue()->push("cfg:q", R"({"n":5})");
    BOOST_CHECK(test::wait_until([&] { return got.load() != 0; }));
    BOOST_CHECK_EQUAL(got.load(), 5);
    app.stop();

    hydra::App unmapped;
    unmapped.mqc("/orphan", [](Context&) { return Json{}; });
    BOOST_CHECK_THROW(unmapped.start(config(db)), hydra::ConfigError);

    hydra::App typo;
    typo.mqc("/real", [](Context&) { return Json{}; }, {.queue = "a:b"});
    try {
        typo.start(config(db, {R"(mqc.routes=[{"route":"/reel","queue":"a:b"}])"}));
        BOOST_FAIL("expected a config error");
    } catch (const hydra::ConfigError& e) {
        BOOST_CHECK_EQUAL(std::string(e.what()),
                          "test: mqc.routes[0].route: no MQC handler is registered for \"/reel\"");
    }
    BOOST_CHECK(!typo.running());
}

BOOST_AUTO_TEST_CASE(graceful_stop_finishes_in_flight_messages) {
    std::string db = test::temp_path("q.db");
    std::atomic<bool> started{false}, finished{false};
    hydra::App app;
    app.mqc("/slow",
            [&](Context&) {
                started = true;
                std::this_thread::sleep_for(500ms);  // keeps the message in flight during stop()
                finished = true;
                return Json{};
            },
            {.queue = "t:slow"});
    app.start(config(db));
    app.queue()->push("t:slow", "{}");
    BOOST_REQUIRE(test::wait_until([&] { return started.load(); }));
    app.stop();
    BOOST_CHECK(finished.load());
    BOOST_CHECK_EQUAL(test::row_count(db, "messages"), 0);  // acknowledged before the writer stopped
}

BOOST_AUTO_TEST_CASE(a_corrupt_queue_file_stops_the_start_with_a_clear_error) {
    std::string db = test::temp_path("bad.db");
    std::ofstream(db) << std::string(4096, 'z');
    hydra::App app;
    try {
        app.start(config(db));
        BOOST_FAIL("started on a corrupt database");
    } catch (const std::runtime_error& e) {
        BOOST_CHECK_MESSAGE(std::string(e.what()).find("queue: cannot open SQLite database " + db) == 0, e.what());
    }
    BOOST_CHECK(!app.running());
}

BOOST_AUTO_TEST_CASE(a_push_the_database_cannot_commit_in_time_is_503_not_a_hang) {
    std::string db = test::temp_path("q.db");
    hydra::App app;
    app.api("/push", [](Context& ctx) {
        ctx.queue().push("t:locked", Json{{"n", ctx.require("n")}});
        return Json{{"code", 0}};
    });
    app.api_async("/push_async", [](Context& ctx, hydra::Reply reply) {
        ctx.queue().push_async("t:locked", Json{{"n", ctx.require("n")}}, [reply](const hydra::Error* error) {
            if (error != nullptr) return reply(*error);
            reply(Json{{"code", 0}});
        });
    });
    app.start(config(db, {"queue.push_timeout_ms=300", "queue.sqlite.busy_timeout_ms=1000"}));
    auto post = [&](const std::string& path, int n) {
        return test::http(app.api_address(), "POST", path, Json{{"n", n}}.dump());
    };
    BOOST_REQUIRE_EQUAL(post("/push", 1).status, 200);

    // Another connection holds the write lock: the queue's writer cannot begin its transaction.
    SQLite::Database other(db, SQLite::OPEN_READWRITE);
    other.exec("BEGIN IMMEDIATE");
    auto t0 = std::chrono::steady_clock::now();
    auto r = post("/push", 2);
    BOOST_CHECK_EQUAL(r.status, 503);
    BOOST_CHECK_MESSAGE(r.body.find("queue: push to t:locked timed out after 300 ms") != std::string::npos, r.body);
    BOOST_CHECK_GE(std::chrono::steady_clock::now() - t0, 300ms);
    // push_async has no timer of its own on SQLite: it fails with its transaction, once the busy timeout gives up.
    r = post("/push_async", 3);
    BOOST_CHECK_EQUAL(r.status, 503);
    BOOST_CHECK_MESSAGE(r.body.find("database is locked") != std::string::npos, r.body);
    other.exec("ROLLBACK");

    // The server is still up and the queue works again once the lock is gone.
    BOOST_CHECK_EQUAL(post("/push", 4).status, 200);
    BOOST_CHECK_EQUAL(post("/push_async", 5).status, 200);
    app.stop();
    // Every push answered 200 is stored. (The failed ones are not: their transactions failed on the lock. A push
    // that only timed out could have been committed later: at-least-once.)
    SQLite::Database d(db, SQLite::OPEN_READONLY);
    SQLite::Statement q(d, "SELECT payload FROM messages ORDER BY id");
    std::vector<std::string> stored;
    while (q.executeStep()) stored.push_back(q.getColumn(0).getString());
    std::string all;
    for (const auto& p : stored) all += p + " ";
    BOOST_CHECK_EQUAL(all, R"({"n":"1"} {"n":"4"} {"n":"5"} )");
}

BOOST_AUTO_TEST_SUITE_END()
