// services/admin: the operator's endpoints over the exchange (publish, notify, notify_user, broadcast), called with
// an in-memory exchange — what each delivers, what it answers, and the errors it raises.
#include <boost/test/unit_test.hpp>

#include <hydra/error.h>

#include "services/admin/exchange_api.h"
#include "support/fakes.h"

using hydra::Json;
namespace admin = services::admin;

namespace {

int status_of(const std::function<void()>& call) {
    try {
        call();
    } catch (const hydra::Error& e) {
        return e.code();
    }
    return 200;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(exchange_api)

BOOST_AUTO_TEST_CASE(publish_delivers_d_verbatim_to_the_channel_and_counts_the_subscribers) {
    test::FakeExchange ex;
    ex.connect("a");
    ex.connect("b");
    ex.connect("outsider");
    ex.subscribe("a", "room:1");
    ex.subscribe("b", "room:1");

    auto ctx =
        test::context({.path = "/v1/mesh/publish", .params = {{"c", "room:1"}, {"d", "hello"}}, .exchange = &ex});
    Json answer = admin::publish(ctx);
    BOOST_CHECK_EQUAL(answer["delivered"], 2);
    BOOST_CHECK_EQUAL(answer["code"], 0);
    BOOST_CHECK(ex.received("a") == std::vector<std::string>{"hello"});
    BOOST_CHECK(ex.received("b") == std::vector<std::string>{"hello"});
    BOOST_CHECK(ex.received("outsider").empty());

    // d that is not a string goes out as its JSON text.
    auto object =
        test::context({.path = "/v1/mesh/publish", .params = {{"c", "room:1"}, {"d", {{"n", 1}}}}, .exchange = &ex});
    admin::publish(object);
    BOOST_CHECK_EQUAL(ex.received("a").back(), R"({"n":1})");
}

BOOST_AUTO_TEST_CASE(missing_or_null_fields_are_400_and_nothing_is_delivered) {
    test::FakeExchange ex;
    ex.connect("a");
    ex.subscribe("a", "room:1");
    auto call = [&](auto handler, Json params) {
        return status_of([&] {
            auto ctx = test::context({.params = std::move(params), .exchange = &ex});
            handler(ctx);
        });
    };
    BOOST_CHECK_EQUAL(call(admin::publish, {{"d", "x"}}), 400);
    BOOST_CHECK_EQUAL(call(admin::publish, {{"c", "room:1"}}), 400);
    BOOST_CHECK_EQUAL(call(admin::publish, {{"c", "room:1"}, {"d", nullptr}}), 400);
    BOOST_CHECK_EQUAL(call(admin::notify, {{"data", 1}}), 400);
    BOOST_CHECK_EQUAL(call(admin::notify, {{"uuid", "a"}}), 400);
    BOOST_CHECK_EQUAL(call(admin::notify_user, {{"data", 1}}), 400);
    BOOST_CHECK_EQUAL(call(admin::broadcast, Json::object()), 400);
    BOOST_CHECK(ex.received("a").empty());
}

BOOST_AUTO_TEST_CASE(notify_reaches_one_connection_in_the_envelope_and_an_unknown_uuid_is_404) {
    test::FakeExchange ex;
    ex.connect("a");
    ex.connect("b");
    auto ctx = test::context({.params = {{"uuid", "a"}, {"data", {{"k", "v"}}}}, .exchange = &ex});
    BOOST_CHECK_EQUAL(admin::notify(ctx)["code"], 0);
    auto got = ex.received_json("a");
    BOOST_REQUIRE_EQUAL(got.size(), 1U);
    BOOST_CHECK_EQUAL(got[0]["service"], "notify");
    BOOST_CHECK_EQUAL(got[0]["data"]["k"], "v");
    BOOST_CHECK(ex.received("b").empty());

    BOOST_CHECK_EQUAL(status_of([&] {
                          auto gone = test::context({.params = {{"uuid", "gone"}, {"data", 1}}, .exchange = &ex});
                          admin::notify(gone);
                      }),
                      404);
}

BOOST_AUTO_TEST_CASE(notify_user_reaches_every_device_and_a_user_with_none_is_404) {
    test::FakeExchange ex;
    for (const char* uuid : {"phone", "laptop", "other"}) ex.connect(uuid);
    ex.bind("alice", "phone");
    ex.bind("alice", "laptop");
    ex.bind("bob", "other");
    auto ctx = test::context({.params = {{"user", "alice"}, {"data", "hi"}}, .exchange = &ex});
    BOOST_CHECK_EQUAL(admin::notify_user(ctx)["connections"], 2);
    BOOST_CHECK_EQUAL(ex.received("phone").size(), 1U);
    BOOST_CHECK_EQUAL(ex.received("laptop").size(), 1U);
    BOOST_CHECK(ex.received("other").empty());

    BOOST_CHECK_EQUAL(status_of([&] {
                          auto nobody = test::context({.params = {{"user", "carol"}, {"data", 1}}, .exchange = &ex});
                          admin::notify_user(nobody);
                      }),
                      404);
}

BOOST_AUTO_TEST_CASE(broadcast_reaches_every_connection_and_says_how_many) {
    test::FakeExchange ex;
    for (const char* uuid : {"a", "b", "c"}) ex.connect(uuid);
    auto ctx = test::context({.params = {{"data", {{"news", true}}}}, .exchange = &ex});
    BOOST_CHECK_EQUAL(admin::broadcast(ctx)["connections"], 3);
    for (const char* uuid : {"a", "b", "c"}) BOOST_CHECK_EQUAL(ex.received_json(uuid).at(0)["data"]["news"], true);
}

BOOST_AUTO_TEST_SUITE_END()
