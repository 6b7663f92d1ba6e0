#include <boost/test/unit_test.hpp>

#include <filesystem>
#include <fstream>

#include <hydra/config.h>

#include "app/cli.h"
#include "support/temp.h"

using hydra::parse_cli;
using hydra::UsageError;

namespace {

// The UsageError parse_cli gives for `args`, or "no error".
std::string message(const std::vector<std::string>& args) {
    try {
        parse_cli(args, std::nullopt);
    } catch (const UsageError& e) {
        return e.what();
    }
    return "no error";
}

}  // namespace

BOOST_AUTO_TEST_SUITE(cli)

BOOST_AUTO_TEST_CASE(run_with_options) {
    auto c = parse_cli(
        {"run", "--env", "prod", "--set", "api.address=127.0.0.1:1", "--set=log.level=warn", "--config=my.json"},
        std::nullopt);
    BOOST_CHECK_EQUAL(c.command, "run");
    BOOST_CHECK_EQUAL(c.env, "prod");
    BOOST_REQUIRE_EQUAL(c.sets.size(), 2u);
    BOOST_CHECK_EQUAL(c.sets[0], "api.address=127.0.0.1:1");
    BOOST_CHECK_EQUAL(c.sets[1], "log.level=warn");
    BOOST_CHECK_EQUAL(*c.config_file, "my.json");
}

BOOST_AUTO_TEST_CASE(cluster_gc_takes_dry_run_and_nothing_else) {
    auto c = parse_cli({"cluster", "gc", "--env", "prod"}, std::nullopt);
    BOOST_CHECK_EQUAL(c.command, "cluster gc");
    BOOST_CHECK(!c.dry_run);
    BOOST_CHECK(parse_cli({"cluster", "gc", "--dry-run"}, std::nullopt).dry_run);
    BOOST_CHECK_THROW(parse_cli({"cluster"}, std::nullopt), UsageError);
    BOOST_CHECK_THROW(parse_cli({"cluster", "list"}, std::nullopt), UsageError);
    BOOST_CHECK_THROW(parse_cli({"cluster", "gc", "node-1"}, std::nullopt), UsageError);
    BOOST_CHECK_THROW(parse_cli({"run", "--dry-run"}, std::nullopt), UsageError);
}

BOOST_AUTO_TEST_CASE(env_defaults_to_dev_then_hydra_env) {
    BOOST_CHECK_EQUAL(parse_cli({"run"}, std::nullopt).env, "dev");
    BOOST_CHECK_EQUAL(parse_cli({"run"}, std::string("prod")).env, "prod");
    BOOST_CHECK_EQUAL(parse_cli({"run", "--env", "dev"}, std::string("prod")).env, "dev");
}

BOOST_AUTO_TEST_CASE(commands) {
    BOOST_CHECK_EQUAL(parse_cli({"conf", "show"}, std::nullopt).command, "conf show");
    BOOST_CHECK_EQUAL(parse_cli({"conf", "check", "--env", "prod"}, std::nullopt).command, "conf check");
    BOOST_CHECK_EQUAL(parse_cli({"version"}, std::nullopt).command, "version");
    BOOST_CHECK_EQUAL(parse_cli({"--help"}, std::nullopt).command, "help");
    BOOST_CHECK_EQUAL(parse_cli({"run", "-h"}, std::nullopt).command, "help");
}

BOOST_AUTO_TEST_CASE(usage_errors_say_what_is_wrong) {
    BOOST_CHECK_EQUAL(message({}), "missing command (try: hydra --help)");
    BOOST_CHECK_EQUAL(message({"start"}), "unknown command 'start' (try: hydra --help)");
    BOOST_CHECK_EQUAL(message({"conf"}), "conf needs a subcommand: show or check");
    BOOST_CHECK_EQUAL(message({"conf", "edit"}), "unknown conf subcommand 'edit': show or check");
    BOOST_CHECK_EQUAL(message({"run", "--set"}), "--set needs a value");
    BOOST_CHECK_EQUAL(message({"run", "--port", "1"}), "unknown option '--port' (try: hydra --help)");
    BOOST_CHECK_EQUAL(message({"run", "--env", "../etc"}), "invalid --env '../etc': letters, digits, '_' and '-' only");
}

BOOST_AUTO_TEST_CASE(token_takes_a_sub_and_a_ttl) {
    auto c = parse_cli({"token", "--sub", "alice", "--ttl=60", "--set", "auth.jwt.secret=s"}, std::nullopt);
    BOOST_CHECK_EQUAL(c.command, "token");
    BOOST_CHECK_EQUAL(c.sub, "alice");
    BOOST_CHECK_EQUAL(c.ttl, 60);
    BOOST_REQUIRE_EQUAL(c.sets.size(), 1u);
    BOOST_CHECK_EQUAL(parse_cli({"token", "--sub=bob"}, std::nullopt).ttl, 3600);
    BOOST_CHECK_EQUAL(message({"token"}), "token needs --sub USER");
    BOOST_CHECK_EQUAL(message({"token", "--sub", "a", "--ttl", "0"}), "--ttl needs a positive number, got '0'");
    BOOST_CHECK_EQUAL(message({"run", "--sub", "a"}), "--sub is an option of hydra token");
}

// The last step of the lookup (/etc/hydra for the binary; the steps before it are driven through the real binary in
// integration.cli_binary): reached only when no earlier place has the profile.
BOOST_AUTO_TEST_CASE(the_system_directory_is_the_last_place_a_profile_is_looked_up) {
    namespace fs = std::filesystem;
    const fs::path root = test::temp_dir() / "lookup";
    const fs::path system = root / "etc-hydra", bin = root / "opt" / "bin";
    fs::create_directories(system);
    fs::create_directories(bin);
    const std::string env = "only-in-the-system-dir";  // no ./config or repository config/ has it
    BOOST_CHECK_THROW(hydra::find_profile(env, (bin / "hydra").string(), system.string()), hydra::ConfigError);
    std::ofstream(system / (env + ".json")) << "{}";
    BOOST_CHECK_EQUAL(hydra::find_profile(env, (bin / "hydra").string(), system.string()),
                      (system / (env + ".json")).string());
    // A profile beside the executable comes first.
    fs::create_directories(root / "opt" / "config");
    std::ofstream(root / "opt" / "config" / (env + ".json")) << "{}";
    BOOST_CHECK_EQUAL(hydra::find_profile(env, (bin / "hydra").string(), system.string()),
                      (root / "opt" / "config" / (env + ".json")).string());
}

BOOST_AUTO_TEST_SUITE_END()
