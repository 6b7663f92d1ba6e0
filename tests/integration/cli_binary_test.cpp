// The real `hydra` binary as a child process: commands, exit statuses, config errors, run and graceful stop.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <Poco/Net/ServerSocket.h>

#include "support/http.h"
#include "support/process.h"

using namespace std::chrono_literals;
using test::ChildProcess;

namespace {

std::filesystem::path temp_dir() {
    auto dir = std::filesystem::temp_directory_path() / ("hydra-cli-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    return dir;
}

std::string write_file(const std::string& name, const std::string& text) {
    auto path = temp_dir() / name;
    std::ofstream(path) << text;
    return path.string();
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cli_binary)

BOOST_AUTO_TEST_CASE(version_and_help) {
    ChildProcess v({HYDRA_BINARY, "version"});
    BOOST_CHECK_EQUAL(v.wait(10s).value_or(-1), 0);
    BOOST_CHECK(v.out().find("hydra " HYDRA_VERSION) == 0);

    ChildProcess h({HYDRA_BINARY, "--help"});
    BOOST_CHECK_EQUAL(h.wait(10s).value_or(-1), 0);
    BOOST_CHECK(h.out().find("conf check") != std::string::npos);

    ChildProcess bad({HYDRA_BINARY, "launch"});
    BOOST_CHECK_EQUAL(bad.wait(10s).value_or(-1), 2);
    BOOST_CHECK_EQUAL(bad.err(), "hydra: unknown command 'launch' (try: hydra --help)\n");
}

BOOST_AUTO_TEST_CASE(conf_check_accepts_both_profiles) {
    for (const char* env : {"dev", "prod"}) {
        ChildProcess p({HYDRA_BINARY, "conf", "check", "--env", env}, temp_dir().string());
        BOOST_CHECK_EQUAL(p.wait(10s).value_or(-1), 0);
        BOOST_CHECK_MESSAGE(p.out().find(std::string("config/") + env + ".json") != std::string::npos, p.out());
    }
}

BOOST_AUTO_TEST_CASE(conf_check_rejects_bad_config_with_one_line_naming_the_key) {
    struct Case {
        std::string json;
        std::string expected;  // a substring of the one line
    };
    std::vector<Case> cases = {
        {R"({"api":{"adress":"127.0.0.1:1"}})", ": api.adress: unknown key"},
        {R"({"api":{"threads":"8"}})", ": api.threads: expected an integer"},
        {R"({"queue":{"backend":"redis"}})", ": queue.backend: expected one of \"sqlite\", \"kafka\", got \"redis\""},
        {R"({"ws":{"address":"nowhere"}})", ": ws.address: expected an address host:port"},
        {R"({"api": {"threads": 8,}})", ": invalid JSON at line 1, column"},
    };
    int i = 0;
    for (const auto& c : cases) {
        std::string file = write_file("bad" + std::to_string(i++) + ".json", c.json);
        ChildProcess p({HYDRA_BINARY, "conf", "check", "--config", file});
        BOOST_CHECK_EQUAL(p.wait(10s).value_or(-1), 2);
        const std::string& err = p.err();
        BOOST_CHECK_MESSAGE(err.find(file + c.expected) != std::string::npos, err);
        BOOST_CHECK_EQUAL(std::count(err.begin(), err.end(), '\n'), 1);
    }
    ChildProcess set({HYDRA_BINARY, "conf", "check", "--set", "api.threads=lots"});
    BOOST_CHECK_EQUAL(set.wait(10s).value_or(-1), 2);
    BOOST_CHECK_MESSAGE(set.err().find("--set: api.threads: expected an integer") != std::string::npos, set.err());

    ChildProcess missing({HYDRA_BINARY, "conf", "check", "--env", "staging"}, temp_dir().string());
    BOOST_CHECK_EQUAL(missing.wait(10s).value_or(-1), 2);
    BOOST_CHECK(missing.err().find("no config profile 'staging'") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(conf_show_masks_secrets_and_applies_overrides) {
    ::setenv("KAFKA_PASSWORD", "hunter2-secret", 1);
    ::setenv("KAFKA_BROKERS", "10.1.2.3:9092", 1);
    ChildProcess p({HYDRA_BINARY, "conf", "show", "--env", "prod", "--set", "api.threads=3"});
    ::unsetenv("KAFKA_PASSWORD");
    ::unsetenv("KAFKA_BROKERS");
    BOOST_REQUIRE_EQUAL(p.wait(10s).value_or(-1), 0);
    auto shown = hydra::Json::parse(p.out());
    BOOST_CHECK_EQUAL(shown["api"]["threads"], 3);
    BOOST_CHECK_EQUAL(shown["queue"]["backend"], "kafka");
    BOOST_CHECK_EQUAL(shown["queue"]["kafka"]["brokers"], "10.1.2.3:9092");
    BOOST_CHECK(p.out().find("hunter2") == std::string::npos);
    BOOST_CHECK_EQUAL(shown["queue"]["kafka"]["properties"]["sasl.password"], "******");
}

BOOST_AUTO_TEST_CASE(run_serves_and_stops_gracefully_on_sigterm) {
    ChildProcess p({HYDRA_BINARY, "run", "--set", "api.address=127.0.0.1:0", "--set", "ws.address=127.0.0.1:0", "--set",
                    "log.level=warn", "--set", "queue.sqlite.path=" + (temp_dir() / "q.db").string()},
                   temp_dir().string());
    auto port = p.wait_for_stdout(R"(api listening on http://127\.0\.0\.1:(\d+))", 20s);
    BOOST_REQUIRE_MESSAGE(port, "no startup line; stdout: " + p.out() + " stderr: " + p.err());
    auto r = test::http("127.0.0.1:" + *port, "GET", "/healthz");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["status"], "ok");
    BOOST_CHECK_EQUAL(r.json()["plat"], "mall");
    p.signal(SIGTERM);
    BOOST_CHECK_EQUAL(p.wait(15s).value_or(-1), 0);
}

BOOST_AUTO_TEST_CASE(run_reports_an_address_in_use) {
    Poco::Net::ServerSocket taken(Poco::Net::SocketAddress("127.0.0.1:0"));
    std::string addr = taken.address().toString();
    ChildProcess p({HYDRA_BINARY, "run", "--set", "api.address=" + addr, "--set", "ws.address=127.0.0.1:0", "--set",
                    "queue.sqlite.path=" + (temp_dir() / "q2.db").string()},
                   temp_dir().string());
    BOOST_CHECK_EQUAL(p.wait(15s).value_or(-1), 1);
    BOOST_CHECK_MESSAGE(p.err().find("hydra: cannot start: api: cannot listen on " + addr) != std::string::npos,
                        p.err());
}

BOOST_AUTO_TEST_SUITE_END()
