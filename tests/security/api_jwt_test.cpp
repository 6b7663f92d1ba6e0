// API routes registered with Auth::jwt, against the real binary's GET /auth/whoami: a request without a token this
// host accepts is a 401 {"code":401,"msg":...} with a Bearer challenge that never reaches the handler; a good token
// makes its sub the handler's user; an API key is no token and a token is no API key; a host with such a route and
// no auth.jwt key does not start.
#include <boost/test/unit_test.hpp>

#include <Poco/JWT/Signer.h>
#include <Poco/JWT/Token.h>

#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <hydra/app.h>

#include "support/host.h"
#include "support/http.h"
#include "support/jwt.h"
#include "support/process.h"
#include "support/temp.h"

using hydra::Json;
using namespace std::chrono_literals;

namespace {

const std::string kSecret = "api-jwt-test-secret-0123456789abcdef";  // 36 bytes
const std::string kIssuer = "https://id.example";
const std::string kAudience = "hydra-api";
const std::string kApiKey = "api-jwt-test-backend-key";

// Tokens for this host: its issuer, audience and secret unless a case says otherwise.
test::TokenSpec spec() { return test::spec_for(kSecret, kIssuer, kAudience); }
std::string token(const test::TokenSpec& s = spec()) { return test::hs256_token(s); }

// The binary with this suite's JWT settings and an API key (so that the demo's /msg/send takes one).
std::vector<std::string> host_sets(std::vector<std::string> more = {}) {
    std::vector<std::string> sets = {"--set", "auth.jwt.secret=" + kSecret,     "--set", "auth.jwt.issuer=" + kIssuer,
                                     "--set", "auth.jwt.audience=" + kAudience, "--set", "auth.api_keys=" + kApiKey};
    sets.insert(sets.end(), more.begin(), more.end());
    return sets;
}

test::HttpReply whoami(const test::Host& host, const std::map<std::string, std::string>& headers) {
    return test::http(host.api, "GET", "/auth/whoami", {}, "application/json", headers);
}

std::map<std::string, std::string> bearer(const std::string& t) { return {{"Authorization", "Bearer " + t}}; }

// An RS256 token for `sub` signed with `pair`'s key.
std::string rs256(const test::RsaPair& pair, const std::string& sub) {
    Poco::JWT::Token t;
    t.setType("JWT");
    t.payload().set("sub", sub);
    t.payload().set("exp", static_cast<Poco::Int64>(test::now_s() + 600));
    Poco::JWT::Signer signer(pair.key);
    return signer.sign(t, Poco::JWT::Signer::ALGO_RS256);
}

// `hydra <args...> --env dev` with its own ports and files; exit status and stderr.
std::pair<int, std::string> run_binary(std::vector<std::string> args) {
    std::vector<std::string> argv = {HYDRA_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--env", "dev", "--set", "api.address=127.0.0.1:0", "--set", "admin.address=127.0.0.1:0",
                             "--set", "ws.address=127.0.0.1:0", "--set", "queue.sqlite.path=" + test::temp_path("q.db"),
                             "--set", "services.push.database=" + test::temp_path("push.db")});
    test::ChildProcess p(argv, std::string(HYDRA_SOURCE_DIR));
    const int status = p.wait(60s).value_or(-1);
    return {status, p.err()};
}

}  // namespace

BOOST_AUTO_TEST_SUITE(api_jwt)

BOOST_AUTO_TEST_CASE(a_request_without_an_acceptable_token_is_refused_401_with_a_bearer_challenge) {
    test::Host host(host_sets());
    test::TokenSpec no_sub = spec();
    no_sub.sub = "";
    struct Case {
        std::string what;
        std::map<std::string, std::string> headers;
        std::string msg;
    };
    std::vector<Case> cases = {
        {"no token", {}, "missing token"},
        {"an empty bearer", {{"Authorization", "Bearer "}}, "missing token"},
        {"not a bearer token", {{"Authorization", "Basic YWxpY2U6cHc="}}, "missing token"},
        {"the token as a query", {}, "missing token"},  // only the header counts on the API
        {"garbage", bearer("not.a.token"), "invalid token: malformed token"},
        {"no sub", bearer(token(no_sub)), "invalid token: missing sub"},
    };
    for (const auto& r : test::refused_tokens(spec())) cases.push_back({r.what, bearer(r.token), r.reason});
    for (const auto& c : cases) {
        BOOST_TEST_CONTEXT(c.what) {
            const std::string path =
                c.what == "the token as a query" ? "/auth/whoami?token=" + token() : "/auth/whoami";
            test::HttpReply r = test::http(host.api, "GET", path, {}, "application/json", c.headers);
            BOOST_CHECK_EQUAL(r.status, 401);
            BOOST_CHECK_EQUAL(r.body, Json({{"code", 401}, {"msg", c.msg}}).dump());
            BOOST_CHECK_MESSAGE(r.headers["WWW-Authenticate"].rfind("Bearer", 0) == 0, r.headers["WWW-Authenticate"]);
            BOOST_CHECK(!r.headers["X-Request-Id"].empty());
            // the answer never carries the token back
            auto auth = c.headers.find("Authorization");
            if (auth != c.headers.end() && auth->second.size() > 7) {
                const std::string presented = auth->second.substr(7);
                for (const auto& [name, value] : r.headers) BOOST_CHECK(value.find(presented) == std::string::npos);
                BOOST_CHECK(r.body.find(presented) == std::string::npos);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(a_valid_token_reaches_the_handler_with_its_sub_as_the_user) {
    test::Host host(host_sets());
    test::HttpReply r = whoami(host, bearer(token()));
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.body, R"({"user":"alice"})");
    test::TokenSpec bob = spec();
    bob.sub = "bob";
    BOOST_CHECK_EQUAL(whoami(host, bearer(token(bob))).body, R"({"user":"bob"})");
    // the scheme is case-insensitive (RFC 7235); a token within the leeway past exp is still good
    test::TokenSpec just_expired = spec();
    just_expired.ttl_s = -5;
    BOOST_CHECK_EQUAL(whoami(host, {{"Authorization", "bearer " + token(just_expired)}}).status, 200);
    // the route answers GET only
    BOOST_CHECK_EQUAL(test::http(host.api, "POST", "/auth/whoami", "{}", "application/json", bearer(token())).status,
                      405);
}

BOOST_AUTO_TEST_CASE(a_host_with_a_public_key_takes_rs256_and_refuses_an_hs256_token_keyed_with_that_key) {
    const test::RsaPair pair;
    const std::string pem_file = test::temp_path("jwt-public.pem");
    std::ofstream(pem_file) << pair.pem();
    test::Host host({"--set", "auth.jwt.secret=", "--set", "auth.jwt.public_key_file=" + pem_file});
    test::HttpReply good = whoami(host, bearer(rs256(pair, "carol")));
    BOOST_CHECK_EQUAL(good.status, 200);
    BOOST_CHECK_EQUAL(good.body, R"({"user":"carol"})");
    // HS/RS confusion: the public key (which anyone may have) used as an HMAC secret
    test::TokenSpec forged = spec();
    forged.iss = forged.aud = "";
    forged.secret = pair.pem();
    test::HttpReply r = whoami(host, bearer(token(forged)));
    BOOST_CHECK_EQUAL(r.status, 401);
    BOOST_CHECK_EQUAL(r.json()["msg"], "invalid token: algorithm HS256 not allowed");
    // and another key pair's token
    BOOST_CHECK_EQUAL(whoami(host, bearer(rs256(test::RsaPair(), "carol"))).json()["msg"],
                      "invalid token: bad signature");
}

BOOST_AUTO_TEST_CASE(an_api_key_route_does_not_take_a_bearer_token_and_a_jwt_route_does_not_take_an_api_key) {
    test::Host host(host_sets());
    const std::string send = Json{{"uname", "alice"}, {"msg", "hi"}}.dump();
    // /msg/send (Auth::api_key) with a valid JWT: refused as without a key
    test::HttpReply with_token = test::http(host.api, "POST", "/msg/send", send, "application/json", bearer(token()));
    BOOST_CHECK_EQUAL(with_token.status, 401);
    BOOST_CHECK_EQUAL(with_token.headers["WWW-Authenticate"], "apikey");
    // ... and taken with the key (whatever the demo then answers, it is past the check)
    test::HttpReply with_key =
        test::http(host.api, "POST", "/msg/send", send, "application/json", {{"Authorization", "apikey " + kApiKey}});
    BOOST_CHECK_NE(with_key.status, 401);
    // /auth/whoami (Auth::jwt) with the API key, either way it can be presented: no token
    for (const auto& headers :
         std::vector<std::map<std::string, std::string>>{{{"Authorization", "apikey " + kApiKey}},
                                                         {{"X-API-Key", kApiKey}},
                                                         {{"Authorization", "Bearer " + kApiKey}}}) {
        test::HttpReply r = whoami(host, headers);
        BOOST_CHECK_EQUAL(r.status, 401);
        BOOST_CHECK(r.headers["WWW-Authenticate"].rfind("Bearer", 0) == 0);
    }
    BOOST_CHECK_EQUAL(whoami(host, bearer(token())).status, 200);
}

BOOST_AUTO_TEST_CASE(a_host_with_a_jwt_route_and_no_jwt_key_does_not_start) {
    const std::string expected =
        "hydra: invalid config: route GET /auth/whoami requires a JWT (Auth::jwt): it needs auth.jwt.secret or "
        "auth.jwt.public_key_file\n";
    // (the dev profile has a development secret: blanked here)
    auto [status, err] = run_binary({"run", "--set", "auth.jwt.secret="});
    BOOST_CHECK_EQUAL(status, 2);
    BOOST_CHECK_EQUAL(err, expected);
    auto [check_status, check_err] = run_binary({"conf", "check", "--set", "auth.jwt.secret="});
    BOOST_CHECK_EQUAL(check_status, 2);
    BOOST_CHECK_EQUAL(check_err, expected);
    // ws.auth=jwt without a key is named first
    auto [ws_status, ws_err] = run_binary({"run", "--set", "auth.jwt.secret=", "--set", "ws.auth=jwt"});
    BOOST_CHECK_EQUAL(ws_status, 2);
    BOOST_CHECK_EQUAL(ws_err, "hydra: invalid config: ws.auth=jwt needs auth.jwt.secret or auth.jwt.public_key_file\n");
}

// The same check in-process, for routes of either listener and async routes, whose requests are answered on the
// I/O loop (a path of its own).
BOOST_AUTO_TEST_CASE(an_async_or_admin_route_with_auth_jwt_is_checked_and_sees_the_claims) {
    auto make = [](hydra::App& app) {
        app.api_async("/me",
                      [](hydra::Context& ctx, hydra::Reply reply) {
                          reply(Json{{"user", ctx.user()}, {"role", ctx.claims().value("role", "")}});
                      },
                      {.methods = {"GET"}, .auth = hydra::Auth::jwt});
        app.api("/admin/me",
                [](hydra::Context& ctx) {
                    return Json{{"user", ctx.user()}};
                },
                {.methods = {"GET"}, .auth = hydra::Auth::jwt, .listener = hydra::Listener::admin});
        app.api("/open", [](hydra::Context& ctx) { return Json{{"claims", ctx.claims()}, {"user", ctx.user()}}; });
    };
    auto config = [](std::vector<std::string> sets) {
        sets.insert(sets.end(),
                    {"api.address=127.0.0.1:0", "admin.address=127.0.0.1:0", "ws.enabled=false", "mqc.enabled=false",
                     "log.level=error", "queue.sqlite.path=" + test::temp_path("q.db")});
        return hydra::Config::from_json(Json::object(), "test", sets, hydra::ConfigSchema::builtin());
    };
    {
        hydra::App app;
        make(app);
        BOOST_CHECK_EXCEPTION(app.start(config({})), hydra::ConfigError, [](const hydra::ConfigError& e) {
            return std::string(e.what()).find("route GET /me requires a JWT") != std::string::npos;
        });
        BOOST_CHECK(!app.running());
        // the admin listener's route alone, with the public API off
        hydra::App admin_only;
        admin_only.api("/admin/me", [](hydra::Context&) { return Json(); },
                       {.methods = {"GET"}, .auth = hydra::Auth::jwt, .listener = hydra::Listener::admin});
        BOOST_CHECK_THROW(admin_only.start(config({"api.enabled=false"})), hydra::ConfigError);
    }
    hydra::App app;
    make(app);
    app.start(config({"auth.jwt.secret=" + kSecret}));
    test::TokenSpec plain = spec();
    plain.iss = plain.aud = "";  // not configured here: not checked
    test::HttpReply r = test::http(app.api_address(), "GET", "/me", {}, "application/json", bearer(token(plain)));
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.body, R"({"role":"tester","user":"alice"})");
    BOOST_CHECK_EQUAL(test::http(app.api_address(), "GET", "/me").body, R"({"code":401,"msg":"missing token"})");
    BOOST_CHECK_EQUAL(
        test::http(app.admin_address(), "GET", "/admin/me", {}, "application/json", bearer(token(plain))).body,
        R"({"user":"alice"})");
    BOOST_CHECK_EQUAL(test::http(app.admin_address(), "GET", "/admin/me").status, 401);
    // a route without Auth::jwt sees no claims, whatever the request carries
    BOOST_CHECK_EQUAL(test::http(app.api_address(), "GET", "/open", {}, "application/json", bearer(token(plain))).body,
                      R"({"claims":null,"user":""})");
    app.stop();
}

BOOST_AUTO_TEST_SUITE_END()
