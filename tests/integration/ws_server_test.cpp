// The WS server in-process on port 0, driven by the project's client over real sockets.
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <hydra/app.h>
#include <hydra/ws_client.h>

#include "support/http_raw.h"
#include "support/process.h"
#include "support/temp.h"
#include "support/wait.h"
#include "ws/frame.h"

using hydra::Context;
using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

// Records endpoint events for assertions from the test thread.
struct Events {
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> log;
    void add(std::string s) {
        {
            std::lock_guard lock(mu);
            log.push_back(std::move(s));
        }
        cv.notify_all();
    }
    bool wait_for(const std::string& entry, std::chrono::milliseconds timeout = 5s) {
        std::unique_lock lock(mu);
        return cv.wait_for(lock, timeout, [&] { return std::find(log.begin(), log.end(), entry) != log.end(); });
    }
};

struct WsFixture {
    Events events;    // before app: the app's workers report into it until the app is gone
    test::Gate gate;  // likewise: "/hold" waits at it
    hydra::App app{{.plat = "test", .system = "ws"}};
    int port = 0;

    explicit WsFixture(std::vector<std::string> sets = {}, std::function<void(hydra::App&)> extra = {}) {
        app.ws("/member/login", [](Context& ctx) {
            if (ctx.require("pwd") != ctx.require("uname") + "-pw") throw hydra::Error(401, "wrong password");
            ctx.exchange().bind(ctx.param("uname"), ctx.uuid());
            return Json{{"uuid", ctx.uuid()}};
        });
        app.ws("/echo", [](Context& ctx) { return ctx.params(); });
        app.ws("/serialized", [](Context&) { return hydra::Result::json_text(R"({"as":"written"})"); });
        app.ws("/slow", [](Context& ctx) {
            // a handler that takes a while (a condition for a case; to hold one until the test says, use /hold)
            std::this_thread::sleep_for(std::chrono::milliseconds(ctx.get<int>("ms")));
            return Json{{"slept", ctx.get<int>("ms")}};
        });
        app.ws("/hold", [this](Context&) {
            gate.pass();
            return Json{{"held", true}};
        });
        app.ws("/boom", [](Context&) -> Json { throw std::runtime_error("secret internals"); });
        hydra::WsEndpoint echo;
        echo.on_message = [](Context& ctx) -> hydra::Result {
            if (ctx.binary()) return std::string("binary:" + std::to_string(ctx.body().size()));
            return ctx.body();
        };
        app.ws_endpoint("/raw", echo);
        hydra::WsEndpoint inline_echo = echo;
        inline_echo.run_on_loop = true;
        app.ws_endpoint("/inline", inline_echo);

        hydra::WsEndpoint chat;
        chat.on_open = [this](Context& ctx) -> hydra::Result {
            if (ctx.param("token") != "ok") return hydra::Error(403, "bad token");
            ctx.exchange().set(ctx.uuid(), "token", ctx.param("token"));
            events.add("open");
            return {};
        };
        chat.on_message = [this](Context& ctx) -> hydra::Result {
            events.add("message:" + ctx.body());
            if (ctx.body() == "who") return Json{{"token", ctx.exchange().get(ctx.uuid(), "token").value_or(nullptr)}};
            return {};
        };
        chat.on_close = [this](Context& ctx, int code, const std::string& reason) {
            auto token = ctx.exchange().get(ctx.uuid(), "token");
            events.add("close:" + std::to_string(code) + ":" + reason + ":" + (token ? token->get<std::string>() : ""));
        };
        chat.on_error = [this](Context&, const std::string& error) { events.add("error:" + error); };
        app.ws_endpoint("/chat", chat);
        if (extra) extra(app);

        sets.insert(sets.begin(), {"api.enabled=false", "admin.enabled=false", "ws.address=127.0.0.1:0",
                                   "log.level=error", "ws.io_threads=2", "ws.workers=4", "mqc.enabled=false",
                                   "queue.sqlite.path=" + test::temp_path("q.db")});
        app.start(hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin()));
        std::string addr = app.ws_address();
        port = std::stoi(addr.substr(addr.rfind(':') + 1));
    }
    ~WsFixture() { gate.open(); }  // a failed case must not leave a worker held

    WsClient connect(const std::string& target = "/", std::map<std::string, std::string> headers = {}) {
        return WsClient::connect("127.0.0.1", port, target, headers);
    }
    hydra::Exchange& ex() { return *app.exchange(); }

    // Waits until the exchange has `n` connections (open/close are asynchronous to the client).
    bool wait_connections(std::size_t n, std::chrono::milliseconds timeout = 20s) {
        return test::wait_until([&] { return ex().connections() == n; }, timeout);
    }
};

Json receive_json(WsClient& c, std::chrono::milliseconds timeout = 5s) {
    WsMessage m = c.receive(timeout);
    BOOST_REQUIRE_MESSAGE(m.type == WsMessage::Type::text, "expected text, got " << m.type << " " << m.data);
    return Json::parse(m.data);
}

// Sends raw bytes on a plain TCP socket and returns the HTTP answer (for handshake errors).
std::string raw_http(int port, const std::string& request) {
    test::RawHttp c("127.0.0.1:" + std::to_string(port));
    BOOST_REQUIRE(c.connected());
    c.send(request);
    return c.read_all(5s);
}

}  // namespace

namespace {

// Whether a socket on local port `server_port` is still connected to the local port of client socket `client_fd`
// (read from /proc/net/tcp: the server's end, in any TCP state).
bool server_socket_to(int server_port, int client_fd) {
    sockaddr_in local{};
    socklen_t len = sizeof local;
    BOOST_REQUIRE_EQUAL(::getsockname(client_fd, reinterpret_cast<sockaddr*>(&local), &len), 0);
    const int client_port = ntohs(local.sin_port);
    std::ifstream tcp("/proc/net/tcp");
    std::string line;
    std::getline(tcp, line);
    while (std::getline(tcp, line)) {
        std::istringstream in(line);
        std::string slot, here, there;
        in >> slot >> here >> there;
        if (std::stoi(here.substr(here.find(':') + 1), nullptr, 16) == server_port &&
            std::stoi(there.substr(there.find(':') + 1), nullptr, 16) == client_port)
            return true;
    }
    return false;
}

}  // namespace

namespace {

void a_client_that_stops_reading(const char* writes) {
    WsFixture f({"ws.send_queue_bytes=65536", writes});
    // Two clients stop reading (small receive buffers, on /chat: its on_error and on_close report into f.events).
    // The sleeper reads again as soon as it was cut off and must find the close 1008; the other never reads again,
    // and once the close frame could not be written (2 s) its connection must be reset, not left to the kernel.
    hydra::WsConnectOptions opts;
    opts.target = "/chat?token=ok";
    opts.receive_buffer = 4096;
    WsClient sleeper = WsClient::connect("127.0.0.1", f.port, opts);
    WsClient never = WsClient::connect("127.0.0.1", f.port, opts);
    WsClient reader = f.connect("/raw");
    BOOST_REQUIRE(f.wait_connections(3));
    auto overflows = [&] {
        std::lock_guard lock(f.events.mu);
        return std::count_if(f.events.log.begin(), f.events.log.end(),
                             [](const std::string& e) { return e.starts_with("error:send queue full"); });
    };
    std::string chunk(16 * 1024, 'x');
    int sent = 0, received = 0;
    auto broadcast_one = [&] {
        f.ex().broadcast(Json{{"i", sent++}, {"pad", chunk}});
        WsMessage m = reader.receive(10s);
        if (m.type == WsMessage::Type::text) ++received;
    };
    while (sent < 200 && overflows() < 2) broadcast_one();
    BOOST_REQUIRE(test::wait_until([&] { return overflows() == 2; }));

    // The sleeper reads what reached its socket, then the close frame: nothing else counts (not a reset, not a
    // timeout). It reads right away: the server waits 2 s for the close frame to be written.
    WsMessage last;
    for (int i = 0; i < 400; ++i) {
        last = sleeper.receive(10s);
        if (last.type != WsMessage::Type::text) break;
    }
    BOOST_REQUIRE_MESSAGE(last.type == WsMessage::Type::close, "got " << last.type << " " << last.data);
    BOOST_CHECK_EQUAL(last.close_code, 1008);
    BOOST_CHECK_EQUAL(last.close_reason, "send queue full");
    BOOST_CHECK(f.events.wait_for("close:1008:send queue full:ok", 20s));

    // The reader got every broadcast, before and after.
    while (sent < 200) broadcast_one();
    BOOST_CHECK_EQUAL(received, 200);

    // The server's end of the other one's connection is gone (reset, not left orphaned with its unsent bytes in
    // the kernel): no socket on the server port talks to its port any more.
    auto server_end_exists = [&] { return server_socket_to(f.port, never.fd()); };
    BOOST_CHECK(test::wait_until([&] { return !server_end_exists(); }));
    BOOST_CHECK(f.wait_connections(1));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_server)

BOOST_AUTO_TEST_CASE(service_routing_replies_and_errors_keep_the_connection) {
    WsFixture f;
    WsClient c = f.connect();
    c.send_text(R"({"service":"/member/login","uname":"alice","pwd":"alice-pw"})");
    Json r = receive_json(c);
    BOOST_CHECK_EQUAL(r["service"], "/member/login");
    BOOST_CHECK_EQUAL(r["code"], 200);
    BOOST_CHECK_EQUAL(r["data"]["uuid"], c.response_header("X-Request-Id").value());

    // The bytes, in the protocol's field order (service, code, then data or err), as hydra's clients expect.
    c.send_text(R"({"service":"/member/login","uname":"alice","pwd":"nope"})");
    WsMessage raw = c.receive(5s);
    BOOST_CHECK_EQUAL(raw.data, R"({"service":"/member/login","code":401,"err":"wrong password"})");

    c.send_text(R"({"service":"/serialized"})");
    BOOST_CHECK_EQUAL(c.receive(5s).data, R"({"service":"/serialized","code":200,"data":{"as":"written"}})");

    c.send_text("this is not json");
    r = receive_json(c);
    BOOST_CHECK_EQUAL(r["service"], "init");
    BOOST_CHECK_EQUAL(r["code"], 406);

    c.send_text(R"({"service":"/no/such"})");
    r = receive_json(c);
    BOOST_CHECK_EQUAL(r["service"], "/no/such");
    BOOST_CHECK_EQUAL(r["code"], 404);

    c.send_text(R"({"service":"/boom"})");
    r = receive_json(c);
    BOOST_CHECK_EQUAL(r["code"], 500);
    BOOST_CHECK_EQUAL(r["err"], "internal server error");

    c.send_text(R"({"service":"/member/login","uname":"bob"})");
    r = receive_json(c);
    BOOST_CHECK_EQUAL(r["code"], 400);
    BOOST_CHECK_EQUAL(r["err"], "missing parameter pwd");

    // still open, and messages of one connection are answered in order
    for (int i = 0; i < 20; ++i) c.send_text(Json{{"service", "/echo"}, {"i", i}}.dump());
    for (int i = 0; i < 20; ++i) BOOST_CHECK_EQUAL(receive_json(c)["data"]["i"], i);
}

BOOST_AUTO_TEST_CASE(uuid_is_generated_unless_x_request_id_is_trusted) {
    {
        WsFixture f;  // ws.client_uuid=generate: what the client asks for is ignored
        WsClient a = f.connect("/", {{"X-Request-Id", "device-42"}});
        BOOST_CHECK_EQUAL(a.response_header("X-Request-Id").value().size(), 36u);
        BOOST_CHECK(!a.response_header("X-Hydra-Resume"));
    }
    WsFixture f({"ws.client_uuid=request_id"});
    WsClient a = f.connect("/", {{"X-Request-Id", "device-42"}});
    BOOST_CHECK_EQUAL(a.response_header("X-Request-Id").value(), "device-42");
    WsClient b = f.connect("/", {{"X-Request-Id", "not a valid id!"}});
    BOOST_CHECK_EQUAL(b.response_header("X-Request-Id").value().size(), 36u);
    // a uuid already in use is not taken over
    WsClient c = f.connect("/", {{"X-Request-Id", "device-42"}});
    BOOST_CHECK_NE(c.response_header("X-Request-Id").value(), "device-42");
    BOOST_CHECK(f.wait_connections(3));
}

BOOST_AUTO_TEST_CASE(handshake_errors_answer_http_with_a_reason) {
    WsFixture f;
    try {
        f.connect("/nowhere");
        BOOST_FAIL("expected a handshake error");
    } catch (const hydra::WsHandshakeError& e) {
        BOOST_CHECK_EQUAL(e.status(), 404);
    }
    std::string base = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    std::string r = raw_http(f.port, base + "Sec-WebSocket-Version: 13\r\n\r\n");
    BOOST_CHECK_MESSAGE(r.rfind("HTTP/1.1 400", 0) == 0, r);
    BOOST_CHECK(r.find("Sec-WebSocket-Key") != std::string::npos);
    r = raw_http(f.port, base + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n");
    BOOST_CHECK_MESSAGE(r.rfind("HTTP/1.1 426", 0) == 0, r);
    BOOST_CHECK(r.find("Sec-WebSocket-Version: 13") != std::string::npos);
    r = raw_http(f.port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    BOOST_CHECK_MESSAGE(r.rfind("HTTP/1.1 400", 0) == 0, r);
    // the server is unaffected
    WsClient c = f.connect();
    c.send_text(R"({"service":"/echo","x":1})");
    BOOST_CHECK_EQUAL(receive_json(c)["data"]["x"], 1);
}

BOOST_AUTO_TEST_CASE(protocol_violations_close_with_the_right_code) {
    WsFixture f({"ws.max_message=1024"});
    auto expect_close = [](WsClient& c, int code) {
        WsMessage m = c.receive(5s);
        BOOST_CHECK_MESSAGE(m.type == WsMessage::Type::close, "got " << m.type << " " << m.data);
        BOOST_CHECK_EQUAL(m.close_code, code);
    };
    {  // unmasked client frame
        WsClient c = f.connect("/raw");
        c.send_raw(hydra::ws::encode_text("hi"));
        expect_close(c, 1002);
    }
    {  // invalid UTF-8 in a text message
        WsClient c = f.connect("/raw");
        c.send_frame(hydra::WsOpcode::text, "\xC0\x80");
        expect_close(c, 1007);
    }
    {  // over ws.max_message
        WsClient c = f.connect("/raw");
        c.send_text(std::string(2000, 'a'));
        expect_close(c, 1009);
    }
    {  // fragmented past the limit
        WsClient c = f.connect("/raw");
        c.send_frame(hydra::WsOpcode::text, std::string(800, 'a'), false);
        c.send_frame(hydra::WsOpcode::continuation, std::string(800, 'a'), true);
        expect_close(c, 1009);
    }
    {  // control frame over 125 bytes
        WsClient c = f.connect("/raw");
        std::string ping = "\x89\xFE";  // FIN + ping, masked, 16-bit length: 200 (zero mask key)
        ping += std::string("\x00\xC8\x00\x00\x00\x00", 6) + std::string(200, 'p');
        c.send_raw(ping);
        expect_close(c, 1002);
    }
    {  // continuation with nothing to continue
        WsClient c = f.connect("/raw");
        c.send_frame(hydra::WsOpcode::continuation, "x");
        expect_close(c, 1002);
    }
    BOOST_CHECK(f.wait_connections(0));
}

BOOST_AUTO_TEST_CASE(fragments_ping_pong_and_binary) {
    WsFixture f;
    WsClient c = f.connect("/raw");
    c.send_frame(hydra::WsOpcode::text, "Hel", false);
    c.send_ping("mid");  // control frames may come between fragments
    c.send_frame(hydra::WsOpcode::continuation, "lo, ", false);
    c.send_frame(hydra::WsOpcode::continuation, "wörld", true);
    c.set_auto_pong(false);
    WsMessage pong = c.receive(5s);
    BOOST_CHECK(pong.type == WsMessage::Type::pong);
    BOOST_CHECK_EQUAL(pong.data, "mid");
    WsMessage m = c.receive(5s);
    BOOST_CHECK(m.type == WsMessage::Type::text);
    BOOST_CHECK_EQUAL(m.data, "Hello, wörld");

    c.send_binary(std::string(70000, '\0'));
    m = c.receive(5s);
    BOOST_CHECK_EQUAL(m.data, "binary:70000");
}

BOOST_AUTO_TEST_CASE(handlers_declared_non_blocking_run_on_the_loop) {
    WsFixture f;
    WsClient c = f.connect("/inline");
    for (int i = 0; i < 50; ++i) c.send_text("m" + std::to_string(i));
    for (int i = 0; i < 50; ++i) BOOST_CHECK_EQUAL(c.receive(5s).data, "m" + std::to_string(i));
    c.send_binary(std::string(1000, '\x01'));
    BOOST_CHECK_EQUAL(c.receive(5s).data, "binary:1000");
    c.send_frame(hydra::WsOpcode::text, "\xC0\x80");
    BOOST_CHECK_EQUAL(c.receive(5s).close_code, 1007);
}

BOOST_AUTO_TEST_CASE(close_handshake_and_endpoint_events) {
    WsFixture f;
    try {
        f.connect("/chat?token=bad");
        BOOST_FAIL("expected a rejected upgrade");
    } catch (const hydra::WsHandshakeError& e) {
        BOOST_CHECK_EQUAL(e.status(), 403);
        BOOST_CHECK(e.body().find("bad token") != std::string::npos);
    }
    WsClient c = f.connect("/chat?token=ok");
    BOOST_CHECK(f.events.wait_for("open"));
    c.send_text("hello");
    BOOST_CHECK(f.events.wait_for("message:hello"));
    c.send_text("who");
    BOOST_CHECK_EQUAL(receive_json(c)["token"], "ok");
    WsMessage m = c.close(4001, "bye now");
    BOOST_CHECK(m.type == WsMessage::Type::close);
    BOOST_CHECK_EQUAL(m.close_code, 4001);
    // on_close still sees the connection's values; afterwards the exchange forgets it
    BOOST_CHECK(f.events.wait_for("close:4001:bye now:ok"));
    BOOST_CHECK(f.wait_connections(0));

    WsClient d = f.connect("/chat?token=ok");
    d.send_raw(hydra::ws::encode_text("unmasked"));
    BOOST_CHECK(f.events.wait_for("error:protocol error 1002: unmasked client frame"));
    BOOST_CHECK(f.events.wait_for("close:1002:unmasked client frame:ok"));

    // a client that just drops the TCP connection: 1006
    {
        WsClient e = f.connect("/chat?token=ok");
        BOOST_CHECK(f.wait_connections(1));
    }
    BOOST_CHECK(f.events.wait_for("close:1006:connection dropped:ok"));
}

BOOST_AUTO_TEST_CASE(middleware_on_upgrade_and_on_packets) {
    WsFixture f({}, [](hydra::App& app) {
        app.ws_use_connection([](Context& ctx, const hydra::Next& next) -> hydra::Result {
            if (ctx.header("Authorization") != "Bearer t") return hydra::Error(401, "login first");
            return next();
        });
        app.ws_use_packet([](Context& ctx, const hydra::Next& next) -> hydra::Result {
            if (ctx.path() == "/echo" && ctx.param("drop") == "yes") return {};  // dropped: no reply
            if (ctx.path() == "/echo" && ctx.param("answer") == "yes") return Json{{"from", "middleware"}};
            return next();
        });
    });
    try {
        f.connect("/");
        BOOST_FAIL("expected 401");
    } catch (const hydra::WsHandshakeError& e) {
        BOOST_CHECK_EQUAL(e.status(), 401);
    }
    WsClient c = f.connect("/", {{"Authorization", "Bearer t"}});
    c.send_text(R"({"service":"/echo","drop":"yes"})");
    c.send_text(R"({"service":"/echo","answer":"yes"})");
    Json r = receive_json(c);
    BOOST_CHECK_EQUAL(r["data"]["from"], "middleware");
    c.send_text(R"({"service":"/echo","v":3})");
    BOOST_CHECK_EQUAL(receive_json(c)["data"]["v"], 3);
}

BOOST_AUTO_TEST_CASE(exchange_from_other_threads) {
    WsFixture f({"ws.client_uuid=request_id"});
    WsClient a1 = f.connect("/", {{"X-Request-Id", "alice-phone"}});
    WsClient a2 = f.connect("/", {{"X-Request-Id", "alice-laptop"}});
    WsClient b = f.connect("/raw", {{"X-Request-Id", "bob"}});
    BOOST_REQUIRE(f.wait_connections(3));
    hydra::Exchange& ex = f.ex();

    std::thread([&] { BOOST_CHECK(ex.notify("bob", Json{{"msg", "充值成功"}})); }).join();
    BOOST_CHECK_EQUAL(b.receive(5s).data, R"({"service":"notify","code":200,"data":{"msg":"充值成功"}})");
    BOOST_CHECK(!ex.notify("nobody", Json{{"msg", "x"}}));
    // data serialized by the caller goes into the same envelope as it is
    BOOST_CHECK(ex.notify_json("bob", R"({"msg":"as written","n":[1,2]})"));
    BOOST_CHECK_EQUAL(b.receive(5s).data, R"({"service":"notify","code":200,"data":{"msg":"as written","n":[1,2]}})");
    BOOST_CHECK(!ex.notify_json("nobody", "{}"));

    BOOST_CHECK(ex.bind("alice", "alice-phone"));
    BOOST_CHECK(ex.bind("alice", "alice-laptop"));
    BOOST_CHECK(!ex.bind("alice", "nobody"));
    BOOST_CHECK_EQUAL(ex.notify_user("alice", Json{{"n", 1}}), 2u);
    BOOST_CHECK_EQUAL(receive_json(a1)["data"]["n"], 1);
    BOOST_CHECK_EQUAL(receive_json(a2)["data"]["n"], 1);

    BOOST_CHECK(ex.subscribe("bob", "room:1002"));
    BOOST_CHECK(ex.subscribe("alice-phone", "room:1002"));
    BOOST_CHECK_EQUAL(ex.channels(), 1u);
    BOOST_CHECK_EQUAL(ex.publish("room:1002", R"({"verbatim":true})"), 2u);
    BOOST_CHECK_EQUAL(b.receive(5s).data, R"({"verbatim":true})");
    BOOST_CHECK_EQUAL(a1.receive(5s).data, R"({"verbatim":true})");
    BOOST_CHECK(ex.unsubscribe("bob", "room:1002"));
    BOOST_CHECK_EQUAL(ex.publish("room:1002", "second"), 1u);
    BOOST_CHECK_EQUAL(a1.receive(5s).data, "second");
    BOOST_CHECK(b.receive(200ms).type == WsMessage::Type::timeout);

    BOOST_CHECK(ex.set("bob", "uid", 1001));
    BOOST_CHECK_EQUAL(ex.get("bob", "uid").value(), 1001);
    BOOST_CHECK(!ex.get("bob", "missing"));

    BOOST_CHECK_EQUAL(ex.broadcast(Json{{"all", true}}), 3u);
    for (WsClient* c : {&a1, &a2, &b}) BOOST_CHECK_EQUAL(receive_json(*c)["data"]["all"], true);

    BOOST_CHECK(ex.kick("bob", 4000, "kicked"));
    WsMessage m = b.receive(5s);
    BOOST_CHECK(m.type == WsMessage::Type::close);
    BOOST_CHECK_EQUAL(m.close_code, 4000);
    BOOST_CHECK_EQUAL(m.close_reason, "kicked");

    // closing cleans up users and channels
    a1.close();
    a2.close();
    BOOST_REQUIRE(f.wait_connections(0));
    BOOST_CHECK_EQUAL(ex.channels(), 0u);
    BOOST_CHECK_EQUAL(ex.notify_user("alice", Json{}), 0u);
}

BOOST_AUTO_TEST_CASE(slow_handlers_do_not_block_other_connections) {
    WsFixture f;
    WsClient slow = f.connect();
    WsClient fast = f.connect();
    slow.send_text(R"({"service":"/hold"})");
    BOOST_REQUIRE(test::wait_until([&] { return f.gate.entered() == 1; }));
    // Answered while the slow handler is still held: nothing about how fast, only that it did not wait.
    fast.send_text(R"({"service":"/echo","q":1})");
    BOOST_CHECK_EQUAL(receive_json(fast, 20s)["data"]["q"], 1);
    f.gate.open();
    BOOST_CHECK_EQUAL(receive_json(slow, 20s)["data"]["held"], true);
}

// A handler's reply comes before whatever reached its own connection while it ran (a notify, a raw send, a publish,
// also from another thread), and those follow in the order they were sent; a handler that replies nothing holds
// nothing back. Without the ordering the notify (queued on the loop before the reply) would come first.
BOOST_AUTO_TEST_CASE(a_reply_comes_before_what_its_handler_sent_to_its_own_connection) {
    WsFixture f({}, [](hydra::App& app) {
        app.ws("/notify_self", [](Context& ctx) -> hydra::Result {
            hydra::Exchange& ex = ctx.exchange();
            ex.notify(ctx.uuid(), Json{{"n", 1}});
            std::thread other([&] { ex.send(ctx.uuid(), "from another thread"); });
            other.join();
            ex.subscribe(ctx.uuid(), "self");
            ex.publish("self", "published");
            if (ctx.has("quiet")) return {};
            return Json{{"replied", true}};
        });
        hydra::WsEndpoint raw;
        raw.on_message = [](Context& ctx) -> hydra::Result {
            ctx.exchange().send(ctx.uuid(), "sent while handling " + ctx.body());
            return std::string("reply to " + ctx.body());
        };
        app.ws_endpoint("/raw_self", raw);
    });
    WsClient c = f.connect();
    for (int round = 0; round < 2; ++round) {  // the next message is ordered the same way
        c.send_text(R"({"service":"/notify_self"})");
        BOOST_CHECK_EQUAL(c.receive(5s).data, R"({"service":"/notify_self","code":200,"data":{"replied":true}})");
        BOOST_CHECK_EQUAL(c.receive(5s).data, R"({"service":"notify","code":200,"data":{"n":1}})");
        BOOST_CHECK_EQUAL(c.receive(5s).data, "from another thread");
        BOOST_CHECK_EQUAL(c.receive(5s).data, "published");
    }
    c.send_text(R"({"service":"/notify_self","quiet":true})");
    BOOST_CHECK_EQUAL(receive_json(c)["data"]["n"], 1);
    BOOST_CHECK_EQUAL(c.receive(5s).data, "from another thread");
    BOOST_CHECK_EQUAL(c.receive(5s).data, "published");

    WsClient r = f.connect("/raw_self");
    r.send_text("a");
    r.send_text("b");  // waits for a's handler, as always
    for (const char* expected : {"reply to a", "sent while handling a", "reply to b", "sent while handling b"})
        BOOST_CHECK_EQUAL(r.receive(5s).data, expected);
}

// The gate holds what the connection's handler (or anyone) sends while the handler runs, but never the answer to a
// client's ping or our keepalive ping: a slow handler must not look like a dead connection.
BOOST_AUTO_TEST_CASE(pings_and_pongs_do_not_wait_behind_a_handler) {
    WsFixture f({"ws.ping_interval_ms=100"}, [&](hydra::App& app) {
        app.ws("/hold_self", [&f = f](Context& ctx) {
            ctx.exchange().send(ctx.uuid(), "sent while held");
            f.gate.pass();
            return Json{{"held", true}};
        });
    });
    WsClient c = f.connect();
    c.set_auto_pong(false);
    c.send_text(R"({"service":"/hold_self"})");
    BOOST_REQUIRE(test::wait_until([&] { return f.gate.entered() == 1; }));
    c.send_ping("are you there");
    bool pong = false, ping = false;
    for (int i = 0; i < 20 && !(pong && ping); ++i) {
        WsMessage m = c.receive(2s);
        if (m.type == WsMessage::Type::pong && m.data == "are you there")
            pong = true;
        else if (m.type == WsMessage::Type::ping)
            ping = true;
        else
            BOOST_FAIL("while the handler is held only control frames come, got: " + m.data);
    }
    BOOST_CHECK(pong);
    BOOST_CHECK(ping);
    f.gate.open();
    WsMessage m = c.receive(5s);
    while (m.type == WsMessage::Type::ping) m = c.receive(5s);
    BOOST_CHECK_EQUAL(m.data, R"({"service":"/hold_self","code":200,"data":{"held":true}})");
    m = c.receive(5s);
    while (m.type == WsMessage::Type::ping) m = c.receive(5s);
    BOOST_CHECK_EQUAL(m.data, "sent while held");
}

// What waits behind a slow handler is bounded by half of ws.send_queue_bytes, after which it goes out and the reply
// follows it: the connection is not closed for the handler's slowness (100 KiB sent to it over 64 KiB of queue).
BOOST_AUTO_TEST_CASE(a_slow_handler_costs_its_reply_its_place_not_the_connection) {
    WsFixture f({"ws.send_queue_bytes=65536"}, [](hydra::App& app) {
        app.ws("/flood_self", [](Context& ctx) {
            const std::string kib(1024, 'x');
            for (int i = 0; i < 100; ++i) {
                ctx.exchange().send(ctx.uuid(), std::to_string(i) + kib);
                std::this_thread::sleep_for(1ms);  // spread over many loop turns, as a broadcast stream would be
            }
            return Json{{"done", true}};
        });
    });
    WsClient c = f.connect();
    c.send_text(R"({"service":"/flood_self"})");
    int next = 0;
    bool replied = false;
    for (int i = 0; i < 101; ++i) {
        WsMessage m = c.receive(10s);
        BOOST_REQUIRE_MESSAGE(m.type == WsMessage::Type::text, "message " << i << ": type " << int(m.type) << " code "
                                                                          << m.close_code << " " << m.close_reason);
        if (m.data.front() == '{') {
            BOOST_CHECK_EQUAL(m.data, R"({"service":"/flood_self","code":200,"data":{"done":true}})");
            replied = true;
        } else {
            BOOST_CHECK_EQUAL(m.data, std::to_string(next++) + std::string(1024, 'x'));
        }
    }
    BOOST_CHECK(replied);
    BOOST_CHECK_EQUAL(next, 100);
    c.send_text(R"({"service":"/echo","still":"open"})");
    BOOST_CHECK_EQUAL(receive_json(c)["data"]["still"], "open");
}

// A handler that throws something that is not a std::exception, and an on_error that throws too: the client gets
// its 500, on_error saw the connection's context, and the connection goes on (nothing stays behind the gate).
BOOST_AUTO_TEST_CASE(a_handler_and_its_on_error_that_throw_do_not_stall_the_connection) {
    WsFixture f({}, [&](hydra::App& app) {
        hydra::WsEndpoint raw;
        raw.on_message = [](Context& ctx) -> hydra::Result {
            ctx.exchange().send(ctx.uuid(), "sent before " + ctx.body());
            if (ctx.body() == "throw") throw 42;
            return std::string("reply to " + ctx.body());
        };
        raw.on_error = [&f = f](Context& ctx, const std::string& error) {
            f.events.add("error:" + ctx.path() + ":" + std::to_string(ctx.uuid().size()) + ":" + error);
            throw std::runtime_error("on_error fails too");
        };
        app.ws_endpoint("/throws", raw);
    });
    WsClient c = f.connect("/throws");
    c.send_text("throw");
    BOOST_CHECK_EQUAL(c.receive(5s).data, R"({"code":500,"msg":"internal server error"})");
    BOOST_CHECK_EQUAL(c.receive(5s).data, "sent before throw");
    BOOST_CHECK(f.events.wait_for("error:/throws:36:handler failed: unknown exception"));
    c.send_text("next");
    BOOST_CHECK_EQUAL(c.receive(5s).data, "reply to next");
    BOOST_CHECK_EQUAL(c.receive(5s).data, "sent before next");
}

BOOST_AUTO_TEST_CASE(idle_connections_are_pinged_then_closed) {
    WsFixture f({"ws.ping_interval_ms=100", "ws.idle_timeout_ms=400"});
    WsClient c = f.connect("/raw");
    c.set_auto_pong(false);
    WsMessage m = c.receive(2s);
    BOOST_CHECK(m.type == WsMessage::Type::ping);
    // not answering: closed for idleness
    for (int i = 0; i < 10 && m.type != WsMessage::Type::close; ++i) m = c.receive(2s);
    BOOST_CHECK(m.type == WsMessage::Type::close);
    BOOST_CHECK_EQUAL(m.close_code, 1001);
    BOOST_CHECK_EQUAL(m.close_reason, "idle timeout");

    // a client that answers pings stays: silent (but for its pongs) for twice the idle timeout, it is still open
    WsClient live = f.connect("/raw");
    for (int i = 0; i < 8; ++i) BOOST_CHECK(live.receive(100ms).type == WsMessage::Type::timeout);
    live.send_text("still here");
    BOOST_CHECK_EQUAL(live.receive(2s).data, "still here");
}

// Both ways of writing (ws.io_uring: a loop iteration's frames in one system call, or one send each) alike.
BOOST_AUTO_TEST_CASE(a_client_that_stops_reading_is_closed_and_others_are_not_slowed) {
    for (const char* writes : {"ws.io_uring=true", "ws.io_uring=false"}) {
        BOOST_TEST_CONTEXT(writes) { a_client_that_stops_reading(writes); }
    }
}

BOOST_AUTO_TEST_CASE(a_client_that_never_answers_our_close_is_reset_at_the_close_deadline_not_left_to_linger) {
    WsFixture f;
    // The client takes the close frame into its socket (it fits) but never reads it, so it never answers: our end
    // has nothing left to send, and once the close deadline (2 s) passes it must be reset, not closed into a
    // half-closed state the kernel keeps for tcp_fin_timeout (a minute).
    WsClient idle = f.connect("/raw");
    const std::string uuid = idle.response_header("X-Request-Id").value();
    BOOST_REQUIRE(f.wait_connections(1));
    auto server_end_exists = [&] { return server_socket_to(f.port, idle.fd()); };
    BOOST_REQUIRE(server_end_exists());
    BOOST_REQUIRE(f.ex().kick(uuid, 1000, "bye"));
    BOOST_REQUIRE(f.wait_connections(0));
    // Well within tcp_fin_timeout: a lingering end would still be listed.
    BOOST_CHECK(test::wait_until([&] { return !server_end_exists(); }, 20s));
}

BOOST_AUTO_TEST_CASE(a_thousand_clients_get_a_broadcast) {
    // Both ends of every connection live in this process: 2,000 descriptors and then some. Raise the soft limit to
    // the hard one (a default soft limit of 1,024 would fail the case for the wrong reason).
    rlimit files{};
    BOOST_REQUIRE(::getrlimit(RLIMIT_NOFILE, &files) == 0);
    if (files.rlim_cur != RLIM_INFINITY && files.rlim_cur < files.rlim_max) {
        files.rlim_cur = files.rlim_max;
        BOOST_REQUIRE(::setrlimit(RLIMIT_NOFILE, &files) == 0);
    }
    BOOST_REQUIRE_MESSAGE(files.rlim_cur == RLIM_INFINITY || files.rlim_cur >= 2200,
                          "needs 2,200 file descriptors; the hard limit is " << files.rlim_max);
    // A loop iteration's frames to all of them: one system call per 256 with ws.io_uring, one each without.
    for (const char* writes : {"ws.io_uring=true", "ws.io_uring=false"}) {
        BOOST_TEST_CONTEXT(writes) {
            WsFixture f({"ws.max_connections_per_ip=0", writes});  // all from 127.0.0.1
            std::vector<WsClient> clients;
            clients.reserve(1000);
            for (int i = 0; i < 1000; ++i) clients.push_back(f.connect("/raw"));
            BOOST_REQUIRE(f.wait_connections(1000, 10s));
            BOOST_CHECK_EQUAL(f.ex().broadcast(Json{{"hello", "all"}}), 1000u);
            int got = 0;
            for (auto& c : clients) {
                WsMessage m = c.receive(5s);
                if (m.type == WsMessage::Type::text && Json::parse(m.data)["data"]["hello"] == "all") ++got;
            }
            BOOST_CHECK_EQUAL(got, 1000);
            clients.clear();
            BOOST_CHECK(f.wait_connections(0, 10s));
        }
    }
}

BOOST_AUTO_TEST_CASE(python_websockets_client_talks_to_the_server) {
    WsFixture f({"ws.client_uuid=request_id"});
    std::string script = R"PY(
import asyncio, json, sys
import websockets

async def main(port):
    async with websockets.connect(f"ws://127.0.0.1:{port}/", extra_headers={"X-Request-Id": "py-client"}) as ws:
        await ws.send(json.dumps({"service": "/member/login", "uname": "carol", "pwd": "carol-pw"}))
        reply = json.loads(await ws.recv())
        await ws.send("garbage")
        bad = json.loads(await ws.recv())
        print(json.dumps({"reply": reply, "bad": bad}))
    async with websockets.connect(f"ws://127.0.0.1:{port}/raw") as ws:
        await ws.send("x" * 100000)
        echoed = await ws.recv()
        print(json.dumps({"echo_len": len(echoed)}))

asyncio.run(main(int(sys.argv[1])))
)PY";
    test::ChildProcess py({"/usr/bin/python3", "-c", script, std::to_string(f.port)});
    BOOST_REQUIRE_EQUAL(py.wait(30s).value_or(-1), 0);
    std::string out = py.out();
    auto first = Json::parse(out.substr(0, out.find('\n')));
    BOOST_CHECK_EQUAL(first["reply"]["code"], 200);
    BOOST_CHECK_EQUAL(first["reply"]["data"]["uuid"], "py-client");
    BOOST_CHECK_EQUAL(first["bad"]["service"], "init");
    BOOST_CHECK_EQUAL(first["bad"]["code"], 406);
    auto second = Json::parse(out.substr(out.find('\n') + 1));
    BOOST_CHECK_EQUAL(second["echo_len"], 100000);
}

BOOST_AUTO_TEST_CASE(connect_disconnect_churn_leaves_nothing_behind) {
    // 10000 connections from 127.0.0.1, closed abruptly or not; clients name themselves (X-Request-Id)
    WsFixture f({"ws.max_connections_per_ip=0", "ws.client_uuid=request_id"});
    hydra::Exchange& ex = f.ex();
    // Each cycle registers a user binding, a channel and a value, then leaves: abruptly, or with a close frame.
    for (int i = 0; i < 10000; ++i) {
        WsClient c = f.connect("/", {{"X-Request-Id", "churn-" + std::to_string(i)}});
        std::string uuid = "churn-" + std::to_string(i);
        BOOST_REQUIRE(ex.bind("user-" + std::to_string(i % 10), uuid));
        BOOST_REQUIRE(ex.subscribe(uuid, "ch-" + std::to_string(i % 50)));
        BOOST_REQUIRE(ex.set(uuid, "k", i));
        if (i % 2 == 0) c.close();
    }
    BOOST_CHECK(f.wait_connections(0, 30s));
    BOOST_CHECK_EQUAL(ex.channels(), 0u);
    BOOST_CHECK_EQUAL(ex.notify_user("user-3", Json{}), 0u);
    BOOST_CHECK(!ex.get("churn-1", "k"));
}

BOOST_AUTO_TEST_CASE(connections_over_ws_max_connections_are_refused_with_503) {
    WsFixture f({"ws.max_connections=2"});
    WsClient a = f.connect("/raw");
    WsClient b = f.connect("/raw");
    BOOST_REQUIRE(f.wait_connections(2));
    try {
        f.connect("/raw");
        BOOST_FAIL("a third connection was accepted");
    } catch (const hydra::WsHandshakeError& e) {
        BOOST_CHECK_EQUAL(e.status(), 503);
        BOOST_CHECK_MESSAGE(e.body().find("too many connections") != std::string::npos, e.body());
    }
    // The two inside are not disturbed, and once one leaves there is room again.
    a.send_text("still here");
    BOOST_CHECK_EQUAL(a.receive(5s).data, "still here");
    b.close();
    BOOST_REQUIRE(f.wait_connections(1));
    WsClient c = f.connect("/raw");
    c.send_text("in");
    BOOST_CHECK_EQUAL(c.receive(5s).data, "in");
}

BOOST_AUTO_TEST_CASE(an_upgrade_not_completed_within_handshake_timeout_ms_is_dropped) {
    WsFixture f({"ws.handshake_timeout_ms=300"});
    WsClient upgraded = f.connect("/raw");  // completed in time: not affected
    const auto t0 = std::chrono::steady_clock::now();
    test::RawHttp silent("127.0.0.1:" + std::to_string(f.port));  // sends nothing
    test::RawHttp partial("127.0.0.1:" + std::to_string(f.port));
    BOOST_REQUIRE(silent.connected() && partial.connected());
    partial.send("GET /raw HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    for (test::RawHttp* c : {&silent, &partial}) {
        const std::string& got = c->read_all(20s);
        BOOST_CHECK_MESSAGE(c->closed(), "an unfinished upgrade was kept for 20 s");
        BOOST_CHECK_MESSAGE(got.empty(), "dropped without an answer, got: " << got);
    }
    BOOST_CHECK(std::chrono::steady_clock::now() - t0 >= 300ms);  // not before the timeout
    upgraded.send_text("still open");
    BOOST_CHECK_EQUAL(upgraded.receive(5s).data, "still open");
}

BOOST_AUTO_TEST_CASE(an_upgrade_head_over_8_kib_is_431) {
    WsFixture f;
    try {
        f.connect("/raw", {{"X-Pad", std::string(8 * 1024, 'a')}});
        BOOST_FAIL("an upgrade head over 8 KiB was accepted");
    } catch (const hydra::WsHandshakeError& e) {
        BOOST_CHECK_EQUAL(e.status(), 431);
    }
    // With a head a little under 8 KiB the upgrade goes through.
    WsClient c = f.connect("/raw", {{"X-Pad", std::string(7 * 1024 + 512, 'a')}});
    c.send_text("ok");
    BOOST_CHECK_EQUAL(c.receive(5s).data, "ok");
}

BOOST_AUTO_TEST_CASE(exchange_send_delivers_raw_text_to_one_connection) {
    WsFixture f({"ws.client_uuid=request_id"}, [](hydra::App& app) {
        app.ws("/tell", [](Context& ctx) {  // a handler sending to another connection
            return Json{{"sent", ctx.exchange().send(ctx.require("to"), ctx.require("text"))}};
        });
    });
    WsClient a = f.connect("/raw", {{"X-Request-Id", "send-a"}});
    WsClient b = f.connect("/", {{"X-Request-Id", "send-b"}});
    BOOST_REQUIRE(f.wait_connections(2));
    BOOST_CHECK(f.ex().send("send-a", "plain words, no envelope"));
    WsMessage m = a.receive(5s);
    BOOST_CHECK(m.type == WsMessage::Type::text);
    BOOST_CHECK_EQUAL(m.data, "plain words, no envelope");
    BOOST_CHECK(!f.ex().send("nobody", "x"));

    b.send_text(R"({"service":"/tell","to":"send-a","text":"{\"from\":\"b\"}"})");
    BOOST_CHECK_EQUAL(receive_json(b)["data"]["sent"], true);
    BOOST_CHECK_EQUAL(a.receive(5s).data, R"({"from":"b"})");
    // Only the addressee got anything.
    BOOST_CHECK(b.receive(200ms).type == WsMessage::Type::timeout);
}

BOOST_AUTO_TEST_CASE(payloads_that_are_not_utf8_go_out_as_binary_messages) {
    WsFixture f({"ws.client_uuid=request_id"}, [](hydra::App& app) {
        hydra::WsEndpoint bytes;
        bytes.on_message = [](Context& ctx) -> hydra::Result {
            return hydra::Result::binary(std::string("\x00\xff", 2) + ctx.body());
        };
        app.ws_endpoint("/bytes", bytes);
    });
    const std::string raw("\x89PNG\r\n\x1a\n\x00\xff\xfe", 11);  // not UTF-8
    WsClient sub = f.connect("/raw", {{"X-Request-Id", "sub"}});
    BOOST_REQUIRE(f.wait_connections(1));
    BOOST_REQUIRE(f.ex().subscribe("sub", "bin:1"));
    BOOST_CHECK_EQUAL(f.ex().publish("bin:1", raw), 1u);
    WsMessage m = sub.receive(5s);
    BOOST_CHECK_MESSAGE(m.type == WsMessage::Type::binary, "got " << m.type);
    BOOST_CHECK(m.data == raw);
    // UTF-8 stays text.
    BOOST_CHECK_EQUAL(f.ex().publish("bin:1", "zoë"), 1u);
    m = sub.receive(5s);
    BOOST_CHECK(m.type == WsMessage::Type::text);
    BOOST_CHECK_EQUAL(m.data, "zoë");
    // send() to one connection does the same.
    BOOST_CHECK(f.ex().send("sub", raw));
    m = sub.receive(5s);
    BOOST_CHECK_MESSAGE(m.type == WsMessage::Type::binary, "got " << m.type);
    BOOST_CHECK(m.data == raw);

    // A raw endpoint's Result::binary goes back as a binary message, byte for byte.
    WsClient c = f.connect("/bytes");
    c.send_text("hi");
    m = c.receive(5s);
    BOOST_CHECK_MESSAGE(m.type == WsMessage::Type::binary, "got " << m.type);
    BOOST_CHECK(m.data == std::string("\x00\xffhi", 4));
    c.send_binary(std::string("\x01\x02", 2));
    m = c.receive(5s);
    BOOST_CHECK(m.type == WsMessage::Type::binary);
    BOOST_CHECK(m.data == std::string("\x00\xff\x01\x02", 4));
}

BOOST_AUTO_TEST_SUITE_END()
