// The demo services end to end on one host (embedded SQLite): the real `hydra` binary, driven over real sockets
// by the project's WebSocket client, python3-websockets and HTTP.
#include <boost/test/unit_test.hpp>

#include <atomic>
#include <thread>

#include <hydra/json.h>
#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http.h"
#include "support/process.h"
#include "support/sqlite.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;
using test::login;
using test::next_json;

BOOST_AUTO_TEST_SUITE(services_end_to_end)

BOOST_AUTO_TEST_CASE(push_demo_login_send_push_offline_and_broadcast) {
    const std::string push_db = test::temp_path("push.db");
    test::Host host({"--set", "services.push.database=" + push_db});
    WsClient phone = host.connect("/");
    WsClient laptop = host.connect("/");

    Json r = login(phone, "alice", "wrong");
    BOOST_CHECK_EQUAL(r, (Json{{"service", "/member/login"}, {"code", 401}, {"err", "wrong user name or password"}}));
    r = login(phone, "alice", "alice-pw");
    BOOST_CHECK_EQUAL(r["code"], 200);
    std::string phone_uuid = r["data"]["uuid"];
    BOOST_CHECK_EQUAL(phone_uuid, phone.response_header("X-Request-Id").value());
    BOOST_CHECK_EQUAL(login(laptop, "alice", "alice-pw")["code"], 200);

    // to the user: every device
    auto s = test::http(host.api, "POST", "/msg/send", R"({"uname":"alice","msg":"充值成功"})");
    BOOST_CHECK_EQUAL(s.status, 200);
    BOOST_CHECK_EQUAL(s.json(), (Json{{"code", 0}, {"msg", "success"}}));
    for (WsClient* c : {&phone, &laptop}) {
        Json n = next_json(*c);
        BOOST_CHECK_EQUAL(n["service"], "notify");
        BOOST_CHECK_EQUAL(n["code"], 200);
        BOOST_CHECK_EQUAL(n["data"]["msg"], "充值成功");
    }
    // to one connection
    s = test::http(host.api, "POST", "/msg/send", Json{{"uuid", phone_uuid}, {"msg", "only the phone"}}.dump());
    BOOST_CHECK_EQUAL(s.status, 200);
    BOOST_CHECK_EQUAL(next_json(phone)["data"]["msg"], "only the phone");
    BOOST_CHECK(laptop.receive(300ms).type == WsMessage::Type::timeout);

    // bad requests
    BOOST_CHECK_EQUAL(test::http(host.api, "POST", "/msg/send", R"({"uname":"alice"})").status, 400);
    BOOST_CHECK_EQUAL(test::http(host.api, "POST", "/msg/send", R"({"msg":"to nobody"})").status, 400);
    BOOST_CHECK_EQUAL(test::http(host.api, "POST", "/msg/send", R"({"uname":)").status, 400);

    // bob is offline: kept, then delivered at login, oldest first, after the login reply
    for (const char* m : {"first", "second"})
        BOOST_CHECK_EQUAL(test::http(host.api, "POST", "/msg/send", Json{{"uname", "bob"}, {"msg", m}}.dump()).status,
                          200);
    // Both stored while bob is away (not still queued, so the login below takes the mailbox path).
    BOOST_REQUIRE(test::wait_until([&] { return test::mailbox(push_db, "bob") == 2; }));
    WsClient bob = host.connect("/");
    BOOST_CHECK_EQUAL(login(bob, "bob", "bob-pw")["code"], 200);
    BOOST_CHECK_EQUAL(next_json(bob)["data"]["msg"], "first");
    BOOST_CHECK_EQUAL(next_json(bob)["data"]["msg"], "second");

    // broadcast
    s = test::http(host.api, "POST", "/msg/broadcast", R"({"msg":"maintenance at 22:00"})");
    BOOST_CHECK_EQUAL(s.status, 200);
    for (WsClient* c : {&phone, &laptop, &bob}) BOOST_CHECK_EQUAL(next_json(*c)["data"]["msg"], "maintenance at 22:00");
}

BOOST_AUTO_TEST_CASE(chat_rooms) {
    test::Host host;
    WsClient a = host.connect("/chat");
    WsClient b = host.connect("/chat");
    WsClient c = host.connect("/chat");
    std::string a_id = a.response_header("X-Request-Id").value();
    const Json ok = {{"status", "success"}};

    // errors keep the connection
    a.send_text(R"({"op":"send","msg":"nobody hears"})");
    BOOST_CHECK_EQUAL(next_json(a)["status"], "error");
    a.send_text("not json");
    BOOST_CHECK_EQUAL(next_json(a)["status"], "error");
    a.send_text(R"({"op":"join"})");
    BOOST_CHECK_EQUAL(next_json(a)["status"], "error");
    a.send_text(R"({"op":"dance"})");
    BOOST_CHECK_EQUAL(next_json(a)["status"], "error");
    a.send_text(R"({"op":"quit"})");
    BOOST_CHECK_EQUAL(next_json(a)["status"], "error");

    for (WsClient* x : {&a, &b}) {
        x->send_text(R"({"op":"join","room_id":1002})");
        BOOST_CHECK_EQUAL(next_json(*x), ok);
    }
    c.send_text(R"({"op":"join","room_id":1003})");
    BOOST_CHECK_EQUAL(next_json(c), ok);

    std::string tricky = "Hello,\"World\"! \\ 你好";
    a.send_text(Json{{"op", "send"}, {"msg", tricky}}.dump());
    BOOST_CHECK_EQUAL(next_json(a), ok);
    Json expected = {{"client_id", a_id}, {"msg", tricky}};
    BOOST_CHECK_EQUAL(next_json(a), expected);  // the sender is in the room too
    BOOST_CHECK_EQUAL(next_json(b), expected);
    BOOST_CHECK(c.receive(300ms).type == WsMessage::Type::timeout);  // another room

    // one room at a time: b moves to 1003
    b.send_text(R"({"op":"join","room_id":1003})");
    BOOST_CHECK_EQUAL(next_json(b), ok);
    a.send_text(R"({"op":"send","msg":"still here?"})");
    BOOST_CHECK_EQUAL(next_json(a), ok);
    BOOST_CHECK_EQUAL(next_json(a)["msg"], "still here?");
    BOOST_CHECK(b.receive(300ms).type == WsMessage::Type::timeout);

    // quit: no more room messages
    c.send_text(R"({"op":"quit"})");
    BOOST_CHECK_EQUAL(next_json(c), ok);
    b.send_text(R"({"op":"send","msg":"anyone?"})");
    BOOST_CHECK_EQUAL(next_json(b), ok);
    BOOST_CHECK_EQUAL(next_json(b)["msg"], "anyone?");
    BOOST_CHECK(c.receive(300ms).type == WsMessage::Type::timeout);

    // the publish API reaches a room verbatim
    auto r = test::http(host.admin, "POST", "/v1/mesh/publish",
                        R"({"c":"room:1002","d":"{\"type\":\"broadcast\",\"msg\":\"Hello,World!\"}"})");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(a.receive(5s).data, R"({"type":"broadcast","msg":"Hello,World!"})");
}

// A room's messages and a member's join/quit answers, while another thread publishes to the room without pause: a
// message published before the quit took effect comes before its answer, none after it; the join's answer comes
// before the room's first message. (Held behind the answer, an earlier message would look like one of a room the
// client has left.)
BOOST_AUTO_TEST_CASE(chat_answers_are_ordered_with_the_rooms_messages) {
    test::Host host;
    WsClient a = host.connect("/chat");
    const Json ok = {{"status", "success"}};
    std::atomic<bool> stop{false};
    std::atomic<int> published{0};
    struct Joined {  // the publisher stops and is joined however the test ends
        std::atomic<bool>& stop;
        std::thread thread;
        ~Joined() {
            stop = true;
            if (thread.joinable()) thread.join();
        }
    } publisher{stop, std::thread([&] {
                    Poco::Net::HTTPClientSession session{Poco::Net::SocketAddress(host.admin)};
                    session.setTimeout(Poco::Timespan(10, 0));
                    try {
                        for (int n = 0; !stop; ++n) {
                            auto r = test::http_on(session, "POST", "/v1/mesh/publish",
                                                   Json{{"c", "room:r1"}, {"d", Json{{"n", n}}.dump()}}.dump());
                            if (r.status == 200) ++published;
                        }
                    } catch (const std::exception&) {  // the host went away: the checks below tell
                    }
                })};
    int after_quit = 0, before_join = 0, rounds_with_messages = 0;
    for (int round = 0; round < 40; ++round) {  // (a join after a quit failed with a 500 once)
        a.send_text(R"({"op":"join","room_id":"r1"})");
        Json m = next_json(a);
        if (m != ok) ++before_join;  // a room message ahead of the join's answer
        while (m != ok) m = next_json(a);
        // Room messages until the quit's answer, then none.
        std::this_thread::sleep_for(2ms);
        a.send_text(R"({"op":"quit"})");
        int seen = 0;
        for (m = next_json(a); m != ok; m = next_json(a)) ++seen;
        if (seen > 0) ++rounds_with_messages;
        for (WsMessage late = a.receive(20ms); late.type == WsMessage::Type::text; late = a.receive(20ms)) ++after_quit;
    }
    stop = true;
    publisher.thread.join();
    BOOST_TEST_MESSAGE(published.load() << " published; " << rounds_with_messages << " of 40 rounds saw room messages");
    BOOST_CHECK_GT(rounds_with_messages, 0);  // the room was busy while the client was in it
    BOOST_CHECK_EQUAL(before_join, 0);
    BOOST_CHECK_EQUAL(after_quit, 0);
}

BOOST_AUTO_TEST_CASE(message_center) {
    test::Host host;
    WsClient c = host.connect("/message-center");
    c.send_text(R"({"op":"subscribe","channel":"@user"})");
    BOOST_CHECK_EQUAL(next_json(c), (Json{{"code", 1}, {"msg", "Not Auth"}}));
    c.send_text(R"({"op":"auth","token":"stolen"})");
    BOOST_CHECK_EQUAL(next_json(c), (Json{{"code", 1}, {"msg", "auth failed"}}));  // why: only in the log
    c.send_text(R"({"op":"auth","token":"bad-body"})");
    BOOST_CHECK_EQUAL(next_json(c)["code"], 1);
    c.send_text(R"({"op":"auth","token":"good-token"})");
    BOOST_CHECK_EQUAL(next_json(c), (Json{{"result", true}}));
    c.send_text(R"({"op":"subscribe","channel":"@room"})");
    BOOST_CHECK_EQUAL(next_json(c)["code"], 2);
    c.send_text(R"({"op":"shout"})");
    BOOST_CHECK_EQUAL(next_json(c)["code"], 2);
    c.send_text("{{{");
    BOOST_CHECK_EQUAL(next_json(c)["code"], 2);
    c.send_text(R"({"op":"subscribe","channel":"@user"})");
    BOOST_CHECK_EQUAL(next_json(c), (Json{{"result", true}}));

    std::string event = R"({"event":"@user","data":{"uid":1001,"msg":"Hello,World!"}})";
    auto p = test::http(host.admin, "POST", "/v1/mesh/publish", Json{{"c", "user:1001"}, {"d", event}}.dump());
    BOOST_CHECK_EQUAL(p.json()["delivered"], 1);
    BOOST_CHECK_EQUAL(c.receive(5s).data, event);

    c.send_text(R"({"op":"unsubscribe","channel":"@user"})");
    BOOST_CHECK_EQUAL(next_json(c), (Json{{"result", true}}));
    p = test::http(host.admin, "POST", "/v1/mesh/publish", Json{{"c", "user:1001"}, {"d", event}}.dump());
    BOOST_CHECK_EQUAL(p.json()["delivered"], 0);
}

BOOST_AUTO_TEST_CASE(message_center_with_its_auth_api_down) {
    Poco::Net::ServerSocket closed(Poco::Net::SocketAddress("127.0.0.1:0"));
    std::string url = "http://127.0.0.1:" + std::to_string(closed.address().port()) + "/websocket_auth";
    closed.close();
    test::Host host({"--set", "services.message_center.auth_url=" + url});
    WsClient c = host.connect("/message-center");
    c.send_text(R"({"op":"auth","token":"good-token"})");
    BOOST_CHECK_EQUAL(next_json(c), (Json{{"code", 1}, {"msg", "auth failed"}}));
}

BOOST_AUTO_TEST_CASE(python_websockets_client_in_a_chat_room) {
    test::Host host;
    WsClient watcher = host.connect("/chat");
    watcher.send_text(R"({"op":"join","room_id":"lobby"})");
    BOOST_CHECK_EQUAL(next_json(watcher)["status"], "success");
    std::string script = R"PY(
import asyncio, json, sys
import websockets
async def main(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/chat") as ws:
        await ws.send(json.dumps({"op": "join", "room_id": "lobby"}))
        print(await ws.recv())
        await ws.send(json.dumps({"op": "send", "msg": "from python"}))
        print(await ws.recv())
        print(await ws.recv())
asyncio.run(main(int(sys.argv[1])))
)PY";
    test::ChildProcess py({"/usr/bin/python3", "-c", script, std::to_string(host.ws_port)});
    BOOST_REQUIRE_EQUAL(py.wait(30s).value_or(-1), 0);
    std::istringstream lines(py.out());
    std::string l1, l2, l3;
    std::getline(lines, l1);
    std::getline(lines, l2);
    std::getline(lines, l3);
    BOOST_CHECK_EQUAL(Json::parse(l1)["status"], "success");
    BOOST_CHECK_EQUAL(Json::parse(l2)["status"], "success");
    BOOST_CHECK_EQUAL(Json::parse(l3)["msg"], "from python");
    BOOST_CHECK_EQUAL(next_json(watcher)["msg"], "from python");
}

BOOST_AUTO_TEST_CASE(a_queued_message_for_a_connection_that_is_gone_is_dropped_and_logged) {
    const std::string queue_db = test::temp_path("queue.db");
    test::Host host({"--set", "queue.sqlite.path=" + queue_db});
    auto connections = [&] {
        return test::http(host.api, "GET", "/healthz").json()["servers"]["ws"]["connections"].get<int>();
    };
    std::string uuid;
    {
        WsClient gone = host.connect("/");
        uuid = gone.response_header("X-Request-Id").value_or("");
        BOOST_REQUIRE(!uuid.empty());
        BOOST_REQUIRE(test::wait_until([&] { return connections() == 1; }, 10s));
    }  // closed: the server forgets the uuid
    BOOST_REQUIRE(test::wait_until([&] { return connections() == 0; }, 10s));

    // Accepted (the API does not know who is connected), then dropped by the MQC handler with a warning that carries
    // the request id of the push.
    auto s = test::http(host.api, "POST", "/msg/send", Json{{"uuid", uuid}, {"msg", "to nobody"}}.dump(),
                        "application/json", {{"X-Request-Id", "send-to-gone-1"}});
    BOOST_CHECK_EQUAL(s.status, 200);
    const std::string line = R"(WARN +\[send-to-gone-1\] push: connection gone; message dropped uuid=)" + uuid;
    BOOST_CHECK(host.process->wait_for_stderr(line, 10s));
    // Dropped, not failed: acknowledged at the first attempt, neither retried nor dead-lettered.
    BOOST_CHECK(test::wait_until([&] { return test::row_count(queue_db, "messages") == 0; }, 10s));
    BOOST_CHECK_EQUAL(test::row_count(queue_db, "dead_letters"), 0);
    const std::string& err = host.process->err();
    BOOST_CHECK_EQUAL(err.find("message dropped uuid=" + uuid), err.rfind("message dropped uuid=" + uuid));
}

BOOST_AUTO_TEST_SUITE_END()
