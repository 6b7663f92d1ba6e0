// The admin listener and API keys: the endpoints that reach every client are not on the public listener, take a key
// from auth.api_keys when keys are configured, and cannot be exposed beyond loopback without keys.
#include <boost/test/unit_test.hpp>

#include <hydra/app.h>
#include <hydra/ws_client.h>

#include "app/app_impl.h"
#include "auth/api_keys.h"
#include "services/admin/exchange_api.h"
#include "services/system/echo.h"
#include "support/host.h"
#include "support/http.h"
#include "support/process.h"
#include "support/temp.h"

using hydra::Json;
using hydra::WsClient;
using hydra::WsMessage;
using namespace std::chrono_literals;

namespace {

const std::string kKey = "k-one-7f3a9c";
const std::string kOtherKey = "k-two-longer-than-the-first-b81d";

// An in-process host: the admin routes, a public route that takes a key, one that does not.
struct Keyed {
    hydra::App app;
    std::string api, admin;
    int ws_port = 0;

    explicit Keyed(std::vector<std::string> sets = {"auth.api_keys=" + kKey + "," + kOtherKey}) {
        services::admin::register_routes(app);
        app.ws_endpoint("/echo", services::system::echo_endpoint());
        app.api("/backend",
                [](hydra::Context&) {
                    return Json{{"ok", true}};
                },
                {.methods = {"POST"}, .auth = hydra::Auth::api_key});
        app.api("/open", [](hydra::Context&) { return Json{{"ok", true}}; });
        sets.insert(sets.begin(), {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.address=127.0.0.1:0",
                                   "log.level=error", "queue.sqlite.path=" + test::temp_path("q.db")});
        app.start(hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin()));
        api = app.api_address();
        admin = app.admin_address();
        std::string ws = app.ws_address();
        ws_port = std::stoi(ws.substr(ws.rfind(':') + 1));
    }
};

test::HttpReply post(const std::string& address, const std::string& path, const std::string& body,
                     const std::map<std::string, std::string>& headers = {}) {
    return test::http(address, "POST", path, body, "application/json", headers);
}

void check_refused(const test::HttpReply& r, const std::string& what) {
    BOOST_CHECK_MESSAGE(r.status == 401, what << ": status " << r.status << " " << r.body);
    if (r.status != 401) return;
    Json body = r.json();
    BOOST_CHECK_EQUAL(body["code"], 401);
    BOOST_CHECK(body["msg"].is_string() && !body["msg"].get<std::string>().empty());
    BOOST_CHECK_EQUAL(r.headers.count("WWW-Authenticate"), 1u);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(admin_auth)

BOOST_AUTO_TEST_CASE(admin_routes_refuse_a_missing_or_wrong_key_and_deliver_nothing) {
    Keyed k;
    WsClient client = WsClient::connect("127.0.0.1", k.ws_port, "/echo");
    const std::string body = R"({"data":"refused"})";
    check_refused(post(k.admin, "/v1/exchange/broadcast", body), "no key");
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"X-API-Key", "wrong"}}), "wrong key");
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"X-API-Key", ""}}), "empty key");
    // Near misses: a prefix, the key with a byte more, another case, the two keys joined.
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"X-API-Key", kKey.substr(0, kKey.size() - 1)}}),
                  "prefix");
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"X-API-Key", kKey + "x"}}), "longer");
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"X-API-Key", "K-ONE-7F3A9C"}}), "upper case");
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"X-API-Key", kKey + "," + kOtherKey}}), "joined");
    // The key under another scheme is not an API key.
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"Authorization", "Bearer " + kKey}}), "bearer");
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"Authorization", "apikey"}}), "scheme alone");
    check_refused(post(k.admin, "/v1/exchange/broadcast", body, {{"Authorization", "apikey wrong"}}), "apikey wrong");
    // Every admin route, whatever its body: the key is checked before the body is read.
    check_refused(post(k.admin, "/v1/mesh/publish", R"({"c":"room:1","d":"x"})"), "publish");
    check_refused(post(k.admin, "/v1/exchange/notify", R"({"uuid":"x","data":1})"), "notify");
    check_refused(post(k.admin, "/v1/exchange/notify_user", R"({"user":"x","data":1})"), "notify_user");
    check_refused(post(k.admin, "/v1/exchange/broadcast", R"({"data":)"), "malformed body");

    // Nothing of the refused calls reached the client: the first message it gets is the accepted broadcast's.
    auto r = post(k.admin, "/v1/exchange/broadcast", R"({"data":"accepted"})", {{"X-API-Key", kKey}});
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(Json::parse(client.receive(10s).data)["data"], "accepted");
}

BOOST_AUTO_TEST_CASE(the_right_key_is_accepted_in_either_header) {
    Keyed k;
    WsClient client = WsClient::connect("127.0.0.1", k.ws_port, "/echo");
    const std::vector<std::map<std::string, std::string>> accepted = {
        {{"X-API-Key", kKey}},
        {{"X-API-Key", kOtherKey}},  // any of the configured keys
        {{"Authorization", "apikey " + kKey}},
        {{"Authorization", "ApiKey " + kOtherKey}},  // the scheme is case-insensitive
    };
    int n = 0;
    for (const auto& headers : accepted) {
        auto r = post(k.admin, "/v1/exchange/broadcast", Json{{"data", n}}.dump(), headers);
        BOOST_CHECK_MESSAGE(r.status == 200, headers.begin()->first << ": " << r.status << " " << r.body);
        BOOST_CHECK_EQUAL(Json::parse(client.receive(10s).data)["data"], n);
        ++n;
    }
    // A public route registered with Auth::api_key takes the same keys; one without takes none.
    check_refused(post(k.api, "/backend", "{}"), "keyed public route");
    BOOST_CHECK_EQUAL(post(k.api, "/backend", "{}", {{"X-API-Key", kKey}}).status, 200);
    BOOST_CHECK_EQUAL(post(k.api, "/open", "{}").status, 200);
}

BOOST_AUTO_TEST_CASE(admin_routes_are_absent_from_the_public_listener) {
    Keyed k;
    for (const char* path :
         {"/v1/mesh/publish", "/v1/exchange/notify", "/v1/exchange/notify_user", "/v1/exchange/broadcast"}) {
        // Not there at all: with or without a key.
        BOOST_CHECK_EQUAL(post(k.api, path, R"({"data":1})").status, 404);
        BOOST_CHECK_EQUAL(post(k.api, path, R"({"data":1})", {{"X-API-Key", kKey}}).status, 404);
    }
    // And the public routes are not on the admin listener.
    BOOST_CHECK_EQUAL(post(k.admin, "/open", "{}", {{"X-API-Key", kKey}}).status, 404);
}

BOOST_AUTO_TEST_CASE(without_keys_the_admin_listener_is_open_on_loopback_only) {
    Keyed k(std::vector<std::string>{});
    BOOST_CHECK_EQUAL(post(k.admin, "/v1/exchange/broadcast", R"({"data":1})").status, 200);
    BOOST_CHECK_EQUAL(post(k.api, "/backend", "{}").status, 200);  // a development host: keyed routes are open
    BOOST_CHECK_EQUAL(k.admin.rfind("127.0.0.1:", 0), 0u);

    // Anything else is refused before a socket is bound, naming the key; with keys it is allowed.
    auto config = [](std::vector<std::string> sets) {
        return hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin());
    };
    for (const std::string address : {"0.0.0.0:9091", ":9091", "[::]:9091", "10.1.2.3:9091", "admin.example:9091"}) {
        try {
            hydra::check_exposure(config({"admin.address=" + address}));
            BOOST_ERROR("accepted " << address);
        } catch (const hydra::ConfigError& e) {
            BOOST_CHECK_MESSAGE(std::string(e.what()).find("admin.address: " + address) != std::string::npos, e.what());
        }
        BOOST_CHECK_NO_THROW(hydra::check_exposure(config({"admin.address=" + address, "auth.api_keys=" + kKey})));
        BOOST_CHECK_NO_THROW(hydra::check_exposure(config({"admin.address=" + address, "admin.enabled=false"})));
    }
    for (const std::string address : {"127.0.0.1:0", "127.0.0.2:9091", "localhost:9091", "[::1]:9091"})
        BOOST_CHECK_NO_THROW(hydra::check_exposure(config({"admin.address=" + address})));

    // App::start refuses too, and starts nothing.
    hydra::App app;
    BOOST_CHECK_THROW(app.start(config({"api.address=127.0.0.1:0", "ws.address=127.0.0.1:0", "admin.address=0.0.0.0:0",
                                        "queue.sqlite.path=" + test::temp_path("r.db")})),
                      hydra::ConfigError);
    BOOST_CHECK(!app.running());
    BOOST_CHECK_EQUAL(app.api_address(), "");
}

BOOST_AUTO_TEST_CASE(the_binary_refuses_to_start_a_non_loopback_admin_listener_without_keys) {
    for (const std::string& command : {std::string("run"), std::string("conf check")}) {
        std::vector<std::string> args = {HYDRA_BINARY};
        if (command == "run") {
            args.push_back("run");
        } else {
            args.insert(args.end(), {"conf", "check"});
        }
        args.insert(args.end(),
                    {"--env", "dev", "--set", "api.address=127.0.0.1:0", "--set", "ws.address=127.0.0.1:0", "--set",
                     "admin.address=0.0.0.0:0", "--set", "queue.sqlite.path=" + test::temp_path("refused.db"), "--set",
                     "services.push.database=" + test::temp_path("refused-push.db")});
        test::ChildProcess p(args, std::string(HYDRA_SOURCE_DIR));
        BOOST_CHECK_EQUAL(p.wait(30s).value_or(-1), 2);  // an invalid config, as for any other
        const std::string& err = p.err();
        BOOST_CHECK_MESSAGE(err.find("hydra: invalid config: ") == 0, command << ": " << err);
        BOOST_CHECK_MESSAGE(err.find("admin.address: 0.0.0.0:0") != std::string::npos, command << ": " << err);
        BOOST_CHECK_MESSAGE(p.out().find("listening") == std::string::npos, command << ": " << p.out());
    }
}

BOOST_AUTO_TEST_CASE(the_demo_send_routes_take_a_key_once_keys_are_configured) {
    {
        test::Host host({"--set", "auth.api_keys=" + kKey});
        auto ws = host.connect("/");
        BOOST_REQUIRE_EQUAL(test::login(ws, "alice", "alice-pw")["code"], 200);
        const std::string send = R"({"uname":"alice","msg":"with a key"})";
        check_refused(post(host.api, "/msg/send", send), "/msg/send without a key");
        check_refused(post(host.api, "/msg/send", send, {{"X-API-Key", "wrong"}}), "/msg/send with a wrong key");
        check_refused(post(host.api, "/msg/broadcast", R"({"msg":"x"})"), "/msg/broadcast without a key");
        BOOST_CHECK_EQUAL(post(host.api, "/msg/send", send, {{"Authorization", "apikey " + kKey}}).status, 200);
        // The refused sends queued nothing: the first message alice gets is the accepted one.
        BOOST_CHECK_EQUAL(test::next_json(ws)["data"]["msg"], "with a key");
        // The admin listener of the binary takes the key too.
        check_refused(post(host.admin, "/v1/exchange/broadcast", R"({"data":1})"), "binary admin without a key");
        BOOST_CHECK_EQUAL(post(host.admin, "/v1/exchange/broadcast", R"({"data":1})", {{"X-API-Key", kKey}}).status,
                          200);
    }
    {
        // No keys (the dev profile): the Quick start's curl works as before.
        test::Host host;
        auto ws = host.connect("/");
        BOOST_REQUIRE_EQUAL(test::login(ws, "alice", "alice-pw")["code"], 200);
        BOOST_CHECK_EQUAL(post(host.api, "/msg/send", R"({"uname":"alice","msg":"no key"})").status, 200);
        BOOST_CHECK_EQUAL(test::next_json(ws)["data"]["msg"], "no key");
    }
}

BOOST_AUTO_TEST_CASE(conf_show_masks_the_api_keys) {
    test::ChildProcess p(
        {HYDRA_BINARY, "conf", "show", "--env", "dev", "--set", "auth.api_keys=alpha-secret-1,beta-secret-2"},
        std::string(HYDRA_SOURCE_DIR));
    BOOST_REQUIRE_EQUAL(p.wait(30s).value_or(-1), 0);
    Json shown = Json::parse(p.out());
    BOOST_CHECK_EQUAL(shown["auth"]["api_keys"], (Json{"******", "******"}));
    BOOST_CHECK(p.out().find("alpha-secret") == std::string::npos);
    BOOST_CHECK(p.out().find("beta-secret") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(api_keys_compare_whole_keys_only) {
    hydra::auth::ApiKeys keys({kKey, kOtherKey});
    BOOST_CHECK(keys.accepts(kKey));
    BOOST_CHECK(keys.accepts(kOtherKey));
    for (const std::string& wrong : {std::string(), kKey.substr(0, 1), kKey.substr(0, kKey.size() - 1), kKey + " ",
                                     std::string(kKey.c_str(), kKey.size()) + std::string(1, '\0'), kKey + kOtherKey})
        BOOST_CHECK_MESSAGE(!keys.accepts(wrong), "accepted \"" << wrong << "\"");
    BOOST_CHECK(hydra::auth::ApiKeys().empty());
    BOOST_CHECK(!hydra::auth::ApiKeys().accepts(kKey));
}

BOOST_AUTO_TEST_SUITE_END()
