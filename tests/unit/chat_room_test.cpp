// services/chat: the connmix-style chat room endpoint with an in-memory exchange — joining (one room at a time),
// sending to the room, quitting, and the errors that leave the connection open.
#include <boost/test/unit_test.hpp>

#include <map>

#include "services/chat/chat_room.h"
#include "support/fakes.h"

using hydra::Json;

namespace {

struct Room {
    test::FakeExchange ex;
    Room() {
        for (const char* uuid : {"a", "b", "c"}) ex.connect(uuid);
    }
    // One message from `uuid`: the endpoint's answer, returned or (join, quit) sent to the connection through the
    // exchange, which then is the last thing the connection received.
    Json message(const std::string& uuid, const std::string& body) {
        auto ctx = test::context(
            {.kind = hydra::ServerKind::ws, .path = "/chat", .body = body, .uuid = uuid, .exchange = &ex});
        const std::size_t before = ex.received(uuid).size();
        hydra::Result r = services::chat::on_message(ctx);
        if (r.kind() == hydra::Result::Kind::json) return r.value();
        BOOST_REQUIRE(r.kind() == hydra::Result::Kind::empty);
        const std::vector<Json> got = ex.received_json(uuid);
        BOOST_REQUIRE_EQUAL(got.size(), before + 1);
        answers[uuid] += 1;
        return got.back();
    }
    // What `uuid` received that was not an answer.
    std::vector<Json> room_messages(const std::string& uuid) const {
        std::vector<Json> out;
        for (const Json& m : ex.received_json(uuid))
            if (m != Json{{"status", "success"}}) out.push_back(m);
        return out;
    }
    std::map<std::string, int> answers;  // sent through the exchange
};

const Json kSuccess = Json::parse(R"({"status":"success"})");

}  // namespace

BOOST_AUTO_TEST_SUITE(chat_room)

BOOST_AUTO_TEST_CASE(a_message_reaches_everyone_in_the_room_the_sender_included_and_nobody_else) {
    Room r;
    BOOST_CHECK_EQUAL(r.message("a", R"({"op":"join","room_id":1002})"), kSuccess);
    BOOST_CHECK_EQUAL(r.message("b", R"({"op":"join","room_id":"1002"})"), kSuccess);  // number or string: one room
    BOOST_CHECK_EQUAL(r.message("c", R"({"op":"join","room_id":7})"), kSuccess);
    BOOST_CHECK_EQUAL(r.message("a", R"({"op":"send","msg":"Hello"})"), kSuccess);
    const Json expected = Json::parse(R"({"client_id":"a","msg":"Hello"})");
    BOOST_REQUIRE_EQUAL(r.room_messages("a").size(), 1U);
    BOOST_CHECK_EQUAL(r.room_messages("a")[0], expected);
    BOOST_REQUIRE_EQUAL(r.room_messages("b").size(), 1U);
    BOOST_CHECK_EQUAL(r.room_messages("b")[0], expected);
    BOOST_CHECK(r.room_messages("c").empty());
    BOOST_CHECK_EQUAL(r.answers["a"], 1);  // join's answer through the exchange; send's returned
}

BOOST_AUTO_TEST_CASE(joining_another_room_leaves_the_first_and_quit_leaves_it) {
    Room r;
    r.message("a", R"({"op":"join","room_id":1})");
    // Joining the room it is in: answered at once, never out of the room meanwhile.
    BOOST_CHECK_EQUAL(r.message("a", R"({"op":"join","room_id":"1"})"), kSuccess);
    BOOST_CHECK(r.ex.subscribers("room:1").count("a"));
    r.message("a", R"({"op":"join","room_id":2})");
    BOOST_CHECK(r.ex.subscribers("room:1").empty());
    BOOST_CHECK(r.ex.subscribers("room:2").count("a"));
    BOOST_CHECK_EQUAL(r.message("a", R"({"op":"quit"})"), kSuccess);
    BOOST_CHECK(r.ex.subscribers("room:2").empty());
    BOOST_CHECK_EQUAL(r.message("a", R"({"op":"quit"})")["status"], "error");  // not in a room any more
    BOOST_CHECK_EQUAL(r.message("a", R"({"op":"send","msg":"x"})")["status"], "error");
    BOOST_CHECK(r.room_messages("a").empty());
    BOOST_CHECK_EQUAL(r.answers["a"], 3);  // two joins and a quit; the errors are returned
    // After a quit (the room kept as null), a join works again: it answered 500 once.
    BOOST_CHECK_EQUAL(r.message("a", R"({"op":"join","room_id":3})"), kSuccess);
    BOOST_CHECK(r.ex.subscribers("room:3").count("a"));
}

BOOST_AUTO_TEST_CASE(bad_messages_are_errors_and_change_nothing) {
    Room r;
    r.message("a", R"({"op":"join","room_id":1})");
    for (const std::string& body :
         std::vector<std::string>{"not json", "[]", R"({"op":1})", R"({"room_id":1})", R"({"op":"dance"})",
                                  R"({"op":"join"})", R"({"op":"join","room_id":""})", R"({"op":"join","room_id":[1]})",
                                  R"({"op":"join","room_id":")" + std::string(65, 'x') + R"("})", R"({"op":"send"})",
                                  R"({"op":"send","msg":5})"}) {
        Json answer = r.message("a", body);
        BOOST_CHECK_MESSAGE(answer["status"] == "error" && answer["msg"].is_string(), body << " → " << answer);
    }
    BOOST_CHECK(r.ex.subscribers("room:1").count("a"));  // still in its room
    BOOST_CHECK_EQUAL(r.ex.channels(), 1U);
    BOOST_CHECK(r.room_messages("a").empty());
    BOOST_CHECK_EQUAL(r.answers["a"], 1);  // the join; no error went through the exchange
}

BOOST_AUTO_TEST_SUITE_END()
