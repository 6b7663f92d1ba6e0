// The push demo's login against password guessing: passwords kept as scrypt records that carry their
// parameters, the same work for a user that does not exist, and failed logins throttled per user and connection.
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <regex>
#include <string>
#include <vector>

#include <Poco/DigestEngine.h>
#include <Poco/SHA2Engine.h>
#include <SQLiteCpp/SQLiteCpp.h>

#include <hydra/json.h>
#include <hydra/ws_client.h>

#include "support/host.h"
#include "support/sqlite.h"
#include "support/temp.h"

using hydra::Json;
using hydra::WsClient;
using test::login;

namespace {

std::string stored_hash(const std::string& db, const std::string& uname) {
    return test::sqlite_text(db, "SELECT hash FROM users WHERE uname = ?", {uname});
}

double login_ms(WsClient& c, const std::string& uname, const std::string& pwd) {
    auto t0 = std::chrono::steady_clock::now();
    Json r = login(c, uname, pwd);
    BOOST_CHECK_EQUAL(r["code"], 401);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

BOOST_AUTO_TEST_SUITE(services_push_login)

BOOST_AUTO_TEST_CASE(passwords_are_scrypt_records_that_keep_their_parameters) {
    std::string db = test::temp_path("push.db");
    // A database from before: carol (not in config) kept as one salted SHA-256.
    {
        SQLite::Database d(db, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
        d.exec("CREATE TABLE users (uname TEXT PRIMARY KEY, salt TEXT NOT NULL, hash TEXT NOT NULL)");
        Poco::SHA2Engine sha(Poco::SHA2Engine::SHA_256);
        sha.update(std::string("0123456789abcdef"));
        sha.update(std::string("carol-pw"));
        SQLite::Statement ins(d, "INSERT INTO users VALUES ('carol', '0123456789abcdef', ?)");
        ins.bind(1, Poco::DigestEngine::digestToHex(sha.digest()));
        ins.exec();
    }
    const std::regex record(R"(scrypt\$1024\$8\$1\$[0-9a-f]{32}\$[0-9a-f]{64})");
    {
        test::Host host({"--set", "services.push.database=" + db, "--set", "services.push.password_kdf.N=1024"});
        BOOST_CHECK_MESSAGE(std::regex_match(stored_hash(db, "alice"), record), stored_hash(db, "alice"));
        WsClient c = host.connect("/");
        BOOST_CHECK_EQUAL(login(c, "alice", "alice-pw")["code"], 200);
        WsClient old = host.connect("/");
        BOOST_CHECK_EQUAL(login(old, "carol", "wrong")["code"], 401);
        BOOST_CHECK(!stored_hash(db, "carol").starts_with("scrypt$"));
        BOOST_CHECK_EQUAL(login(old, "carol", "carol-pw")["code"], 200);  // checked the old way, then rewritten
        BOOST_CHECK_MESSAGE(std::regex_match(stored_hash(db, "carol"), record), stored_hash(db, "carol"));
    }
    // Other parameters in config: the records made with N=1024 still check (carol is not reseeded).
    test::Host host({"--set", "services.push.database=" + db, "--set", "services.push.password_kdf.N=2048"});
    WsClient c = host.connect("/");
    BOOST_CHECK_EQUAL(login(c, "carol", "carol-pw")["code"], 200);
    BOOST_CHECK(stored_hash(db, "alice").starts_with("scrypt$2048$8$1$"));  // seeded again from config
}

BOOST_AUTO_TEST_CASE(failed_logins_are_throttled_per_user_connection_and_address) {
    test::Host host({"--set", "services.push.password_kdf.N=1024", "--set",
                     "services.push.login_throttle.max_failures=3", "--set", "services.push.login_throttle.block_s=60",
                     "--set", "services.push.login_throttle.max_failures_per_address=9"});
    WsClient a = host.connect("/");
    for (int i = 0; i < 3; ++i) BOOST_CHECK_EQUAL(login(a, "alice", "guess-" + std::to_string(i))["code"], 401);
    // Blocked: even the right password is not checked.
    Json r = login(a, "alice", "alice-pw");
    BOOST_CHECK_EQUAL(r["code"], 429);
    BOOST_CHECK_EQUAL(r["err"], "too many failed logins: try again in 60 s");
    WsClient b = host.connect("/");
    BOOST_CHECK_EQUAL(login(b, "alice", "alice-pw")["code"], 429);  // the user, from another connection
    BOOST_CHECK_EQUAL(login(a, "bob", "bob-pw")["code"], 429);      // the connection, for another user
    BOOST_CHECK_EQUAL(login(b, "bob", "bob-pw")["code"], 200);

    // A user that does not exist is throttled the same way (a 429 does not tell who exists).
    WsClient c = host.connect("/");
    for (int i = 0; i < 3; ++i) BOOST_CHECK_EQUAL(login(c, "nobody", "guess")["code"], 401);
    WsClient d = host.connect("/");
    BOOST_CHECK_EQUAL(login(d, "nobody", "guess")["code"], 429);

    // Per client address: the connections above come from 127.0.0.1 too (6 failures so far); at
    // max_failures_per_address every connection from it is refused, whichever user it names.
    for (int i = 0; i < 3; ++i) {
        WsClient g = host.connect("/");
        BOOST_CHECK_EQUAL(login(g, "guess-" + std::to_string(i), "x")["code"], 401);
    }
    WsClient f = host.connect("/");
    BOOST_CHECK_EQUAL(login(f, "bob", "bob-pw")["code"], 429);

    // Limits on the fields themselves.
    WsClient e = host.connect("/");
    BOOST_CHECK_EQUAL(login(e, std::string(129, 'u'), "x")["code"], 400);
    BOOST_CHECK_EQUAL(login(e, "bob", std::string(1025, 'p'))["code"], 400);
}

BOOST_AUTO_TEST_CASE(a_wrong_password_costs_the_kdf_whether_or_not_the_user_exists) {
    // The default KDF (scrypt N=16384, r=8: about 90 ms here). One attempt per connection and three per user stay
    // under the throttle.
    test::Host host;
    std::vector<double> known, unknown;
    for (int i = 0; i < 3; ++i) {
        WsClient k = host.connect("/");
        known.push_back(login_ms(k, "alice", "wrong"));
        WsClient u = host.connect("/");
        unknown.push_back(login_ms(u, "no-such-user", "wrong"));
    }
    // A lower bound only (a busy machine makes it slower, never faster): one round of SHA-256 took microseconds,
    // and an unknown user was answered before any hashing.
    BOOST_CHECK_MESSAGE(median(known) > 40, "known user: " << median(known) << " ms");
    BOOST_CHECK_MESSAGE(median(unknown) > median(known) / 2,
                        "unknown user: " << median(unknown) << " ms, known: " << median(known) << " ms");
}

BOOST_AUTO_TEST_SUITE_END()
