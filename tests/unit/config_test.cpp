// Config: profiles, defaults, ${VAR} substitution, --set overrides, schema errors (exact messages), masking.
#include <boost/test/unit_test.hpp>

#include <hydra/config.h>

#include "cluster/cluster_exchange.h"
#include "queue/kafka/kafka_queue.h"
#include "services/schemas.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include <unistd.h>

using hydra::Config;
using hydra::ConfigError;
using hydra::ConfigSchema;
using hydra::Json;
using hydra::queue::KafkaQueue;

namespace {

const std::string source_dir = HYDRA_SOURCE_DIR;

// A fixed environment, so that the tests do not depend on the one they run in.
hydra::EnvLookup env_of(std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
        auto it = vars.find(name);
        return it == vars.end() ? std::nullopt : std::optional<std::string>(it->second);
    };
}

Config parse(const std::string& text, const std::vector<std::string>& sets = {},
             const ConfigSchema& schema = ConfigSchema::builtin(), std::map<std::string, std::string> env = {}) {
    return Config::from_json(Json::parse(text), "test.json", sets, schema, env_of(std::move(env)));
}

// The message of the ConfigError thrown by `f`, or "" (which no check expects) if it did not throw.
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const ConfigError& e) {
        return e.what();
    }
    return "";
}

std::string parse_error(const std::string& text, const std::vector<std::string>& sets = {},
                        const ConfigSchema& schema = ConfigSchema::builtin(),
                        std::map<std::string, std::string> env = {}) {
    return error_of([&] { parse(text, sets, schema, env); });
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A file in the temp directory, removed at the end of the test.
struct TempFile {
    explicit TempFile(const std::string& content) {
        path = (std::filesystem::temp_directory_path() /
                ("hydra_config_test_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + ".json"))
                   .string();
        std::ofstream(path) << content;
    }
    ~TempFile() { std::remove(path.c_str()); }
    std::string path;
    static inline int counter = 0;
};

}  // namespace

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(dev_profile_loads) {
    auto config = Config::load(source_dir + "/config/dev.json", {}, services::full_schema(), env_of({}));
    BOOST_CHECK_EQUAL(config.str("log.level"), "debug");
    BOOST_CHECK_EQUAL(config.str("log.format"), "text");
    BOOST_CHECK_EQUAL(config.str("api.address"), "127.0.0.1:9090");
    BOOST_CHECK_EQUAL(config.str("ws.address"), "127.0.0.1:9087");
    BOOST_CHECK_EQUAL(config.str("queue.backend"), "sqlite");
    BOOST_CHECK_EQUAL(config.str("queue.sqlite.path"), "data/dev-queue.db");
    BOOST_CHECK_EQUAL(config.source(), source_dir + "/config/dev.json");
    // a development JWT secret (at least 32 bytes), so that the demo's /auth/whoami and `hydra token` work as is
    BOOST_CHECK_GE(config.str("auth.jwt.secret").size(), 32u);
    BOOST_CHECK_EQUAL(config.str("ws.auth"), "none");
}

BOOST_AUTO_TEST_CASE(prod_profile_loads_with_and_without_environment) {
    const std::string file = source_dir + "/config/prod.json";
    auto defaults = Config::load(file, {}, services::full_schema(), env_of({}));
    BOOST_CHECK_EQUAL(defaults.str("log.format"), "json");
    BOOST_CHECK_EQUAL(defaults.str("api.address"), "0.0.0.0:9090");
    BOOST_CHECK_EQUAL(defaults.str("ws.address"), "0.0.0.0:9087");
    BOOST_CHECK_EQUAL(defaults.str("queue.backend"), "kafka");
    BOOST_CHECK_EQUAL(defaults.str("queue.kafka.brokers"), "127.0.0.1:9092");
    BOOST_CHECK_EQUAL(defaults.str("queue.kafka.properties.sasl.password"), "");

    auto set = Config::load(file, {}, ConfigSchema::builtin(),
                            env_of({{"HYDRA_API_ADDRESS", "10.0.0.1:80"}, {"KAFKA_BROKERS", "k1:9092,k2:9092"}}));
    BOOST_CHECK_EQUAL(set.str("api.address"), "10.0.0.1:80");
    BOOST_CHECK_EQUAL(set.str("queue.kafka.brokers"), "k1:9092,k2:9092");

    // The admin listener stays on loopback and there are no API keys unless the environment says otherwise.
    BOOST_CHECK_EQUAL(defaults.str("admin.address"), "127.0.0.1:9091");
    BOOST_CHECK_EQUAL(defaults.at("auth.api_keys"), Json::array());
    auto keyed =
        Config::load(file, {}, ConfigSchema::builtin(),
                     env_of({{"HYDRA_ADMIN_ADDRESS", "10.0.0.1:9091"}, {"HYDRA_API_KEYS", "key-one,key-two"}}));
    BOOST_CHECK_EQUAL(keyed.str("admin.address"), "10.0.0.1:9091");
    BOOST_CHECK_EQUAL(keyed.at("auth.api_keys"), (Json{"key-one", "key-two"}));

    // WebSockets take a JWT unless HYDRA_WS_AUTH says otherwise; the JWT settings come from HYDRA_JWT_* ("" = none,
    // not checked).
    BOOST_CHECK_EQUAL(defaults.str("ws.auth"), "jwt");
    for (const char* key : {"auth.jwt.secret", "auth.jwt.public_key_file", "auth.jwt.issuer", "auth.jwt.audience"})
        BOOST_CHECK_EQUAL(defaults.str(key), "");
    auto jwt = Config::load(file, {}, ConfigSchema::builtin(),
                            env_of({{"HYDRA_WS_AUTH", "none"},
                                    {"HYDRA_JWT_SECRET", "s3cret"},
                                    {"HYDRA_JWT_PUBLIC_KEY_FILE", "/etc/hydra/jwt.pem"},
                                    {"HYDRA_JWT_ISSUER", "https://id.example"},
                                    {"HYDRA_JWT_AUDIENCE", "hydra"}}));
    BOOST_CHECK_EQUAL(jwt.str("ws.auth"), "none");
    BOOST_CHECK_EQUAL(jwt.str("auth.jwt.secret"), "s3cret");
    BOOST_CHECK_EQUAL(jwt.str("auth.jwt.public_key_file"), "/etc/hydra/jwt.pem");
    BOOST_CHECK_EQUAL(jwt.str("auth.jwt.issuer"), "https://id.example");
    BOOST_CHECK_EQUAL(jwt.str("auth.jwt.audience"), "hydra");
    BOOST_CHECK_EQUAL(jwt.masked()["auth"]["jwt"]["secret"], "******");
    BOOST_CHECK_THROW(Config::load(file, {}, ConfigSchema::builtin(), env_of({{"HYDRA_WS_AUTH", "maybe"}})),
                      ConfigError);

    // Plain TCP unless the environment names certificates: HYDRA_TLS_* for the public listeners (API and WS),
    // HYDRA_ADMIN_TLS_* for the admin listener.
    for (const char* listener : {"api", "ws", "admin"})
        for (const char* file_key : {".tls.cert_file", ".tls.key_file"})
            BOOST_CHECK_EQUAL(defaults.str(std::string(listener) + file_key), "");
    auto tls = Config::load(file, {}, ConfigSchema::builtin(),
                            env_of({{"HYDRA_TLS_CERT_FILE", "/etc/hydra/cert.pem"},
                                    {"HYDRA_TLS_KEY_FILE", "/etc/hydra/key.pem"},
                                    {"HYDRA_ADMIN_TLS_CERT_FILE", "/etc/hydra/admin-cert.pem"},
                                    {"HYDRA_ADMIN_TLS_KEY_FILE", "/etc/hydra/admin-key.pem"}}));
    for (const char* listener : {"api", "ws"}) {
        BOOST_CHECK_EQUAL(tls.str(std::string(listener) + ".tls.cert_file"), "/etc/hydra/cert.pem");
        BOOST_CHECK_EQUAL(tls.str(std::string(listener) + ".tls.key_file"), "/etc/hydra/key.pem");
    }
    BOOST_CHECK_EQUAL(tls.str("admin.tls.cert_file"), "/etc/hydra/admin-cert.pem");
    BOOST_CHECK_EQUAL(tls.str("admin.tls.key_file"), "/etc/hydra/admin-key.pem");
}

BOOST_AUTO_TEST_CASE(defaults_fill_absent_sections) {
    auto config = parse("{}");
    BOOST_CHECK_EQUAL(config.str("log.level"), "info");
    BOOST_CHECK(config.boolean("api.enabled"));
    BOOST_CHECK_EQUAL(config.str("api.address"), "127.0.0.1:9090");
    BOOST_CHECK_EQUAL(config.integer("api.threads"), 64);
    BOOST_CHECK_EQUAL(config.integer("api.max_body"), 1048576);
    BOOST_CHECK_EQUAL(config.integer("ws.io_threads"), 0);
    BOOST_CHECK_EQUAL(config.integer("ws.handshake_timeout_ms"), 10000);
    BOOST_CHECK_EQUAL(config.at("mqc.routes"), Json::array());
    BOOST_CHECK_EQUAL(config.str("queue.sqlite.path"), "data/queue.db");
    BOOST_CHECK_EQUAL(config.integer("queue.sqlite.lease_ms"), 30000);
    BOOST_CHECK_EQUAL(config.at("queue.kafka.properties"), Json::object());
    BOOST_CHECK_EQUAL(config.str("cluster.node_id"), "");
    BOOST_CHECK_EQUAL(config.at("services"), Json::object());

    // A present section keeps its values and gets the missing ones.
    auto partial = parse(R"({"api": {"threads": 4}, "mqc": {"routes": [{"route": "/a", "queue": "q"}]}})");
    BOOST_CHECK_EQUAL(partial.integer("api.threads"), 4);
    BOOST_CHECK_EQUAL(partial.integer("api.max_queued"), 1024);
    BOOST_CHECK_EQUAL(partial.at("mqc.routes")[0]["concurrency"], 1);
}

BOOST_AUTO_TEST_CASE(getters_name_the_path) {
    auto config = parse("{}");
    BOOST_CHECK(config.has("api.threads"));
    BOOST_CHECK(!config.has("api.nope"));
    BOOST_CHECK_EQUAL(error_of([&] { config.at("api.nope"); }), "test.json: api.nope: not set");
    BOOST_CHECK_EQUAL(error_of([&] { config.integer("api.address"); }),
                      "test.json: api.address: expected an integer, got string \"127.0.0.1:9090\"");
    BOOST_CHECK(contains(error_of([&] { config.str("api.threads"); }), "api.threads: expected a string"));
    BOOST_CHECK(contains(error_of([&] { config.boolean("api.threads"); }), "api.threads: expected a boolean"));
    BOOST_CHECK_EQUAL(config.number("api.threads"), 64.0);
}

BOOST_AUTO_TEST_CASE(unreadable_file) {
    const std::string file = source_dir + "/config/does-not-exist.json";
    BOOST_CHECK_EQUAL(error_of([&] { Config::load(file, {}, services::full_schema(), env_of({})); }),
                      file + ": cannot read: No such file or directory");
}

BOOST_AUTO_TEST_CASE(invalid_json_reports_line_and_column) {
    TempFile trailing_comma("{\n  \"api\": {\n    \"threads\": 8,\n  }\n}\n");
    BOOST_CHECK_EQUAL(error_of([&] { Config::load(trailing_comma.path, {}, services::full_schema(), env_of({})); }),
                      trailing_comma.path +
                          ": invalid JSON at line 4, column 3: object key - unexpected '}'; expected string literal");

    TempFile truncated("{\n\"log\": {}\n");
    auto message = error_of([&] { Config::load(truncated.path, {}, services::full_schema(), env_of({})); });
    BOOST_CHECK(contains(message, truncated.path + ": invalid JSON at line 3, column 1: "));
    BOOST_CHECK(!contains(message, "\n"));
}

BOOST_AUTO_TEST_CASE(unknown_key) {
    BOOST_CHECK_EQUAL(parse_error(R"({"api": {"adress": "x"}})"),
                      "test.json: api.adress: unknown key (known keys of api: address, enabled, "
                      "header_timeout_ms, io_threads, io_uring, keep_alive, keep_alive_timeout_ms, max_body, "
                      "max_connections, max_connections_per_ip, max_pending_output, max_queued, rate_limit, "
                      "request_timeout_ms, shutdown_timeout_ms, threads, tls)");
    BOOST_CHECK(
        contains(parse_error(R"({"apii": {}})"), "test.json: apii: unknown key (known keys: admin, api, auth, "));
    BOOST_CHECK(contains(parse_error(R"({"services": {"x": {}}})"), "services.x: unknown key"));
}

BOOST_AUTO_TEST_CASE(wrong_type) {
    BOOST_CHECK_EQUAL(parse_error(R"({"api": {"threads": "8"}})"),
                      "test.json: api.threads: expected an integer, got string \"8\"");
    BOOST_CHECK_EQUAL(parse_error(R"({"api": {"threads": 8.5}})"),
                      "test.json: api.threads: expected an integer, got number 8.5");
    BOOST_CHECK(contains(parse_error(R"({"api": {"enabled": "yes"}})"), "api.enabled: expected a boolean, got"));
    BOOST_CHECK(contains(parse_error(R"({"api": 5})"), "test.json: api: expected an object, got integer 5"));
    BOOST_CHECK(contains(parse_error(R"({"mqc": {"routes": {}}})"), "mqc.routes: expected an array, got an object"));
    BOOST_CHECK_EQUAL(parse_error("[]"), "test.json: expected an object, got an array");
}

BOOST_AUTO_TEST_CASE(enum_and_range) {
    BOOST_CHECK_EQUAL(parse_error(R"({"queue": {"backend": "redis"}})"),
                      "test.json: queue.backend: expected one of \"sqlite\", \"kafka\", got \"redis\"");
    BOOST_CHECK_EQUAL(parse_error(R"({"api": {"threads": 0}})"),
                      "test.json: api.threads: expected an integer between 1 and 1024, got 0");
    BOOST_CHECK(contains(parse_error(R"({"ws": {"max_message": 124}})"), "between 125 and 1073741824, got 124"));
    BOOST_CHECK(contains(parse_error(R"({"api": {"max_body": -1}})"), "api.max_body: expected an integer between"));
    BOOST_CHECK(contains(parse_error(R"({"api": {"threads": 18446744073709551615}})"), "api.threads: expected"));
    // The bounds themselves are allowed.
    BOOST_CHECK_EQUAL(parse(R"({"api": {"threads": 1024, "max_body": 0}})").integer("api.threads"), 1024);
}

BOOST_AUTO_TEST_CASE(address_format) {
    BOOST_CHECK_EQUAL(parse_error(R"({"api": {"address": "abc"}})"),
                      "test.json: api.address: expected an address host:port (port 0-65535), got \"abc\"");
    BOOST_CHECK(contains(parse_error(R"({"ws": {"address": "host:65536"}})"), "ws.address: expected an address"));
    BOOST_CHECK(contains(parse_error(R"({"ws": {"address": "host:"}})"), "ws.address: expected an address"));
    BOOST_CHECK(contains(parse_error(R"({"ws": {"address": "::1:80"}})"), "ws.address: expected an address"));
    for (const char* good : {":9090", "localhost:0", "10.1.2.3:65535", "[::1]:80", "[fe80::1]:443"}) {
        BOOST_CHECK_MESSAGE(parse(Json{{"ws", {{"address", good}}}}.dump()).str("ws.address") == good, good);
    }
}

BOOST_AUTO_TEST_CASE(array_items_and_required_keys) {
    const std::string two_routes =
        R"({"mqc": {"routes": [{"route": "/a", "queue": "qa"}, {"route": "/b", "queue": ""}]}})";
    BOOST_CHECK_EQUAL(parse_error(two_routes), "test.json: mqc.routes[1].queue: expected a non-empty string, got \"\"");
    BOOST_CHECK_EQUAL(parse_error(R"({"mqc": {"routes": [{"queue": "q"}]}})"),
                      "test.json: mqc.routes[0]: missing required key \"route\"");
    BOOST_CHECK_EQUAL(parse_error(R"({"mqc": {"routes": [{"route": "a", "queue": "q"}]}})"),
                      "test.json: mqc.routes[0].route: expected a string matching ^/, got \"a\"");
    BOOST_CHECK(contains(parse_error(R"({"mqc": {"routes": [{"route": "/a", "queue": "q", "concurrency": 0}]}})"),
                         "mqc.routes[0].concurrency: expected an integer between 1 and 1024, got 0"));
}

BOOST_AUTO_TEST_CASE(only_the_first_error_is_reported) {
    // Three errors; keys are visited in order, so the unknown "adress" comes first.
    auto message = parse_error(R"({"api": {"threads": 0, "adress": "x"}, "queue": {"backend": "redis"}})");
    BOOST_CHECK(message.starts_with("test.json: api.adress: unknown key (known keys of api: "));
    BOOST_CHECK(!contains(message, "threads: expected"));
    BOOST_CHECK(!contains(message, "backend"));
    BOOST_CHECK(!contains(message, "\n"));
}

BOOST_AUTO_TEST_CASE(environment_substitution) {
    const std::string doc = R"({"api": {"address": "${HOST:-127.0.0.1}:${PORT}"},
                                "mqc": {"routes": [{"route": "/a", "queue": "${PREFIX:-dev}-orders"}]}})";
    auto with_defaults = parse(doc, {}, ConfigSchema::builtin(), {{"PORT", "8080"}});
    BOOST_CHECK_EQUAL(with_defaults.str("api.address"), "127.0.0.1:8080");
    BOOST_CHECK_EQUAL(with_defaults.at("mqc.routes")[0]["queue"], "dev-orders");

    auto with_values = parse(doc, {}, ConfigSchema::builtin(), {{"HOST", "0.0.0.0"}, {"PORT", "1"}, {"PREFIX", "p"}});
    BOOST_CHECK_EQUAL(with_values.str("api.address"), "0.0.0.0:1");
    BOOST_CHECK_EQUAL(with_values.at("mqc.routes")[0]["queue"], "p-orders");

    // As in the shell, ":-" also applies to a variable that is set but empty.
    auto empty = parse(doc, {}, ConfigSchema::builtin(), {{"HOST", ""}, {"PORT", "2"}});
    BOOST_CHECK_EQUAL(empty.str("api.address"), "127.0.0.1:2");

    BOOST_CHECK_EQUAL(parse_error(doc),
                      "test.json: api.address: environment variable PORT is not set and has no default");
    BOOST_CHECK_EQUAL(parse_error(R"({"mqc": {"routes": [{"route": "/a", "queue": "${Q}"}]}})"),
                      "test.json: mqc.routes[0].queue: environment variable Q is not set and has no default");
    BOOST_CHECK(contains(parse_error(R"({"log": {"level": "${LEVEL"}})"), "log.level: unterminated"));
    // A substituted value is validated like a literal one.
    BOOST_CHECK(
        contains(parse_error(R"({"log": {"level": "${LEVEL}"}})", {}, ConfigSchema::builtin(), {{"LEVEL", "loud"}}),
                 "log.level: expected one of"));
}

// "split" on an array: one string (an environment variable) is the list of its comma-separated pieces.
BOOST_AUTO_TEST_CASE(a_list_can_be_one_comma_separated_string) {
    auto keys = [](const std::string& doc, const std::vector<std::string>& sets = {},
                   std::map<std::string, std::string> env = {}) {
        return parse(doc, sets, ConfigSchema::builtin(), std::move(env)).at("auth.api_keys");
    };
    BOOST_CHECK_EQUAL(keys(R"({"auth": {"api_keys": "${KEYS}"}})", {}, {{"KEYS", "a1,b2"}}), (Json{"a1", "b2"}));
    // Pieces are trimmed, empty ones dropped: an unset variable with an empty default is no keys at all.
    BOOST_CHECK_EQUAL(keys(R"({"auth": {"api_keys": "${KEYS}"}})", {}, {{"KEYS", " a1 , ,b2,"}}), (Json{"a1", "b2"}));
    BOOST_CHECK_EQUAL(keys(R"({"auth": {"api_keys": "${KEYS:-}"}})"), Json::array());
    // A JSON array stays what it is, commas and all.
    BOOST_CHECK_EQUAL(keys(R"({"auth": {"api_keys": ["a,b", "c"]}})"), (Json{"a,b", "c"}));
    // --set takes either form.
    BOOST_CHECK_EQUAL(keys("{}", {"auth.api_keys=x1,y2"}), (Json{"x1", "y2"}));
    BOOST_CHECK_EQUAL(keys("{}", {R"(auth.api_keys=["x,1"])"}), (Json{"x,1"}));
    BOOST_CHECK_EQUAL(keys("{}", {"auth.api_keys="}), Json::array());
    // Without "split" a string is not a list.
    BOOST_CHECK(contains(parse_error(R"({"mqc": {"routes": "/a"}})"), "mqc.routes: expected an array"));
    // The keys are secrets: each one masked, their number shown.
    auto masked = parse("{}", {"auth.api_keys=alpha-key,beta-key"}).masked();
    BOOST_CHECK_EQUAL(masked["auth"]["api_keys"], (Json{"******", "******"}));
    BOOST_CHECK(!contains(masked.dump(), "alpha-key"));
}

BOOST_AUTO_TEST_CASE(set_overrides) {
    auto config = parse(R"({"api": {"threads": 4}})",
                        {"api.threads=32", "api.address=0.0.0.0:1", "api.keep_alive=false", "queue.backend=kafka",
                         "queue.kafka.properties.linger.ms=5", "mqc.routes=[{\"route\": \"/x\", \"queue\": \"qx\"}]"});
    BOOST_CHECK_EQUAL(config.integer("api.threads"), 32);
    BOOST_CHECK_EQUAL(config.str("api.address"), "0.0.0.0:1");
    BOOST_CHECK_EQUAL(config.boolean("api.keep_alive"), false);
    BOOST_CHECK_EQUAL(config.str("queue.backend"), "kafka");
    BOOST_CHECK_EQUAL(config.at("queue.kafka.properties"), (Json{{"linger.ms", "5"}}));
    BOOST_CHECK_EQUAL(config.str("queue.kafka.properties.linger.ms"), "5");
    BOOST_CHECK_EQUAL(config.at("mqc.routes")[0]["concurrency"], 1);
    // A value with '=' in it keeps everything after the first one.
    BOOST_CHECK_EQUAL(parse("{}", {"queue.kafka.group_prefix=a=b"}).str("queue.kafka.group_prefix"), "a=b");
    // --set values are not substituted: the shell already did that.
    BOOST_CHECK_EQUAL(parse("{}", {"queue.kafka.group_prefix=${X}"}).str("queue.kafka.group_prefix"), "${X}");
}

BOOST_AUTO_TEST_CASE(set_errors) {
    BOOST_CHECK_EQUAL(parse_error("{}", {"api.threads=abc"}), "--set: api.threads: expected an integer, got \"abc\"");
    BOOST_CHECK_EQUAL(parse_error("{}", {"api.threads=12x"}), "--set: api.threads: expected an integer, got \"12x\"");
    BOOST_CHECK_EQUAL(parse_error("{}", {"foo"}), "--set: \"foo\": expected key=value");
    BOOST_CHECK(contains(parse_error("{}", {"=1"}), "expected key=value"));
    BOOST_CHECK(
        contains(parse_error("{}", {"api.adress=x"}), "--set: api.adress: unknown key (known keys of api: address, "));
    BOOST_CHECK(contains(parse_error("{}", {"api.threads.x=1"}), "--set: api.threads.x: unknown key"));
    BOOST_CHECK(contains(parse_error("{}", {"api.keep_alive=yes"}), "--set: api.keep_alive: expected true or false"));
    BOOST_CHECK_EQUAL(parse_error("{}", {"api.threads=0"}),
                      "--set: api.threads: expected an integer between 1 and 1024, got 0");
    BOOST_CHECK_EQUAL(parse_error("{}", {"queue.backend=redis"}),
                      "--set: queue.backend: expected one of \"sqlite\", \"kafka\", got \"redis\"");
    BOOST_CHECK(
        contains(parse_error("{}", {"mqc.routes=[oops"}), "--set: mqc.routes: expected a JSON array, got \"[oops\""));
    BOOST_CHECK(contains(parse_error("{}", {"mqc.routes=[{}]"}), "--set: mqc.routes[0]: missing required key"));
}

// prod: KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_MECHANISM, KAFKA_USERNAME, KAFKA_PASSWORD become librdkafka properties of
// the queue and the cluster; unset ones are not passed at all; a password without a user (or the reverse) is refused.
BOOST_AUTO_TEST_CASE(prod_profile_maps_kafka_security_from_environment) {
    const std::string file = source_dir + "/config/prod.json";
    auto properties = [&](std::map<std::string, std::string> env) {
        return KafkaQueue::properties_from(Config::load(file, {}, services::full_schema(), env_of(std::move(env))));
    };
    BOOST_CHECK(properties({}).empty());

    auto sasl = properties({{"KAFKA_SECURITY_PROTOCOL", "SASL_SSL"},
                            {"KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"},
                            {"KAFKA_USERNAME", "hydra"},
                            {"KAFKA_PASSWORD", "hunter2"}});
    const std::map<std::string, std::string> expected = {{"security.protocol", "SASL_SSL"},
                                                         {"sasl.mechanism", "SCRAM-SHA-512"},
                                                         {"sasl.username", "hydra"},
                                                         {"sasl.password", "hunter2"}};
    BOOST_CHECK(sasl == expected);
    // TLS without SASL: only the protocol.
    BOOST_CHECK((properties({{"KAFKA_SECURITY_PROTOCOL", "SSL"}}) ==
                 std::map<std::string, std::string>{{"security.protocol", "SSL"}}));

    auto refused = [&](std::map<std::string, std::string> env) {
        try {
            properties(std::move(env));
        } catch (const ConfigError& e) {
            return std::string(e.what());
        }
        return std::string("accepted");
    };
    BOOST_CHECK_EQUAL(refused({{"KAFKA_PASSWORD", "hunter2"}}),
                      file +
                          ": queue.kafka.properties.sasl.password is set but queue.kafka.properties.sasl.username "
                          "is empty (prod: KAFKA_USERNAME and KAFKA_PASSWORD go together)");
    BOOST_CHECK_EQUAL(refused({{"KAFKA_USERNAME", "hydra"}, {"KAFKA_PASSWORD", ""}}),
                      file +
                          ": queue.kafka.properties.sasl.username is set but queue.kafka.properties.sasl.password "
                          "is empty (prod: KAFKA_USERNAME and KAFKA_PASSWORD go together)");
    BOOST_CHECK(!contains(refused({{"KAFKA_PASSWORD", "hunter2"}}), "hunter2"));

    // The cluster's producer and consumer get the same properties as the queue.
    auto config =
        Config::load(file, {}, services::full_schema(),
                     env_of({{"KAFKA_USERNAME", "hydra"}, {"KAFKA_PASSWORD", "hunter2"}, {"HYDRA_NODE_ID", "unit-1"}}));
    BOOST_CHECK(hydra::cluster::ClusterExchange::Settings::from(config, "mall.wsserver").properties ==
                KafkaQueue::properties_from(config));
}

BOOST_AUTO_TEST_CASE(masked_hides_secrets) {
    auto config = Config::load(source_dir + "/config/prod.json", {"queue.kafka.properties.ssl.key.password=kp"},
                               services::full_schema(), env_of({{"KAFKA_PASSWORD", "hunter2"}}));
    BOOST_CHECK_EQUAL(config.str("queue.kafka.properties.sasl.password"), "hunter2");
    Json masked = config.masked();
    BOOST_CHECK_EQUAL(masked["queue"]["kafka"]["properties"]["sasl.password"], "******");
    BOOST_CHECK_EQUAL(masked["queue"]["kafka"]["properties"]["ssl.key.password"], "******");
    BOOST_CHECK(!contains(masked.dump(), "hunter2"));
    // Declared keys are only masked when the schema says so.
    BOOST_CHECK_EQUAL(masked["queue"]["kafka"]["brokers"], "127.0.0.1:9092");
    BOOST_CHECK_EQUAL(masked["api"]["address"], "0.0.0.0:9090");

    auto schema = ConfigSchema::builtin();
    schema.add("services.auth", {{"type", "object"},
                                 {"properties",
                                  {{"jwt_key", {{"type", "string"}, {"secret", true}, {"default", "k"}}},
                                   {"issuer", {{"type", "string"}, {"default", "hydra"}}}}}});
    auto with_service = parse("{}", {}, schema);
    BOOST_CHECK_EQUAL(with_service.masked()["services"]["auth"]["jwt_key"], "******");
    BOOST_CHECK_EQUAL(with_service.masked()["services"]["auth"]["issuer"], "hydra");
    BOOST_CHECK_EQUAL(with_service.json()["services"]["auth"]["jwt_key"], "k");
}

BOOST_AUTO_TEST_CASE(services_add_their_sections) {
    auto schema = ConfigSchema::builtin();
    schema.add("services.message_center",
               {{"type", "object"},
                {"properties",
                 {{"enabled", {{"type", "boolean"}, {"default", true}}},
                  {"callback", {{"type", "string"}, {"format", "url"}, {"default", "http://127.0.0.1:1/cb"}}},
                  {"batch", {{"type", "integer"}, {"minimum", 1}, {"maximum", 100}, {"default", 10}}}}}});

    auto defaults = parse("{}", {}, schema);
    BOOST_CHECK_EQUAL(defaults.integer("services.message_center.batch"), 10);
    BOOST_CHECK(defaults.boolean("services.message_center.enabled"));

    auto configured =
        parse(R"({"services": {"message_center": {"batch": 50}}})", {"services.message_center.enabled=false"}, schema);
    BOOST_CHECK_EQUAL(configured.integer("services.message_center.batch"), 50);
    BOOST_CHECK(!configured.boolean("services.message_center.enabled"));

    BOOST_CHECK_EQUAL(parse_error(R"({"services": {"message_center": {"batch": 101}}})", {}, schema),
                      "test.json: services.message_center.batch: expected an integer between 1 and 100, got 101");
    BOOST_CHECK_EQUAL(parse_error(R"({"services": {"message_center": {"callback": "ftp://x"}}})", {}, schema),
                      "test.json: services.message_center.callback: expected a URL starting with http:// or "
                      "https://, got \"ftp://x\"");
    BOOST_CHECK(contains(parse_error(R"({"services": {"message_center": {"bach": 1}}})", {}, schema),
                         "services.message_center.bach: unknown key (known keys of services.message_center: batch, "
                         "callback, enabled)"));
    // The builtin schema itself is not changed.
    BOOST_CHECK(
        contains(parse_error(R"({"services": {"message_center": {}}})"), "services.message_center: unknown key"));

    // A section with required keys stays absent until configured, then must be complete.
    schema.add("services.mailer",
               {{"type", "object"}, {"required", {"host"}}, {"properties", {{"host", {{"type", "string"}}}}}});
    BOOST_CHECK(!parse("{}", {}, schema).has("services.mailer"));
    BOOST_CHECK_EQUAL(parse_error(R"({"services": {"mailer": {}}})", {}, schema),
                      "test.json: services.mailer: missing required key \"host\"");

    BOOST_CHECK_THROW(schema.add("nope.section", {{"type", "object"}}), ConfigError);
    BOOST_CHECK_THROW(schema.add("api.threads.x", {{"type", "object"}}), ConfigError);
}

// README, Configuration: undeclared keys (under an open-ended object) whose name contains one of the listed words are
// masked by `hydra conf show`, in any case; others are shown.
BOOST_AUTO_TEST_CASE(masked_hides_undeclared_keys_named_like_secrets) {
    const std::vector<std::string> secret_names = {"sasl.password",    "my.secret.value", "auth.token",
                                                   "ssl.key.location", "a.credential",    "sasl.oauthbearer.config",
                                                   "ssl.private.pem",  "SASL.PASSWORD"};
    std::vector<std::string> sets = {"queue.kafka.properties.linger.ms=5"};
    for (const auto& name : secret_names) sets.push_back("queue.kafka.properties." + name + "=visible-" + name);
    Json masked = parse("{}", sets).masked();
    const Json& properties = masked["queue"]["kafka"]["properties"];
    for (const auto& name : secret_names) BOOST_CHECK_MESSAGE(properties[name] == "******", name);
    BOOST_CHECK_EQUAL(properties["linger.ms"], "5");
    BOOST_CHECK(!contains(masked.dump(), "visible-"));
}

// Every default in README's configuration table is the schema's default.
BOOST_AUTO_TEST_CASE(the_readme_table_of_keys_shows_the_schema_defaults) {
    std::ifstream in(source_dir + "/README.md");
    BOOST_REQUIRE(in);
    auto defaults = Config::from_json(Json::object(), "test.json", {}, services::full_schema(), env_of({}));
    const std::regex row(R"(^\| (`[^|]+) \| ([^|]+) \| .*\|$)");
    auto split = [](const std::string& text) {
        std::vector<std::string> parts;
        std::size_t from = 0;
        for (std::size_t at; (at = text.find(" / ", from)) != std::string::npos; from = at + 3)
            parts.push_back(text.substr(from, at - from));
        parts.push_back(text.substr(from));
        return parts;
    };
    auto unquote = [](std::string text) {
        if (text.size() >= 2 && text.front() == '`' && text.back() == '`') text = text.substr(1, text.size() - 2);
        return text;
    };
    bool in_section = false, in_table = false;
    int rows = 0;
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("## ", 0) == 0) in_section = line == "## Configuration";
        if (!in_section) continue;
        if (line.rfind("| key | default |", 0) == 0) in_table = true;
        std::smatch m;
        if (!in_table || !std::regex_match(line, m, row)) continue;
        auto keys = split(m[1].str());
        auto values = split(m[2].str());
        BOOST_REQUIRE_MESSAGE(keys.size() == values.size(), "keys and defaults do not pair up: " << line);
        std::string first = unquote(keys[0]);
        for (std::size_t i = 0; i < keys.size(); ++i) {
            std::string key = unquote(keys[i]);
            if (key.rfind('.', 0) == 0) key = first.substr(0, first.rfind('.')) + key;  // `.r`: a sibling of the first
            BOOST_REQUIRE_MESSAGE(defaults.has(key), "README names a key the schema does not have: " << key);
            const Json& actual = defaults.at(key);
            std::string documented = unquote(values[i]);
            std::string shown = actual.is_string() ? actual.get<std::string>() : actual.dump();
            if (actual.is_string() && documented == "\"\"") documented.clear();
            BOOST_CHECK_MESSAGE(shown == documented,
                                key << ": README says " << values[i] << ", the schema's default is " << actual.dump());
            ++rows;
        }
    }
    BOOST_CHECK_GE(rows, 50);  // the table was found and read (58 keys when written)
}

BOOST_AUTO_TEST_SUITE_END()
