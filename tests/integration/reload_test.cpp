// SIGHUP re-reads the profile of the real binary: what may change while running is applied at once (API keys,
// allowed origins, rate limits, log level), changes that take a restart are named in one line and keep their running
// values, and an invalid profile changes nothing (the process stays up).
#include <boost/test/unit_test.hpp>

#include <fstream>

#include <hydra/json.h>
#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/http.h"
#include "support/http_raw.h"
#include "support/temp.h"
#include "support/wait.h"

using hydra::Json;
using namespace std::chrono_literals;

namespace {

Json dev_profile() {
    std::ifstream in(std::string(HYDRA_SOURCE_DIR) + "/config/dev.json");
    return Json::parse(in);
}

void write(const std::string& file, const std::string& text) {
    std::ofstream(file + ".tmp") << text;
    std::rename((file + ".tmp").c_str(), file.c_str());
}

// The status of an upgrade on "/echo" from a page at `origin`.
int upgrade_status(int ws_port, const std::string& origin) {
    test::RawHttp raw("127.0.0.1:" + std::to_string(ws_port));
    raw.send(
        "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: " +
        origin + "\r\n\r\n");
    return test::status_of(
        raw.read_until([](const std::string& in) { return in.find("\r\n\r\n") != std::string::npos; }));
}

}  // namespace

BOOST_AUTO_TEST_SUITE(reload)

BOOST_AUTO_TEST_CASE(sighup_applies_what_it_can_names_what_takes_a_restart_and_refuses_an_invalid_profile) {
    const std::string file = test::temp_path("profile.json");
    Json profile = dev_profile();
    write(file, profile.dump());
    test::Host host({"--config", file, "--set", "log.level=info"});
    BOOST_CHECK_EQUAL(test::http(host.admin, "GET", "/metrics").status, 200);  // no keys yet
    BOOST_CHECK_EQUAL(upgrade_status(host.ws_port, "https://elsewhere.example"), 101);

    // Keys, origins and a rate limit apply at once; the API's I/O threads take a restart.
    profile["auth"]["api_keys"] = Json::array({"new-key"});
    profile["ws"]["allowed_origins"] = Json::array({"https://app.example"});
    profile["ws"]["rate_limit"] = {{"messages_per_s", 5}, {"burst", 5}};
    profile["api"]["io_threads"] = 2;
    write(file, profile.dump());
    host.process->signal(SIGHUP);
    BOOST_REQUIRE(host.process->wait_for_stderr("reload: applied ([^\n]*)", 20s));
    auto restart = host.process->wait_for_stderr("take a restart, their running values stay: ([^\n]*)", 20s);
    BOOST_REQUIRE(restart);
    BOOST_CHECK_EQUAL(*restart, "api.io_threads");
    const std::string applied = *host.process->wait_for_stderr("reload: applied ([^\n]*)", 1s);
    for (const char* key :
         {"auth.api_keys", "ws.allowed_origins", "ws.rate_limit.burst", "ws.rate_limit.messages_per_s"})
        BOOST_CHECK_MESSAGE(applied.find(key) != std::string::npos, applied);

    BOOST_CHECK_EQUAL(test::http(host.admin, "GET", "/metrics").status, 401);
    BOOST_CHECK_EQUAL(test::http(host.admin, "GET", "/metrics", "", "", {{"Authorization", "apikey new-key"}}).status,
                      200);
    BOOST_CHECK_EQUAL(upgrade_status(host.ws_port, "https://elsewhere.example"), 403);
    BOOST_CHECK_EQUAL(upgrade_status(host.ws_port, "https://app.example"), 101);
    // The new WS rate: 5 messages at once, the next ones close the connection 1008.
    hydra::WsClient c = host.connect("/echo");
    hydra::WsMessage m;
    for (int i = 0; i < 20 && m.type != hydra::WsMessage::Type::close; ++i) {
        c.send_text("x");
        m = c.receive(10s);
    }
    BOOST_CHECK(m.type == hydra::WsMessage::Type::close);
    BOOST_CHECK_EQUAL(m.close_code, 1008);

    // An invalid profile (a value the schema refuses, then no JSON at all) is refused whole: the process goes on
    // with the running configuration.
    profile["auth"]["api_keys"] = Json::array({"other-key"});
    profile["limits"]["json_depth"] = 0;  // below the schema's minimum
    write(file, profile.dump());
    host.process->signal(SIGHUP);
    BOOST_REQUIRE_MESSAGE(
        host.process->wait_for_stderr("reload refused, the running configuration stays: [^\n]*limits.json_depth", 20s),
        host.process->err());
    write(file, "{ not json");
    host.process->signal(SIGHUP);
    BOOST_REQUIRE(test::wait_until([&] {
        const std::string& err = host.process->err();
        std::size_t n = 0;
        for (auto at = err.find("reload refused"); at != std::string::npos; at = err.find("reload refused", at + 1))
            ++n;
        return n == 2;
    }));
    BOOST_CHECK_EQUAL(test::http(host.admin, "GET", "/metrics", "", "", {{"Authorization", "apikey new-key"}}).status,
                      200);
    BOOST_CHECK_EQUAL(test::http(host.admin, "GET", "/metrics", "", "", {{"Authorization", "apikey other-key"}}).status,
                      401);
    BOOST_CHECK_EQUAL(test::http(host.api, "GET", "/healthz").status, 200);
}

BOOST_AUTO_TEST_CASE(a_reload_that_would_leave_a_public_admin_listener_without_keys_is_refused) {
    // An admin listener on every interface with a key: a profile without the key would leave it open. Refused whole
    // (the check runs on what would run: a new admin.address would take a restart, so the running one counts).
    const std::string file = test::temp_path("profile.json");
    Json profile = dev_profile();
    profile["auth"]["api_keys"] = Json::array({"the-key"});
    write(file, profile.dump());
    test::Host host({"--config", file, "--set", "log.level=info", "--set", "admin.address=0.0.0.0:0"});
    const std::string& admin = host.admin;  // reached on loopback
    BOOST_CHECK_EQUAL(test::http(admin, "GET", "/metrics").status, 401);

    profile["auth"]["api_keys"] = Json::array();
    write(file, profile.dump());
    host.process->signal(SIGHUP);
    BOOST_REQUIRE_MESSAGE(
        host.process->wait_for_stderr("reload refused, the running configuration stays: [^\n]*admin.address", 20s),
        host.process->err());
    BOOST_CHECK_EQUAL(test::http(admin, "GET", "/metrics").status, 401);
    BOOST_CHECK_EQUAL(test::http(admin, "GET", "/metrics", "", "", {{"Authorization", "apikey the-key"}}).status, 200);
}

BOOST_AUTO_TEST_SUITE_END()
