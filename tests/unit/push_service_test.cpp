// services/push: hydra's WS push demo with an in-memory exchange, a recording queue and a real SQLite file — what
// /msg/send checks before queueing and answers, where /msg/push delivers (a connection, a user's devices, the
// offline mailbox), and the mailbox delivered at login.
#include <boost/test/unit_test.hpp>

#include <optional>

#include <hydra/error.h>

#include "services/push/push_service.h"
#include "support/fakes.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Json;
namespace push = services::push;

namespace {

struct Demo {
    test::FakeExchange ex;
    test::FakeQueue queue;
    push::Service service;

    explicit Demo(std::size_t max_messages = 1000, std::size_t max_bytes = 10 << 20) {
        push::Settings s;
        s.database = test::temp_path("push.db");
        s.users = Json::parse(R"([{"uname":"alice","pwd":"alice-pw"},{"uname":"bob","pwd":"bob-pw"}])");
        s.kdf.n = 16;  // cheap hashes: the tests are not about the KDF
        s.throttle.max_failures = 3;
        s.mailbox.max_messages = max_messages;
        s.mailbox.max_bytes = max_bytes;
        s.window.bytes = 64 * 1024;
        service.start(s);
    }
    ~Demo() { service.stop(); }

    // POST /msg/send: the answer (a status and its JSON), given synchronously or through the reply.
    std::pair<int, Json> send(Json params) {
        auto ctx = test::context({.path = "/msg/send", .params = std::move(params), .exchange = &ex, .queue = &queue});
        std::optional<hydra::Result> answer;
        try {
            service.send(ctx, [&](hydra::Result r) { answer = std::move(r); });
        } catch (const hydra::Error& e) {
            return {e.code(), Json(e.what())};
        }
        BOOST_REQUIRE_MESSAGE(answer, "no answer");  // the fake queue reports before push_async returns
        if (answer->is_error()) return {answer->error_code(), Json(answer->text())};
        return {200, Json::parse(answer->json_body())};
    }
    // /msg/push (MQC) with a message as /msg/send queued it.
    void deliver(Json message) {
        auto ctx = test::context({.kind = hydra::ServerKind::mqc,
                                  .path = "/msg/push",
                                  .params = std::move(message),
                                  .exchange = &ex,
                                  .queue = &queue});
        BOOST_CHECK(!service.push(ctx).is_error());
    }
    // /member/login over WS.
    hydra::Result login(const std::string& uuid, const std::string& uname, const std::string& pwd) {
        auto ctx = test::context({.kind = hydra::ServerKind::ws,
                                  .path = "/member/login",
                                  .params = {{"uname", uname}, {"pwd", pwd}},
                                  .uuid = uuid,
                                  .exchange = &ex});
        try {
            return service.login(ctx);
        } catch (const hydra::Error& e) {
            return e;
        }
    }
    // The notifications `uuid` received (the login's reply aside), their "msg" fields in order.
    std::vector<std::string> notified(const std::string& uuid) {
        std::vector<std::string> msgs;
        for (const Json& m : ex.received_json(uuid))
            if (m.value("service", "") == "notify") msgs.push_back(m["data"]["msg"].get<std::string>());
        return msgs;
    }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(push_service)

BOOST_AUTO_TEST_CASE(send_checks_its_parameters_before_anything_is_queued) {
    Demo d;
    BOOST_CHECK_EQUAL(d.send({{"uname", "alice"}}).first, 400);                                         // no msg
    BOOST_CHECK_EQUAL(d.send({{"msg", "hi"}}).first, 400);                                              // nobody
    BOOST_CHECK_EQUAL(d.send({{"uname", "mallory"}, {"msg", "hi"}}).first, 404);                        // no such user
    BOOST_CHECK_EQUAL(d.send({{"uname", "alice"}, {"msg", std::string(200 * 1024, 'x')}}).first, 413);  // never fits
    BOOST_CHECK(d.queue.pushed().empty());
}

BOOST_AUTO_TEST_CASE(send_answers_once_the_message_is_queued_and_503_when_the_queue_fails) {
    Demo d;
    auto [status, answer] = d.send({{"uname", "alice"}, {"msg", "hello"}});
    BOOST_CHECK_EQUAL(status, 200);
    BOOST_CHECK_EQUAL(answer["code"], 0);
    auto pushed = d.queue.pushed();
    BOOST_REQUIRE_EQUAL(pushed.size(), 1U);
    BOOST_CHECK_EQUAL(pushed[0].queue, push::kQueue);
    BOOST_CHECK_EQUAL(Json::parse(pushed[0].payload), Json::parse(R"({"msg":"hello","uname":"alice"})"));
    BOOST_CHECK_EQUAL(pushed[0].headers.at("x-request-id"), "test-request");  // traced to the push

    // Written as JSON text: quotes and control characters escaped, invalid UTF-8 replaced (as everywhere in hydra)
    BOOST_CHECK_EQUAL(d.send({{"uuid", "c\"1"}, {"msg", "a\"b\\c\nd \xff"}}).first, 200);
    pushed = d.queue.pushed();
    BOOST_REQUIRE_EQUAL(pushed.size(), 2U);
    BOOST_CHECK_EQUAL(Json::parse(pushed[1].payload), Json::parse(R"({"msg":"a\"b\\c\nd \ufffd","uuid":"c\"1"})"));

    d.queue.failure = hydra::QueueError("queue: timed out", true);
    BOOST_CHECK_EQUAL(d.send({{"uuid", "c1"}, {"msg", "x"}}).first, 503);
}

BOOST_AUTO_TEST_CASE(push_to_a_uuid_reaches_that_connection_and_a_gone_one_is_dropped) {
    Demo d;
    d.ex.connect("c1");
    d.ex.connect("c2");
    d.deliver({{"uuid", "c1"}, {"msg", "for c1"}});
    d.deliver({{"uuid", "gone"}, {"msg", "lost on purpose"}});
    d.deliver({{"uuid", "c1"}, {"msg", "quoted \"\\ \u00e9"}});
    BOOST_CHECK(d.notified("c1") == (std::vector<std::string>{"for c1", "quoted \"\\ \u00e9"}));
    BOOST_CHECK(d.notified("c2").empty());
}

BOOST_AUTO_TEST_CASE(an_offline_users_messages_wait_and_arrive_at_login_in_order_then_live_ones) {
    Demo d;
    for (const char* msg : {"one", "two", "three"}) d.deliver({{"uname", "alice"}, {"msg", msg}});
    d.ex.connect("phone");
    BOOST_CHECK(!d.login("phone", "alice", "alice-pw").is_error());
    // Each stored message is deleted once its frame is written: the exchange confirms, the delivery goes on.
    BOOST_REQUIRE(test::wait_until([&] {
        d.ex.confirm_pending();
        return d.notified("phone").size() >= 3 && d.ex.user_of("phone");
    }));
    BOOST_CHECK((d.notified("phone") == std::vector<std::string>{"one", "two", "three"}));
    BOOST_CHECK_EQUAL(d.ex.user_of("phone").value_or(""), "alice");  // bound once the mailbox is empty

    d.deliver({{"uname", "alice"}, {"msg", "live"}});
    BOOST_CHECK_EQUAL(d.notified("phone").back(), "live");
    // Nothing is delivered twice at the next login.
    d.ex.connect("laptop");
    BOOST_CHECK(!d.login("laptop", "alice", "alice-pw").is_error());
    d.ex.confirm_pending();
    BOOST_CHECK(d.notified("laptop").empty());
}

BOOST_AUTO_TEST_CASE(a_full_mailbox_refuses_at_send_429_by_count_and_507_by_size) {
    {
        Demo d(2);
        d.deliver({{"uname", "bob"}, {"msg", "1"}});
        d.deliver({{"uname", "bob"}, {"msg", "2"}});
        BOOST_CHECK_EQUAL(d.send({{"uname", "bob"}, {"msg", "3"}}).first, 429);
        BOOST_CHECK_EQUAL(d.send({{"uname", "alice"}, {"msg", "3"}}).first, 200);  // per user
    }
    {
        Demo d(1000, 1024);
        d.deliver({{"uname", "bob"}, {"msg", std::string(900, 'x')}});
        BOOST_CHECK_EQUAL(d.send({{"uname", "bob"}, {"msg", std::string(200, 'y')}}).first, 507);
        BOOST_CHECK_EQUAL(d.send({{"uname", "bob"}, {"msg", "z"}}).first, 200);  // a small one still fits
    }
}

BOOST_AUTO_TEST_CASE(a_wrong_password_is_401_and_repeated_failures_are_429_even_with_the_right_one) {
    Demo d;
    d.ex.connect("c1");
    for (int i = 0; i < 3; ++i) BOOST_CHECK_EQUAL(d.login("c1", "alice", "guess").error_code(), 401);
    BOOST_CHECK_EQUAL(d.login("c1", "alice", "alice-pw").error_code(), 429);
    BOOST_CHECK(!d.ex.user_of("c1"));
    BOOST_CHECK(!d.ex.get("c1", "uname"));
    d.ex.connect("c2");                                                 // (c1 is blocked now, whoever it tries)
    BOOST_CHECK_EQUAL(d.login("c2", "nobody", "x").error_code(), 401);  // no such user: the same answer
}

BOOST_AUTO_TEST_SUITE_END()
