// services/message_center: the connmix-style /message-center endpoint with an in-memory exchange and an auth call
// the test controls (no auth API, no sockets): auth, @user subscriptions, messages that wait for an auth in flight,
// the bound on auths in flight, and a connection that closes mid-auth.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>

#include "services/message_center/message_center.h"
#include "support/fakes.h"
#include "support/wait.h"

using hydra::Json;
namespace mc = services::message_center;

namespace {

// One service and its connections; `auth` answers "uid-<token>", throws for token "bad", and holds callers at the
// gate while `hold` is set.
struct Center {
    test::FakeExchange ex;
    test::Gate gate;
    std::atomic<bool> hold{false};
    std::atomic<int> calls{0};
    std::shared_ptr<mc::Settings> settings = std::make_shared<mc::Settings>();
    std::unique_ptr<mc::Service> service;

    explicit Center(int threads = 2, std::size_t max_pending = 256) {
        settings->auth_threads = threads;
        settings->max_pending_auth = max_pending;
        service = std::make_unique<mc::Service>(settings, [this](const mc::Settings&, const std::string& token) {
            ++calls;
            if (hold) gate.pass();
            if (token == "bad") throw std::runtime_error("auth API answered 401");
            return "uid-" + token;
        });
    }
    ~Center() {
        gate.open();
        service->stop();
    }

    // A message from `uuid`: the answer it got at once, or null when the answer comes later (from the pool). Every
    // answer goes through the exchange.
    Json message(const std::string& uuid, const std::string& body) {
        auto ctx = test::context(
            {.kind = hydra::ServerKind::ws, .path = "/message-center", .body = body, .uuid = uuid, .exchange = &ex});
        const std::size_t before = ex.received_from_this_thread(uuid).size();
        service->on_message(ctx);
        auto after = ex.received_from_this_thread(uuid);
        BOOST_REQUIRE_LE(after.size(), before + 1);
        if (after.size() == before) return nullptr;
        return Json::parse(after.back());
    }
    void close(const std::string& uuid) {
        auto ctx =
            test::context({.kind = hydra::ServerKind::ws, .path = "/message-center", .uuid = uuid, .exchange = &ex});
        ex.disconnect(uuid);
        service->on_close(ctx);
    }
    bool received(const std::string& uuid, std::size_t n) {
        return test::wait_until([&] { return ex.received(uuid).size() >= n; });
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(message_center)

BOOST_AUTO_TEST_CASE(an_authenticated_connection_subscribes_to_its_users_channel) {
    Center c;
    c.ex.connect("a");
    BOOST_CHECK(c.message("a", R"({"op":"auth","token":"1001"})").is_null());  // answered by the pool
    BOOST_REQUIRE(c.received("a", 1));
    BOOST_CHECK_EQUAL(c.ex.received_json("a")[0], Json::parse(R"({"result":true})"));
    BOOST_CHECK_EQUAL(c.ex.get("a", "uid").value_or(nullptr), "uid-1001");

    BOOST_CHECK_EQUAL(c.message("a", R"({"op":"subscribe","channel":"@user"})"), Json::parse(R"({"result":true})"));
    BOOST_CHECK(c.ex.subscribers("user:uid-1001").count("a"));
    BOOST_CHECK_EQUAL(c.message("a", R"({"op":"unsubscribe","channel":"@user"})"), Json::parse(R"({"result":true})"));
    BOOST_CHECK(c.ex.subscribers("user:uid-1001").empty());
}

BOOST_AUTO_TEST_CASE(without_a_successful_auth_subscribing_is_not_auth) {
    Center c;
    c.ex.connect("a");
    BOOST_CHECK_EQUAL(c.message("a", R"({"op":"subscribe","channel":"@user"})")["code"], 1);
    c.message("a", R"({"op":"auth","token":"bad"})");
    BOOST_REQUIRE(c.received("a", 2));  // the refused subscribe's answer, then the auth's
    BOOST_CHECK_EQUAL(c.ex.received_json("a")[1]["code"], 1);
    BOOST_CHECK(!c.ex.get("a", "uid"));
    Json refused = c.message("a", R"({"op":"subscribe","channel":"@user"})");
    BOOST_CHECK_EQUAL(refused["code"], 1);
    BOOST_CHECK_EQUAL(refused["msg"], "Not Auth");
    BOOST_CHECK_EQUAL(c.ex.channels(), 0U);
}

BOOST_AUTO_TEST_CASE(malformed_messages_are_code_2_and_the_connection_goes_on) {
    Center c;
    c.ex.connect("a");
    for (const std::string body : {"not json", "[]", R"({"op":7})", R"({"op":"dance"})",
                                   R"({"op":"subscribe","channel":"room:1"})", R"({"op":"subscribe"})"})
        BOOST_CHECK_MESSAGE(c.message("a", body)["code"] == 2, body);
    BOOST_CHECK_EQUAL(c.message("a", R"({"op":"auth"})")["code"], 1);  // no token
    BOOST_CHECK_EQUAL(c.calls, 0);
}

BOOST_AUTO_TEST_CASE(messages_sent_during_an_auth_wait_and_are_answered_after_it_in_order) {
    Center c;
    c.ex.connect("a");
    c.hold = true;
    c.message("a", R"({"op":"auth","token":"7"})");
    BOOST_REQUIRE(test::wait_until([&] { return c.gate.entered() == 1; }));
    // While the auth API has not answered, the subscription waits (a subscribe now would be "Not Auth").
    BOOST_CHECK(c.message("a", R"({"op":"subscribe","channel":"@user"})").is_null());
    BOOST_CHECK(c.message("a", R"({"op":"dance"})").is_null());
    BOOST_CHECK(c.ex.received("a").empty());
    c.gate.open();
    BOOST_REQUIRE(c.received("a", 3));
    auto got = c.ex.received_json("a");
    BOOST_CHECK_EQUAL(got[0], Json::parse(R"({"result":true})"));  // the auth
    BOOST_CHECK_EQUAL(got[1], Json::parse(R"({"result":true})"));  // the subscription, after it
    BOOST_CHECK_EQUAL(got[2]["code"], 2);                          // the unknown op, last
    BOOST_CHECK(c.ex.subscribers("user:uid-7").count("a"));
}

BOOST_AUTO_TEST_CASE(a_connection_may_queue_only_so_many_messages_behind_its_auth) {
    Center c;
    c.ex.connect("a");
    c.hold = true;
    c.message("a", R"({"op":"auth","token":"7"})");
    for (std::size_t i = 0; i < mc::kMaxWaiting; ++i)
        BOOST_CHECK(c.message("a", R"({"op":"subscribe","channel":"@user"})").is_null());
    BOOST_CHECK_EQUAL(c.message("a", R"({"op":"subscribe","channel":"@user"})")["code"], 2);
    c.gate.open();
    // The refusal, the auth's answer, then one answer for each message that waited.
    BOOST_CHECK(c.received("a", 2 + mc::kMaxWaiting));
}

BOOST_AUTO_TEST_CASE(auths_in_flight_are_bounded_and_the_rest_told_to_retry) {
    Center c(1, 2);
    for (const char* uuid : {"a", "b", "c"}) c.ex.connect(uuid);
    c.hold = true;
    BOOST_CHECK(c.message("a", R"({"op":"auth","token":"1"})").is_null());
    BOOST_CHECK(c.message("b", R"({"op":"auth","token":"2"})").is_null());
    Json busy = c.message("c", R"({"op":"auth","token":"3"})");
    BOOST_CHECK_EQUAL(busy["code"], 1);
    BOOST_CHECK_NE(busy["msg"].get<std::string>().find("busy"), std::string::npos);
    c.gate.open();
    BOOST_CHECK(c.received("a", 1) && c.received("b", 1));
    BOOST_CHECK_EQUAL(c.calls, 2);
}

BOOST_AUTO_TEST_CASE(a_connection_that_closes_during_its_auth_gets_nothing_and_a_queued_auth_is_never_called) {
    Center c(1);
    for (const char* uuid : {"a", "b"}) c.ex.connect(uuid);
    c.hold = true;
    c.message("a", R"({"op":"auth","token":"1"})");  // held in the auth call
    BOOST_REQUIRE(test::wait_until([&] { return c.gate.entered() == 1; }));
    c.message("b", R"({"op":"auth","token":"2"})");  // queued behind it (one thread)
    c.close("a");
    c.close("b");
    c.ex.connect("a");  // the same uuid again, a new connection: the old auth's answer is not for it
    c.gate.open();
    // The pool is idle again once the next auth (a's new one) is answered: b's was never called.
    c.hold = false;
    c.message("a", R"({"op":"auth","token":"3"})");
    BOOST_REQUIRE(c.received("a", 1));
    BOOST_CHECK_EQUAL(c.ex.received("a").size(), 1U);
    BOOST_CHECK_EQUAL(c.ex.get("a", "uid").value_or(nullptr), "uid-3");
    BOOST_CHECK(c.ex.received("b").empty());
    BOOST_CHECK_EQUAL(c.calls, 2);  // a's first (held) and a's second; never b's
}

BOOST_AUTO_TEST_SUITE_END()
