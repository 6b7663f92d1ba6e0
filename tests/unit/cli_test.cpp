#include <boost/test/unit_test.hpp>

#include "app/cli.h"

using hydra::parse_cli;
using hydra::UsageError;

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
    auto message = [](std::vector<std::string> args) {
        try {
            parse_cli(args, std::nullopt);
        } catch (const UsageError& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    BOOST_CHECK_EQUAL(message({}), "missing command (try: hydra --help)");
    BOOST_CHECK_EQUAL(message({"start"}), "unknown command 'start' (try: hydra --help)");
    BOOST_CHECK_EQUAL(message({"conf"}), "conf needs a subcommand: show or check");
    BOOST_CHECK_EQUAL(message({"conf", "edit"}), "unknown conf subcommand 'edit': show or check");
    BOOST_CHECK_EQUAL(message({"run", "--set"}), "--set needs a value");
    BOOST_CHECK_EQUAL(message({"run", "--port", "1"}), "unknown option '--port' (try: hydra --help)");
    BOOST_CHECK_EQUAL(message({"run", "--env", "../etc"}), "invalid --env '../etc': letters, digits, '_' and '-' only");
}

BOOST_AUTO_TEST_SUITE_END()
