// ws.auth=jwt against the real WS server: an upgrade without a token this host accepts is a 401 and never a
// connection; a good token (header, query or subprotocol) binds the connection to its sub; the connection ends 1008
// "token expired" at exp unless /auth/refresh moved it; `hydra token` makes tokens the real binary accepts.
#include <boost/test/unit_test.hpp>

#include <Poco/JWT/Signer.h>
#include <Poco/JWT/Token.h>

#include <chrono>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <hydra/app.h>
#include <hydra/jwt.h>
#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http.h"
#include "support/jwt.h"
#include "support/process.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsHandshakeError;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

const std::string kSecret = "ws-jwt-test-secret-0123456789abcdef";  // 35 bytes
const std::string kIssuer = "https://id.example";
const std::string kAudience = "hydra-ws";

using test::next_json;
using test::now_s;

// Tokens for this host: its issuer, audience and secret unless a case says otherwise.
test::TokenSpec spec() { return test::spec_for(kSecret, kIssuer, kAudience); }
std::string token(const test::TokenSpec& s = spec()) { return test::hs256_token(s); }

// An in-process host with ws.auth=jwt: "/whoami" on "/" answers what the handler sees; "/raw" does the same.
struct Server {
    hydra::App app{{.plat = "test", .system = "jwt"}};
    int port = 0;

    explicit Server(std::vector<std::string> sets = {}) {
        app.ws("/whoami", [](hydra::Context& ctx) -> hydra::Result {
            return Json{{"user", ctx.user()},
                        {"claims", ctx.claims()},
                        {"authorization", ctx.header("authorization").has_value()}};
        });
        hydra::WsEndpoint raw;
        raw.on_message = [](hydra::Context& ctx) -> hydra::Result { return Json{{"user", ctx.user()}}; };
        app.ws_endpoint("/raw", raw);
        sets.insert(
            sets.begin(),
            {"api.enabled=false", "admin.enabled=false", "ws.address=127.0.0.1:0", "log.level=error", "ws.io_threads=1",
             "mqc.enabled=false", "queue.sqlite.path=" + test::temp_path("q.db"), "ws.auth=jwt",
             "auth.jwt.secret=" + kSecret, "auth.jwt.issuer=" + kIssuer, "auth.jwt.audience=" + kAudience});
        app.start(hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin()));
        std::string addr = app.ws_address();
        port = std::stoi(addr.substr(addr.rfind(':') + 1));
    }
    hydra::Exchange& ex() { return *app.exchange(); }
    WsClient connect(const std::string& target, const std::map<std::string, std::string>& headers = {}) {
        return WsClient::connect("127.0.0.1", port, target, headers, 10s);
    }
    WsClient connect_bearer(const std::string& t, const std::string& path = "/") {
        return connect(path, {{"Authorization", "Bearer " + t}});
    }
    // The 401 (or other refusal) of an upgrade: status and body.
    std::pair<int, std::string> refusal(const std::string& target, const std::map<std::string, std::string>& headers) {
        try {
            WsClient c = connect(target, headers);
            return {101, ""};
        } catch (const WsHandshakeError& e) {
            return {e.status(), e.body()};
        }
    }
};

Json whoami(WsClient& c) {
    c.send_text(R"({"service":"/whoami"})");
    return next_json(c);
}

// The next close (or end) of `c`, skipping messages; fails when nothing ends it in time.
WsMessage next_close(WsClient& c, std::chrono::milliseconds timeout = 30s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        WsMessage m = c.receive(1s);
        if (m.type == WsMessage::Type::close || m.type == WsMessage::Type::closed || m.type == WsMessage::Type::error)
            return m;
    }
    BOOST_FAIL("the connection was not closed");
    return {};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(ws_jwt)

BOOST_AUTO_TEST_CASE(an_upgrade_without_an_acceptable_token_is_refused_401_and_never_connected) {
    Server s;
    auto bearer = [](const std::string& t) {
        return std::map<std::string, std::string>{{"Authorization", "Bearer " + t}};
    };
    struct Case {
        std::string what;
        std::map<std::string, std::string> headers;
        std::string reason;
    };
    const auto refused = test::refused_tokens(spec());
    auto refused_token = [&](const std::string& what) {
        for (const auto& r : refused)
            if (r.what == what) return r.token;
        BOOST_FAIL("no refused token " << what);
        return std::string();
    };
    std::vector<Case> cases = {
        {"no token", {}, "missing token"},
        {"not a bearer token", {{"Authorization", "Basic YWxpY2U6cHc="}}, "missing token"},
        {"garbage", bearer("not.a.token"), "invalid token: malformed token"},
    };
    for (const auto& r : refused) cases.push_back({r.what, bearer(r.token), r.reason});
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.what) {
            try {
                WsClient client = s.connect("/", c.headers);
                BOOST_ERROR("the upgrade was accepted");
            } catch (const WsHandshakeError& e) {
                BOOST_CHECK_EQUAL(e.status(), 401);
                BOOST_CHECK_EQUAL(e.body(), c.reason + "\n");
                bool challenge = false;
                for (const auto& [name, value] : e.headers())
                    if (name == "WWW-Authenticate" && value.rfind("Bearer", 0) == 0) challenge = true;
                BOOST_CHECK(challenge);
            }
        }
    }
    // the same for a raw endpoint, and for the query and subprotocol forms
    BOOST_CHECK_EQUAL(s.refusal("/raw", {}).first, 401);
    BOOST_CHECK_EQUAL(s.refusal("/?token=" + refused_token("expired"), {}).first, 401);
    BOOST_CHECK_EQUAL(s.refusal("/", {{"Sec-WebSocket-Protocol", "bearer, " + refused_token("wrong issuer")}}).first,
                      401);
    BOOST_CHECK_EQUAL(s.refusal("/", {{"Sec-WebSocket-Protocol", "bearer"}}).second, "missing token\n");
    // none of them became a connection (no uuid was registered, nobody is bound)
    BOOST_CHECK_EQUAL(s.ex().connections(), 0u);
    BOOST_CHECK_EQUAL(s.ex().notify_user("alice", "hello"), 0u);
}

BOOST_AUTO_TEST_CASE(a_token_in_the_authorization_header_binds_the_connection_to_its_sub) {
    Server s;
    WsClient c = s.connect_bearer(token());
    BOOST_CHECK(!c.response_header("Sec-WebSocket-Protocol"));  // nothing offered, nothing selected
    Json me = whoami(c);
    BOOST_CHECK_EQUAL(me["code"], 200);
    BOOST_CHECK_EQUAL(me["data"]["user"], "alice");
    BOOST_CHECK_EQUAL(me["data"]["claims"]["role"], "tester");
    BOOST_CHECK_EQUAL(me["data"]["claims"]["aud"], kAudience);
    BOOST_CHECK_EQUAL(me["data"]["authorization"], false);  // the token itself is not kept with the connection
    // a raw endpoint sees the user too
    WsClient raw = s.connect_bearer(token(), "/raw");
    raw.send_text("who?");
    BOOST_CHECK_EQUAL(next_json(raw)["user"], "alice");
}

BOOST_AUTO_TEST_CASE(a_token_in_the_query_opens_the_connection) {
    Server s;
    test::TokenSpec bob = spec();
    bob.sub = "bob";
    WsClient c = s.connect("/?x=1&token=" + token(bob));
    BOOST_CHECK_EQUAL(whoami(c)["data"]["user"], "bob");
}

BOOST_AUTO_TEST_CASE(a_token_in_the_subprotocol_list_opens_the_connection_and_only_bearer_is_echoed) {
    Server s;
    const std::string t = token();
    WsClient c = s.connect("/", {{"Sec-WebSocket-Protocol", "bearer, " + t}});
    BOOST_CHECK_EQUAL(c.response_header("Sec-WebSocket-Protocol").value_or("(none)"), "bearer");
    for (const auto& [name, value] : c.response_headers()) BOOST_CHECK(value.find(t) == std::string::npos);
    BOOST_CHECK_EQUAL(whoami(c)["data"]["user"], "alice");
    // with another protocol listed first, "bearer" is still the one selected
    WsClient d = s.connect("/", {{"Sec-WebSocket-Protocol", "chat.v1, bearer, " + t}});
    BOOST_CHECK_EQUAL(d.response_header("Sec-WebSocket-Protocol").value_or("(none)"), "bearer");
}

BOOST_AUTO_TEST_CASE(a_browser_style_client_passes_the_token_as_a_subprotocol) {
    // python3-websockets checks that the server selected one of the offered subprotocols, as browsers do.
    Server s;
    const std::string script = R"PY(
import asyncio, json, sys
import websockets
async def main(port, token):
    async with websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=["bearer", token]) as ws:
        print(ws.subprotocol)
        await ws.send(json.dumps({"service": "/whoami"}))
        print(await ws.recv())
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/", subprotocols=["bearer", token + "x"]):
            print("accepted")
    except websockets.exceptions.InvalidStatusCode as e:
        print(e.status_code)
asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
)PY";
    test::ChildProcess py({"/usr/bin/python3", "-c", script, std::to_string(s.port), token()});
    BOOST_REQUIRE_MESSAGE(py.wait(60s).value_or(-1) == 0, py.err());
    std::istringstream lines(py.out());
    std::string protocol, reply, refused;
    std::getline(lines, protocol);
    std::getline(lines, reply);
    std::getline(lines, refused);
    BOOST_CHECK_EQUAL(protocol, "bearer");
    BOOST_CHECK_EQUAL(Json::parse(reply)["data"]["user"], "alice");
    BOOST_CHECK_EQUAL(refused, "401");
}

BOOST_AUTO_TEST_CASE(notify_user_reaches_every_connection_of_the_sub_and_only_those) {
    Server s;
    test::TokenSpec bob = spec();
    bob.sub = "bob";
    WsClient a1 = s.connect_bearer(token());
    WsClient a2 = s.connect("/?token=" + token());
    WsClient b = s.connect_bearer(token(bob));
    BOOST_REQUIRE(test::wait_until([&] { return s.ex().connections() == 3; }));
    BOOST_CHECK_EQUAL(s.ex().notify_user("alice", Json{{"msg", "for alice"}}), 2u);
    for (WsClient* c : {&a1, &a2}) {
        Json m = next_json(*c);
        BOOST_CHECK_EQUAL(m["service"], "notify");
        BOOST_CHECK_EQUAL(m["data"]["msg"], "for alice");
    }
    // bob got nothing of it: his next message is his own reply
    BOOST_CHECK_EQUAL(whoami(b)["data"]["user"], "bob");
    BOOST_CHECK_EQUAL(s.ex().notify_user("bob", "for bob"), 1u);
    BOOST_CHECK_EQUAL(next_json(b)["data"], "for bob");
    // closed connections are unbound
    a1.close();
    a2.close();
    BOOST_CHECK(test::wait_until([&] { return s.ex().notify_user("alice", "gone?") == 0; }));
}

BOOST_AUTO_TEST_CASE(the_connection_is_closed_1008_token_expired_at_exp) {
    Server s({"auth.jwt.leeway_s=0"});
    test::TokenSpec short_lived = spec();
    short_lived.exp = now_s() + 2;
    WsClient c = s.connect_bearer(token(short_lived));
    WsMessage m = next_close(c);
    // Not before exp: ordering, not speed (a slow machine only closes it later). 100 ms for the clocks' reading.
    const auto now_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();
    BOOST_CHECK_GE(now_ms, *short_lived.exp * 1000 - 100);
    BOOST_CHECK_EQUAL(m.type, WsMessage::Type::close);
    BOOST_CHECK_EQUAL(m.close_code, 1008);
    BOOST_CHECK_EQUAL(m.close_reason, "token expired");
}

BOOST_AUTO_TEST_CASE(a_refresh_for_the_same_sub_keeps_the_connection_open_past_the_first_exp) {
    Server s({"auth.jwt.leeway_s=0"});
    test::TokenSpec short_lived = spec();
    short_lived.ttl_s = 3;  // time to connect twice and refresh on a loaded machine
    const std::string first = token(short_lived);
    WsClient refreshed = s.connect_bearer(first);
    WsClient control = s.connect_bearer(first);  // the same token, not refreshed

    test::TokenSpec longer = spec();
    longer.ttl_s = 600;
    const std::string second = token(longer);
    refreshed.send_text(Json{{"service", "/auth/refresh"}, {"token", second}}.dump());
    Json reply = next_json(refreshed);
    BOOST_CHECK_EQUAL(reply["service"], "/auth/refresh");
    BOOST_REQUIRE_EQUAL(reply["code"], 200);
    BOOST_CHECK_GE(reply["data"]["exp"].get<std::int64_t>(), now_s() + 500);

    // Both would end in the same tick of their (single) loop: the control's close proves the first exp passed.
    WsMessage m = next_close(control);
    BOOST_CHECK_EQUAL(m.close_code, 1008);
    BOOST_CHECK_EQUAL(m.close_reason, "token expired");
    Json me = whoami(refreshed);
    BOOST_CHECK_EQUAL(me["code"], 200);
    BOOST_CHECK_EQUAL(me["data"]["claims"]["exp"], reply["data"]["exp"]);  // handlers see the new claims
}

BOOST_AUTO_TEST_CASE(a_raw_endpoint_takes_the_same_refresh_message_before_its_handler) {
    Server s({"auth.jwt.leeway_s=0"});
    test::TokenSpec short_lived = spec();
    short_lived.ttl_s = 3;
    const std::string first = token(short_lived);
    WsClient refreshed = s.connect_bearer(first, "/raw");
    WsClient control = s.connect_bearer(first, "/raw");
    // The endpoint's own messages still reach its handler, JSON or not, even when they mention the service.
    refreshed.send_text(R"({"op":"say","msg":"/auth/refresh"})");
    BOOST_CHECK_EQUAL(next_json(refreshed)["user"], "alice");
    refreshed.send_text("/auth/refresh");
    BOOST_CHECK_EQUAL(next_json(refreshed)["user"], "alice");

    test::TokenSpec longer = spec();
    longer.ttl_s = 600;
    refreshed.send_text(Json{{"service", "/auth/refresh"}, {"token", token(longer)}}.dump());
    Json reply = next_json(refreshed);
    BOOST_CHECK_EQUAL(reply["service"], "/auth/refresh");
    BOOST_REQUIRE_EQUAL(reply["code"], 200);
    WsMessage m = next_close(control);
    BOOST_CHECK_EQUAL(m.close_reason, "token expired");
    refreshed.send_text("still here");
    BOOST_CHECK_EQUAL(next_json(refreshed)["user"], "alice");
    // A refused refresh is answered the same way and the endpoint's handler never sees it.
    test::TokenSpec mallory = spec();
    mallory.sub = "mallory";
    refreshed.send_text(Json{{"service", "/auth/refresh"}, {"token", token(mallory)}}.dump());
    BOOST_CHECK_EQUAL(next_json(refreshed)["code"], 403);
}

BOOST_AUTO_TEST_CASE(a_refresh_with_another_sub_or_a_bad_token_is_refused_and_changes_nothing) {
    Server s({"auth.jwt.leeway_s=0"});
    test::TokenSpec short_lived = spec();
    short_lived.ttl_s = 3;
    WsClient c = s.connect_bearer(token(short_lived));

    test::TokenSpec mallory = spec();
    mallory.sub = "mallory";
    c.send_text(Json{{"service", "/auth/refresh"}, {"token", token(mallory)}}.dump());
    Json reply = next_json(c);
    BOOST_CHECK_EQUAL(reply["code"], 403);
    BOOST_CHECK_EQUAL(reply["err"], "the token is for another user");
    test::TokenSpec expired = spec();
    expired.ttl_s = -10;
    c.send_text(Json{{"service", "/auth/refresh"}, {"token", token(expired)}}.dump());
    reply = next_json(c);
    BOOST_CHECK_EQUAL(reply["code"], 401);
    BOOST_CHECK_EQUAL(reply["err"], "invalid token: token expired");
    c.send_text(R"({"service":"/auth/refresh"})");
    BOOST_CHECK_EQUAL(next_json(c)["code"], 400);

    // still alice, still bound as alice only, and still closed at the first token's exp
    BOOST_CHECK_EQUAL(whoami(c)["data"]["user"], "alice");
    BOOST_CHECK_EQUAL(s.ex().notify_user("mallory", "x"), 0u);
    WsMessage m = next_close(c);
    BOOST_CHECK_EQUAL(m.close_code, 1008);
    BOOST_CHECK_EQUAL(m.close_reason, "token expired");
}

BOOST_AUTO_TEST_CASE(ws_auth_jwt_without_a_key_does_not_start) {
    hydra::App app;
    auto config =
        hydra::Config::from_json(Json::object(), "test",
                                 {"api.enabled=false", "admin.enabled=false", "ws.address=127.0.0.1:0",
                                  "mqc.enabled=false", "queue.sqlite.path=" + test::temp_path("q.db"), "ws.auth=jwt"},
                                 hydra::ConfigSchema::builtin());
    BOOST_CHECK_THROW(app.start(config), hydra::ConfigError);
    BOOST_CHECK(!app.running());
}

BOOST_AUTO_TEST_CASE(conf_check_refuses_jwt_settings_the_host_could_not_start_with) {
    auto conf_check = [](std::vector<std::string> sets) {
        std::vector<std::string> args = {HYDRA_BINARY, "conf", "check", "--env", "dev"};
        for (auto& s : sets) args.insert(args.end(), {"--set", s});
        test::ChildProcess p(args, std::string(HYDRA_SOURCE_DIR));
        const int status = p.wait(30s).value_or(-1);
        return std::to_string(status) + " " + p.err();
    };
    // (the dev profile has a development secret: blanked here)
    BOOST_CHECK_EQUAL(conf_check({"ws.auth=jwt", "auth.jwt.secret="}),
                      "2 hydra: invalid config: ws.auth=jwt needs auth.jwt.secret or auth.jwt.public_key_file\n");
    BOOST_CHECK_EQUAL(conf_check({"auth.jwt.secret=short"}),
                      "2 hydra: invalid config: auth.jwt.secret: at least 32 bytes (got 5)\n");
    BOOST_CHECK_EQUAL(conf_check({"auth.jwt.public_key_file=/nonexistent/key.pem"}),
                      "2 hydra: invalid config: auth.jwt.public_key_file: cannot read /nonexistent/key.pem\n");
    BOOST_CHECK_EQUAL(conf_check({"ws.auth=jwt", "auth.jwt.secret=" + kSecret}), "0 ");
}

BOOST_AUTO_TEST_CASE(hydra_token_makes_a_token_the_real_binary_accepts_and_the_binary_refuses_bad_ones) {
    const std::vector<std::string> sets = {"--set", "auth.jwt.secret=" + kSecret,
                                           "--set", "auth.jwt.issuer=" + kIssuer,
                                           "--set", "auth.jwt.audience=" + kAudience};
    auto hydra_token = [&](const std::string& sub, std::vector<std::string> extra = {}) {
        std::vector<std::string> args = {HYDRA_BINARY, "token", "--env", "dev", "--sub", sub, "--ttl", "600"};
        args.insert(args.end(), extra.begin(), extra.end());
        auto p = std::make_unique<test::ChildProcess>(args, std::string(HYDRA_SOURCE_DIR));
        return p;
    };
    auto p = hydra_token("alice", sets);
    BOOST_REQUIRE_EQUAL(p->wait(30s).value_or(-1), 0);
    std::string t = p->out();
    BOOST_REQUIRE(!t.empty() && t.back() == '\n');
    t.pop_back();
    // verifiable on its own (Poco) and with its claims
    Poco::JWT::Signer poco(kSecret);
    Poco::JWT::Token parsed = poco.verify(t);
    BOOST_CHECK_EQUAL(parsed.getSubject(), "alice");
    BOOST_CHECK_EQUAL(parsed.getIssuer(), kIssuer);
    BOOST_CHECK_EQUAL(parsed.getAudience().at(0), kAudience);

    // without a secret: exit 2 and a message naming the key
    auto none = hydra_token("alice", {"--set", "auth.jwt.secret="});
    BOOST_CHECK_EQUAL(none->wait(30s).value_or(-1), 2);
    BOOST_CHECK(none->err().find("auth.jwt.secret") != std::string::npos);

    // the real binary with ws.auth=jwt takes it, and takes a second one as a refresh
    std::vector<std::string> host_sets = sets;
    host_sets.insert(host_sets.end(), {"--set", "ws.auth=jwt"});
    test::Host host(host_sets);
    try {
        WsClient anonymous = host.connect("/");
        BOOST_ERROR("accepted without a token");
    } catch (const WsHandshakeError& e) {
        BOOST_CHECK_EQUAL(e.status(), 401);
    }
    // The binary refuses what the server refuses in-process above, with the same reasons.
    for (const auto& bad : test::refused_tokens(spec())) {
        try {
            WsClient refused_client =
                WsClient::connect("127.0.0.1", host.ws_port, "/", {{"Sec-WebSocket-Protocol", "bearer, " + bad.token}});
            BOOST_ERROR("accepted: " << bad.what);
        } catch (const WsHandshakeError& e) {
            BOOST_CHECK_EQUAL(e.status(), 401);
            BOOST_CHECK_EQUAL(e.body(), bad.reason + "\n");
        }
    }
    WsClient c = WsClient::connect("127.0.0.1", host.ws_port, "/", {{"Authorization", "Bearer " + t}});
    const std::string uuid = c.response_header("X-Request-Id").value_or("");
    auto r = test::http(host.admin, "POST", "/v1/exchange/notify", Json{{"uuid", uuid}, {"data", "hi"}}.dump());
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(test::next_json(c)["data"], "hi");
    auto again = hydra_token("alice", sets);
    BOOST_REQUIRE_EQUAL(again->wait(30s).value_or(-1), 0);
    std::string t2 = again->out();
    t2.pop_back();
    c.send_text(Json{{"service", "/auth/refresh"}, {"token", t2}}.dump());
    BOOST_CHECK_EQUAL(test::next_json(c)["code"], 200);
}

BOOST_AUTO_TEST_SUITE_END()
