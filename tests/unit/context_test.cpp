#include <boost/test/unit_test.hpp>

#include <hydra/detail/handlers.h>
#include <hydra/handler.h>
#include <hydra/testing.h>

#include "core/request_id.h"

using hydra::Context;
using hydra::Json;

namespace {
Context make(Json params, std::map<std::string, std::string> headers = {}) {
    Context::Init init;
    init.params = std::move(params);
    init.headers = std::make_shared<hydra::Headers>(std::move(headers));
    init.request_id = "rid-1";
    return hydra::testing::make_context(std::move(init));
}
}  // namespace

BOOST_AUTO_TEST_SUITE(context)

BOOST_AUTO_TEST_CASE(params_as_strings_and_typed) {
    Context ctx = make({{"s", "x"}, {"n", 5}, {"ns", "12"}, {"b", true}, {"nil", nullptr}});
    BOOST_CHECK_EQUAL(ctx.param("s"), "x");
    BOOST_CHECK_EQUAL(ctx.param("n"), "5");
    BOOST_CHECK_EQUAL(ctx.param("b"), "true");
    BOOST_CHECK_EQUAL(ctx.param("nil", "dflt"), "dflt");
    BOOST_CHECK_EQUAL(ctx.param("absent", "dflt"), "dflt");
    BOOST_CHECK_EQUAL(ctx.get<int>("n"), 5);
    BOOST_CHECK_EQUAL(ctx.get<long>("ns"), 12);
    BOOST_CHECK_EQUAL(ctx.get<bool>("b"), true);
    BOOST_CHECK(ctx.has("s"));
    BOOST_CHECK(!ctx.has("nil"));
}

BOOST_AUTO_TEST_CASE(missing_and_invalid_params_are_400) {
    Context ctx = make({{"s", "x"}, {"empty", ""}});
    try {
        ctx.require("empty");
        BOOST_FAIL("expected an error");
    } catch (const hydra::Error& e) {
        BOOST_CHECK_EQUAL(e.code(), 400);
        BOOST_CHECK_EQUAL(std::string(e.what()), "missing parameter empty");
    }
    BOOST_CHECK_THROW(ctx.get<int>("s"), hydra::Error);
    BOOST_CHECK_THROW(ctx.get<int>("absent"), hydra::Error);
}

BOOST_AUTO_TEST_CASE(no_params_and_no_locals) {
    // A message without params (a raw WS message, an MQC payload that is not an object) leaves Init::params null:
    // it reads as an empty object.
    Context ctx = make(Json());
    BOOST_CHECK(ctx.params().is_object());
    BOOST_CHECK(ctx.params().empty());
    BOOST_CHECK(!ctx.has("a"));
    BOOST_CHECK_EQUAL(ctx.param("a", "dflt"), "dflt");
    BOOST_CHECK_THROW(ctx.get<int>("a"), hydra::Error);
    Context non_object = make(Json::array({1, 2}));
    BOOST_CHECK(non_object.params().empty());
    BOOST_CHECK(!non_object.has("0"));
    // locals: null until set, then an object.
    BOOST_CHECK(!ctx.locals().contains("user"));
    ctx.locals()["user"] = "alice";
    BOOST_CHECK(ctx.locals().is_object());
    BOOST_CHECK_EQUAL(ctx.locals()["user"], "alice");
}

BOOST_AUTO_TEST_CASE(headers_are_case_insensitive) {
    Context ctx = make(Json::object(), {{"x-token", "t"}});
    BOOST_CHECK_EQUAL(ctx.header("X-Token").value(), "t");
    BOOST_CHECK(!ctx.header("X-Other"));
}

BOOST_AUTO_TEST_CASE(queue_and_exchange_absent_are_503) {
    Context ctx = make(Json::object());
    try {
        ctx.queue().push("a:b", std::string_view("x"));
        BOOST_FAIL("expected an error");
    } catch (const hydra::Error& e) {
        BOOST_CHECK_EQUAL(e.code(), 503);
    }
    BOOST_CHECK_THROW(ctx.exchange(), hydra::Error);
}

struct RecordingQueue : hydra::Queue {
    std::string last_queue, last_payload;
    hydra::Headers last_headers;
    void push(std::string_view q, std::string_view p, const hydra::Headers& h, std::chrono::milliseconds) override {
        last_queue = q;
        last_payload = p;
        last_headers = h;
    }
    std::string backend() const override { return "recording"; }
};

BOOST_AUTO_TEST_CASE(pushes_carry_the_request_id) {
    RecordingQueue q;
    Context::Init init;
    init.request_id = "rid-7";
    init.queue = &q;
    Context ctx = hydra::testing::make_context(std::move(init));
    ctx.queue().push("mall:wsserver:msg", Json{{"uuid", "u"}});
    BOOST_CHECK_EQUAL(q.last_queue, "mall:wsserver:msg");
    BOOST_CHECK_EQUAL(Json::parse(q.last_payload)["uuid"], "u");
    BOOST_CHECK_EQUAL(q.last_headers["x-request-id"], "rid-7");

    // A batch carries it too (the default push_batch of a user-written Queue pushes one by one).
    std::vector<std::string> batch = {"one", "two"};
    ctx.queue().push_batch("mall:wsserver:batch", batch);
    BOOST_CHECK_EQUAL(q.last_queue, "mall:wsserver:batch");
    BOOST_CHECK_EQUAL(q.last_payload, "two");
    BOOST_CHECK_EQUAL(q.last_headers["x-request-id"], "rid-7");
}

BOOST_AUTO_TEST_CASE(handler_shapes) {
    struct Obj {
        Json handle(Context&) { return 1; }
    };
    struct Rest {
        std::string get(Context&) { return "g"; }
        hydra::Result del(Context&) { return hydra::Error(409, "busy"); }
    };
    BOOST_CHECK_EQUAL(hydra::detail::make_handlers(Obj{}).count(""), 1u);
    auto rest = hydra::detail::make_handlers(Rest{});
    BOOST_CHECK_EQUAL(rest.size(), 2u);
    Context ctx = make(Json::object());
    BOOST_CHECK_EQUAL(rest.at("GET")(ctx).text(), "g");
    BOOST_CHECK_EQUAL(rest.at("DELETE")(ctx).error_code(), 409);
    auto shared = std::make_shared<Obj>();
    BOOST_CHECK_EQUAL(hydra::detail::make_handler(shared)(ctx).value(), 1);
    BOOST_CHECK_THROW(hydra::detail::make_handler(Rest{}), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(request_ids) {
    BOOST_CHECK(hydra::valid_request_id("abc-123_x.y:z"));
    BOOST_CHECK(!hydra::valid_request_id(""));
    BOOST_CHECK(!hydra::valid_request_id("has space"));
    BOOST_CHECK(!hydra::valid_request_id(std::string(65, 'a')));
    std::string a = hydra::generate_uuid(), b = hydra::generate_uuid();
    BOOST_CHECK_NE(a, b);
    BOOST_CHECK_EQUAL(a.size(), 36u);
    BOOST_CHECK_EQUAL(a[14], '4');
    BOOST_CHECK(hydra::valid_request_id(a));
}

BOOST_AUTO_TEST_SUITE_END()
