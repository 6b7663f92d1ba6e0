// The real `hydra` binary as a child process: commands, exit statuses, config errors, run and graceful stop.
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <Poco/Net/ServerSocket.h>

#include <hydra/ws_client.h>

#include "support/http.h"
#include "support/process.h"
#include "support/temp.h"

using namespace std::chrono_literals;
using test::ChildProcess;

namespace {

using test::temp_dir;  // removed when the test process exits

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
    // prod takes its JWT key from the environment (the_prod_profile_needs_a_jwt_key)
    ::setenv("HYDRA_JWT_SECRET", "cli-binary-test-secret-0123456789abcdef", 1);
    for (const char* env : {"dev", "prod"}) {
        ChildProcess p({HYDRA_BINARY, "conf", "check", "--env", env}, temp_dir().string());
        BOOST_CHECK_EQUAL(p.wait(10s).value_or(-1), 0);
        BOOST_CHECK_MESSAGE(p.out().find(std::string("config/") + env + ".json") != std::string::npos, p.out());
    }
    ::unsetenv("HYDRA_JWT_SECRET");
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
    ChildProcess p({HYDRA_BINARY, "run", "--set", "api.address=127.0.0.1:0", "--set", "admin.address=127.0.0.1:0",
                    "--set", "ws.address=127.0.0.1:0", "--set", "log.level=warn", "--set",
                    "queue.sqlite.path=" + (temp_dir() / "q.db").string()},
                   temp_dir().string());
    auto port = p.wait_for_stdout(R"(api listening on http://127\.0\.0\.1:(\d+))", 20s);
    BOOST_REQUIRE_MESSAGE(port, "no startup line; stdout: " + p.out() + " stderr: " + p.err());
    auto r = test::http("127.0.0.1:" + *port, "GET", "/healthz");
    BOOST_CHECK_EQUAL(r.status, 200);
    BOOST_CHECK_EQUAL(r.json()["status"], "ok");
    BOOST_CHECK_EQUAL(r.json()["plat"], "mall");
    // Started outside the checkout: the demo page is still found (beside the executable).
    auto page = test::http("127.0.0.1:" + *port, "GET", "/demo/");
    BOOST_CHECK_EQUAL(page.status, 200);
    BOOST_CHECK(page.body.find("WebSocket") != std::string::npos);
    p.signal(SIGTERM);
    BOOST_CHECK_EQUAL(p.wait(15s).value_or(-1), 0);
}

BOOST_AUTO_TEST_CASE(run_reports_an_address_in_use) {
    Poco::Net::ServerSocket taken(Poco::Net::SocketAddress("127.0.0.1:0"));
    std::string addr = taken.address().toString();
    ChildProcess p({HYDRA_BINARY, "run", "--set", "api.address=" + addr, "--set", "admin.address=127.0.0.1:0", "--set",
                    "ws.address=127.0.0.1:0", "--set", "queue.sqlite.path=" + (temp_dir() / "q2.db").string()},
                   temp_dir().string());
    BOOST_CHECK_EQUAL(p.wait(15s).value_or(-1), 1);
    BOOST_CHECK_MESSAGE(p.err().find("hydra: cannot start: api: cannot listen on " + addr) != std::string::npos,
                        p.err());
}

namespace {

namespace fs = std::filesystem;

struct Run {
    int status = -1;
    std::string out, err;
};

// `exe args...` in `cwd` with HYDRA_CONFIG_DIR and HYDRA_ENV unset, then `vars` ("NAME=value") set.
Run run_with_env(const std::vector<std::string>& vars, const std::string& exe, const std::vector<std::string>& args,
                 const fs::path& cwd) {
    std::vector<std::string> argv = {"/usr/bin/env", "-u", "HYDRA_CONFIG_DIR", "-u", "HYDRA_ENV"};
    argv.insert(argv.end(), vars.begin(), vars.end());
    argv.push_back(exe);
    argv.insert(argv.end(), args.begin(), args.end());
    ChildProcess p(argv, cwd.string());
    Run r;
    r.status = p.wait(20s).value_or(-1);
    r.out = p.out();
    r.err = p.err();
    return r;
}

// The profile `hydra conf check` reports having loaded ("config ok: <file>"), or what went wrong.
std::string profile_found(const Run& r) {
    const std::string ok = "config ok: ";
    if (r.status != 0 || r.out.rfind(ok, 0) != 0)
        return "exit " + std::to_string(r.status) + ", stdout: " + r.out + ", stderr: " + r.err;
    return r.out.substr(ok.size(), r.out.find('\n') - ok.size());
}

// A profile of its own, told apart by api.threads; with a JWT secret, which the demo's /auth/whoami needs.
fs::path place_profile(const fs::path& dir, const std::string& env, int threads) {
    fs::create_directories(dir);
    fs::path file = dir / (env + ".json");
    std::ofstream(file) << R"({"api":{"threads":)" << threads
                        << R"(},"auth":{"jwt":{"secret":"cli-binary-test-secret-0123456789abcdef"}}})";
    return file;
}

}  // namespace

// README, Command line: the profile config/<env>.json is looked up in $HYDRA_CONFIG_DIR, then ./config, then config/
// in the executable's directory and each parent directory, then /etc/hydra. Each step is proven by removing the
// file that won the previous one. (/etc/hydra, the last step, is left alone: it belongs to the machine.)
BOOST_AUTO_TEST_CASE(the_profile_is_looked_up_in_hydra_config_dir_then_config_then_beside_the_executable) {
    const fs::path root = test::temp_path("lookup");
    const fs::path cwd = root / "cwd", app = root / "app", bin = app / "bin";
    fs::create_directories(cwd);
    fs::create_directories(bin);
    fs::create_directories(root / "empty");
    // A copy of the binary, so that the directories around it are the test's own.
    fs::copy_file(HYDRA_BINARY, bin / "hydra");
    const std::string exe = (bin / "hydra").string();
    const std::string env = "lookup-probe";
    const std::vector<std::string> check = {"conf", "check", "--env", env};

    const fs::path in_config_dir = place_profile(root / "envdir", env, 1);
    const fs::path in_cwd = place_profile(cwd / "config", env, 2);
    const fs::path beside_exe = place_profile(bin / "config", env, 3);
    const fs::path above_exe = place_profile(app / "config", env, 4);
    const std::string config_dir_var = "HYDRA_CONFIG_DIR=" + (root / "envdir").string();

    BOOST_CHECK_EQUAL(profile_found(run_with_env({config_dir_var}, exe, check, cwd)), in_config_dir.string());
    // ...and that file is the one loaded.
    Run shown = run_with_env({config_dir_var}, exe, {"conf", "show", "--env", env}, cwd);
    BOOST_REQUIRE_EQUAL(shown.status, 0);
    BOOST_CHECK_EQUAL(hydra::Json::parse(shown.out)["api"]["threads"], 1);

    // A HYDRA_CONFIG_DIR without the profile, or empty, is passed over: ./config is next.
    const std::string relative = "config/" + env + ".json";
    BOOST_CHECK_EQUAL(profile_found(run_with_env({"HYDRA_CONFIG_DIR=" + (root / "empty").string()}, exe, check, cwd)),
                      relative);
    BOOST_CHECK_EQUAL(profile_found(run_with_env({"HYDRA_CONFIG_DIR="}, exe, check, cwd)), relative);
    BOOST_CHECK_EQUAL(profile_found(run_with_env({}, exe, check, cwd)), relative);

    fs::remove(in_cwd);
    BOOST_CHECK_EQUAL(profile_found(run_with_env({}, exe, check, cwd)), fs::weakly_canonical(beside_exe).string());
    fs::remove(beside_exe);
    BOOST_CHECK_EQUAL(profile_found(run_with_env({}, exe, check, cwd)), fs::weakly_canonical(above_exe).string());
    // The same when the executable is found through $PATH (argv[0] is then only "hydra").
    BOOST_CHECK_EQUAL(profile_found(run_with_env({"PATH=" + bin.string() + ":/usr/bin:/bin"}, "hydra", check, cwd)),
                      fs::weakly_canonical(above_exe).string());

    fs::remove(above_exe);
    Run none = run_with_env({}, exe, check, cwd);
    BOOST_CHECK_EQUAL(none.status, 2);
    BOOST_CHECK_MESSAGE(none.err.find("no config profile '" + env + "'") != std::string::npos, none.err);
}

// The prod profile takes its JWT settings from HYDRA_JWT_*, and ws.auth from HYDRA_WS_AUTH (jwt by default): without
// a secret or a public key it does not start (exit 2, naming auth.jwt), whatever ws.auth says, as the demo's
// /auth/whoami takes a token. The check comes before anything connects to Kafka.
BOOST_AUTO_TEST_CASE(the_prod_profile_needs_a_jwt_key) {
    const fs::path cwd = test::temp_path("prod-jwt");
    fs::create_directories(cwd);
    const std::vector<std::string> unset = {"-u", "HYDRA_JWT_SECRET", "-u", "HYDRA_JWT_PUBLIC_KEY_FILE",
                                            "-u", "HYDRA_WS_AUTH"};
    auto with = [&](std::vector<std::string> vars) {
        vars.insert(vars.begin(), unset.begin(), unset.end());
        return vars;
    };
    const std::vector<std::string> run = {"run",
                                          "--env",
                                          "prod",
                                          "--set",
                                          "api.address=127.0.0.1:0",
                                          "--set",
                                          "admin.address=127.0.0.1:0",
                                          "--set",
                                          "ws.address=127.0.0.1:0"};
    Run none = run_with_env(with({}), HYDRA_BINARY, run, cwd);
    BOOST_CHECK_EQUAL(none.status, 2);
    BOOST_CHECK_EQUAL(none.err,
                      "hydra: invalid config: ws.auth=jwt needs auth.jwt.secret or auth.jwt.public_key_file\n");
    Run ws_off = run_with_env(with({"HYDRA_WS_AUTH=none"}), HYDRA_BINARY, run, cwd);
    BOOST_CHECK_EQUAL(ws_off.status, 2);
    BOOST_CHECK_MESSAGE(ws_off.err.find("route GET /auth/whoami requires a JWT") != std::string::npos, ws_off.err);
    BOOST_CHECK_MESSAGE(ws_off.err.find("auth.jwt.secret or auth.jwt.public_key_file") != std::string::npos,
                        ws_off.err);
    const std::vector<std::string> check = {"conf", "check", "--env", "prod"};
    BOOST_CHECK_EQUAL(run_with_env(with({}), HYDRA_BINARY, check, cwd).status, 2);
    BOOST_CHECK_EQUAL(
        run_with_env(with({"HYDRA_JWT_SECRET=cli-binary-test-secret-0123456789abcdef"}), HYDRA_BINARY, check, cwd)
            .status,
        0);
    // a short secret is refused as such
    Run short_secret = run_with_env(with({"HYDRA_JWT_SECRET=short"}), HYDRA_BINARY, check, cwd);
    BOOST_CHECK_EQUAL(short_secret.status, 2);
    BOOST_CHECK_MESSAGE(short_secret.err.find("auth.jwt.secret: at least 32 bytes") != std::string::npos,
                        short_secret.err);
}

// README, Command line: --env defaults to $HYDRA_ENV, else dev; --config FILE takes no profile at all.
BOOST_AUTO_TEST_CASE(env_defaults_to_hydra_env_then_dev_and_config_names_the_file) {
    const fs::path root = test::temp_path("env");
    const fs::path dir = root / "profiles";
    const fs::path probe = place_profile(dir, "env-probe", 1);
    const fs::path dev = place_profile(dir, "dev", 2);
    const fs::path other = place_profile(root / "elsewhere", "mine", 3);
    const std::string config_dir_var = "HYDRA_CONFIG_DIR=" + dir.string();
    const std::vector<std::string> check = {"conf", "check"};

    BOOST_CHECK_EQUAL(profile_found(run_with_env({config_dir_var}, HYDRA_BINARY, check, root)), dev.string());
    BOOST_CHECK_EQUAL(profile_found(run_with_env({config_dir_var, "HYDRA_ENV=env-probe"}, HYDRA_BINARY, check, root)),
                      probe.string());
    BOOST_CHECK_EQUAL(profile_found(run_with_env({config_dir_var, "HYDRA_ENV=env-probe"}, HYDRA_BINARY,
                                                 {"conf", "check", "--env", "dev"}, root)),
                      dev.string());
    BOOST_CHECK_EQUAL(profile_found(run_with_env({config_dir_var, "HYDRA_ENV=env-probe"}, HYDRA_BINARY,
                                                 {"conf", "check", "--config", other.string()}, root)),
                      other.string());
}

// README, Configuration: log.format=json writes one JSON object per line, with the time, the level and the message,
// the request id on the lines of a request, and the fields of an event as keys of their own.
BOOST_AUTO_TEST_CASE(json_log_format_writes_one_json_object_per_line) {
    ChildProcess p({HYDRA_BINARY, "run", "--set", "log.format=json", "--set", "log.level=debug", "--set",
                    "api.address=127.0.0.1:0", "--set", "admin.address=127.0.0.1:0", "--set", "ws.address=127.0.0.1:0",
                    "--set", "queue.sqlite.path=" + test::temp_path("q.db"), "--set",
                    "services.push.database=" + test::temp_path("push.db")},
                   temp_dir().string());
    auto port = p.wait_for_stdout(R"(api listening on http://127\.0\.0\.1:(\d+))", 30s);
    BOOST_REQUIRE_MESSAGE(port, "no startup line; stdout: " + p.out() + " stderr: " + p.err());
    auto r = test::http("127.0.0.1:" + *port, "GET", "/healthz", "", "application/json",
                        {{"X-Request-Id", "json-log-probe"}});
    BOOST_CHECK_EQUAL(r.status, 200);
    // A login logs the user and the uuid as fields.
    auto ws_port = p.wait_for_stdout(R"(ws listening on ws://127\.0\.0\.1:(\d+))", 30s);
    BOOST_REQUIRE(ws_port);
    {
        auto c = hydra::WsClient::connect("127.0.0.1", std::stoi(*ws_port), "/");
        c.send_text(R"({"service":"/member/login","uname":"alice","pwd":"alice-pw"})");
        BOOST_CHECK_EQUAL(hydra::Json::parse(c.receive(20s).data)["code"], 200);
    }
    p.signal(SIGTERM);
    BOOST_REQUIRE_EQUAL(p.wait(20s).value_or(-1), 0);

    const std::regex timestamp(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)");
    const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error"};
    std::istringstream lines(p.err());
    int parsed = 0;
    bool request_line = false, login_line = false, stopped_line = false, closed_line = false;
    for (std::string line; std::getline(lines, line);) {
        hydra::Json j = hydra::Json::parse(line, nullptr, false);
        BOOST_REQUIRE_MESSAGE(j.is_object(), "not one JSON object: " << line);
        ++parsed;
        BOOST_CHECK_MESSAGE(
            j.contains("ts") && j["ts"].is_string() && std::regex_match(j["ts"].get<std::string>(), timestamp),
            "ts: " << line);
        BOOST_CHECK_MESSAGE(j.contains("level") && j["level"].is_string() && levels.count(j["level"]),
                            "level: " << line);
        BOOST_CHECK_MESSAGE(j.contains("msg") && j["msg"].is_string(), "msg: " << line);
        const std::string msg = j.value("msg", "");
        if (msg == "request" && j.value("path", "") == "/healthz") {
            // The access line: its values as fields, numbers as numbers.
            request_line = true;
            BOOST_CHECK_EQUAL(j.value("rid", ""), "json-log-probe");
            BOOST_CHECK_EQUAL(j.value("logger", ""), "api");
            BOOST_CHECK_EQUAL(j.value("method", ""), "GET");
            BOOST_CHECK_EQUAL(j.value("route", ""), "/healthz");
            BOOST_CHECK(j["status"] == 200);
            BOOST_CHECK(j["duration_ms"].is_number() && j["duration_ms"].get<double>() >= 0);
        }
        if (msg == "ws closed") {
            // The access line of a WebSocket connection.
            closed_line = true;
            BOOST_CHECK_EQUAL(j.value("logger", ""), "ws");
            BOOST_CHECK_EQUAL(j.value("path", ""), "/");
            BOOST_CHECK(j.contains("uuid") && j["uuid"] == j.value("rid", ""));
            BOOST_CHECK(j["code"].is_number());
            BOOST_CHECK(j["messages_in"] == 1);
            BOOST_CHECK(j["messages_out"].is_number() && j["messages_out"].get<int>() >= 1);
            BOOST_CHECK(j["duration_ms"].is_number());
        }
        if (msg == "push: logged in") {
            login_line = true;
            BOOST_CHECK_EQUAL(j.value("user", ""), "alice");
            BOOST_CHECK(j.contains("uuid") && j["uuid"].is_string());
        }
        stopped_line = stopped_line || msg == "stopped";
    }
    BOOST_CHECK_GE(parsed, 3);
    BOOST_CHECK_MESSAGE(request_line, "no access line for the request: " << p.err());
    BOOST_CHECK_MESSAGE(login_line, "no line for the login: " << p.err());
    BOOST_CHECK_MESSAGE(closed_line, "no line for the WebSocket close: " << p.err());
    BOOST_CHECK_MESSAGE(stopped_line, "no line for the stop: " << p.err());
}

// README, Command line: `hydra run` prints one line per started server; Quick start: /healthz names them.
BOOST_AUTO_TEST_CASE(run_prints_one_line_per_started_server) {
    for (bool mqc : {true, false}) {
        ChildProcess p({HYDRA_BINARY, "run", "--set", "api.address=127.0.0.1:0", "--set", "admin.address=127.0.0.1:0",
                        "--set", "ws.address=127.0.0.1:0", "--set", "log.level=warn", "--set",
                        std::string("mqc.enabled=") + (mqc ? "true" : "false"), "--set",
                        "queue.sqlite.path=" + test::temp_path("q.db"), "--set",
                        "services.push.database=" + test::temp_path("push.db")},
                       temp_dir().string());
        BOOST_REQUIRE_MESSAGE(p.wait_for_stdout(R"(running \(dev\), pid \d+)", 30s), p.out() + p.err());
        const std::string out = p.out();
        BOOST_CHECK_MESSAGE(
            std::regex_search(out, std::regex(R"((^|\n)api listening on http://127\.0\.0\.1:\d+ \(\d+ routes\)\n)")),
            out);
        BOOST_CHECK_MESSAGE(std::regex_search(out, std::regex(R"((^|\n)ws listening on ws://127\.0\.0\.1:\d+ \()")),
                            out);
        BOOST_CHECK_MESSAGE(
            std::regex_search(
                out, std::regex(R"((^|\n)admin listening on http://127\.0\.0\.1:\d+ \(\d+ routes, no API keys\)\n)")),
            out);
        BOOST_CHECK_EQUAL(out.find("mqc consuming") != std::string::npos, mqc);
        // The quick start's /healthz: the servers as started.
        std::smatch api;
        BOOST_REQUIRE(std::regex_search(out, api, std::regex(R"(api listening on http://(127\.0\.0\.1:\d+))")));
        auto health = test::http(api[1].str(), "GET", "/healthz");
        BOOST_CHECK_EQUAL(health.status, 200);
        hydra::Json j = health.json();
        BOOST_CHECK_EQUAL(j["status"], "ok");
        BOOST_CHECK_EQUAL(j["plat"], "mall");
        BOOST_CHECK_EQUAL(j["servers"]["api"], api[1].str());
        BOOST_CHECK_EQUAL(j["servers"]["queue"], "sqlite");
        BOOST_CHECK_EQUAL(j["servers"]["ws"]["connections"], 0);
        p.signal(SIGTERM);
        BOOST_CHECK_EQUAL(p.wait(20s).value_or(-1), 0);
    }
}

BOOST_AUTO_TEST_SUITE_END()
