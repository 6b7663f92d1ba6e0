// JwtVerifier: every rule on its own, with tokens built here — valid ones with Poco::JWT::Signer, "alg: none",
// tampered and malformed ones assembled by hand, RS256/ES256 with keys generated for the run.
#include <boost/test/unit_test.hpp>

#include <hydra/config.h>
#include <hydra/jwt.h>

#include <Poco/Crypto/ECKey.h>
#include <Poco/Crypto/RSAKey.h>
#include <Poco/JWT/Signer.h>
#include <Poco/JWT/Token.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <string>

#include "support/jwt.h"
#include "support/temp.h"

using hydra::ConfigError;
using hydra::Json;
using hydra::JwtOutcome;
using hydra::JwtVerifier;
using Clock = std::chrono::system_clock;
using test::b64url;

namespace {

const std::string kSecret = "0123456789abcdef0123456789abcdef-test";  // 37 bytes
const Clock::time_point kNow = Clock::time_point(std::chrono::seconds(1'800'000'000));
constexpr std::int64_t kNowS = 1'800'000'000;

// Claims every accepted token needs, plus `extra` (null values remove a claim).
Json claims(Json extra = Json::object()) {
    Json c = {{"sub", "alice"}, {"exp", kNowS + 600}};
    for (auto& [k, v] : extra.items()) {
        if (v.is_null())
            c.erase(k);
        else
            c[k] = v;
    }
    return c;
}

// A token signed by Poco's Signer (so hydra's check is not checked against itself).
std::string signed_with(Poco::JWT::Signer& signer, const std::string& alg, const Json& payload) {
    Poco::JWT::Token t;
    t.setType("JWT");
    for (auto& [k, v] : payload.items()) {
        if (v.is_string())
            t.payload().set(k, v.get<std::string>());
        else if (v.is_number_integer())
            t.payload().set(k, v.get<Poco::Int64>());
        else if (v.is_number())
            t.payload().set(k, v.get<double>());
        else if (v.is_array()) {
            Poco::JSON::Array::Ptr a = new Poco::JSON::Array;
            for (auto& e : v) a->add(e.get<std::string>());
            t.payload().set(k, a);
        }
    }
    return signer.sign(t, alg);
}

std::string hs256(const Json& payload, const std::string& secret = kSecret) {
    Poco::JWT::Signer signer(secret);
    return signed_with(signer, Poco::JWT::Signer::ALGO_HS256, payload);
}

JwtVerifier::Settings hs_settings() {
    JwtVerifier::Settings s;
    s.secret = kSecret;
    s.leeway_s = 30;
    return s;
}

std::string error_of(const JwtVerifier& v, const std::string& token, Clock::time_point now = kNow) {
    JwtOutcome o = v.verify(token, now);
    return o.ok() ? std::string("accepted") : o.error;
}

// Key pairs generated once for the run.
using test::RsaPair;
const RsaPair& rsa() {
    static const RsaPair pair;
    return pair;
}
const RsaPair& other_rsa() {
    static const RsaPair pair;
    return pair;
}

std::string rs256(const Json& payload, const RsaPair& pair = rsa()) {
    Poco::JWT::Signer signer(pair.key);
    return signed_with(signer, Poco::JWT::Signer::ALGO_RS256, payload);
}

JwtVerifier::Settings rs_settings() {
    JwtVerifier::Settings s;
    s.public_key_pem = rsa().pem();
    return s;
}

// "header.payload.signature" from JSON texts and raw signature bytes.
std::string assemble(const std::string& header, const std::string& payload, const std::string& signature = "") {
    return b64url(header) + "." + b64url(payload) + "." + b64url(signature);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(jwt)

BOOST_AUTO_TEST_CASE(a_valid_hs256_token_gives_its_claims) {
    JwtVerifier v(hs_settings());
    JwtOutcome o = v.verify(hs256(claims({{"role", "admin"}})), kNow);
    BOOST_REQUIRE_MESSAGE(o.ok(), o.error);
    BOOST_CHECK_EQUAL(o.sub, "alice");
    BOOST_CHECK_EQUAL(o.exp, kNowS + 600);
    BOOST_CHECK_EQUAL(o.claims["role"], "admin");
    BOOST_CHECK_EQUAL(o.claims["sub"], "alice");
}

BOOST_AUTO_TEST_CASE(a_token_over_the_size_limit_is_refused_before_it_is_parsed) {
    JwtVerifier::Settings s = hs_settings();
    const std::string big = hs256(claims({{"pad", std::string(7000, 'x')}}));
    BOOST_REQUIRE_GT(big.size(), 8192u);
    BOOST_CHECK_EQUAL(error_of(JwtVerifier(s), big), "token too large");
    // Not too large as a file: the same bytes of garbage are refused for their size, not their form.
    BOOST_CHECK_EQUAL(error_of(JwtVerifier(s), std::string(9000, '.')), "token too large");
    s.max_token_bytes = 16384;
    BOOST_CHECK_EQUAL(error_of(JwtVerifier(s), big), "accepted");
}

BOOST_AUTO_TEST_CASE(alg_none_is_refused_whatever_its_spelling_and_signature) {
    JwtVerifier v(hs_settings());
    const std::string payload = claims().dump();
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"({"alg":"none","typ":"JWT"})", payload)), "algorithm none not allowed");
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"({"alg":"None"})", payload)), "algorithm None not allowed");
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"({"alg":"NONE"})", payload, "sig")), "algorithm NONE not allowed");
    // no alg at all, or not a string
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"({"typ":"JWT"})", payload)), "malformed token");
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"({"alg":null})", payload)), "malformed token");
    // A valid token's payload with its header swapped for alg none and the signature dropped.
    const std::string good = hs256(claims());
    const std::string payload_part = good.substr(good.find('.') + 1, good.rfind('.') - good.find('.') - 1);
    BOOST_CHECK_EQUAL(error_of(v, b64url(R"({"alg":"none"})") + "." + payload_part + "."),
                      "algorithm none not allowed");
}

BOOST_AUTO_TEST_CASE(a_tampered_token_or_another_secret_fails_the_signature) {
    JwtVerifier v(hs_settings());
    const std::string good = hs256(claims());
    BOOST_REQUIRE_EQUAL(error_of(v, good), "accepted");
    const std::size_t d1 = good.find('.'), d2 = good.rfind('.');
    // the payload rewritten (bob instead of alice), the signature kept
    const std::string forged = good.substr(0, d1) + "." + b64url(claims({{"sub", "bob"}}).dump()) + good.substr(d2);
    BOOST_CHECK_EQUAL(error_of(v, forged), "bad signature");
    // one signature character changed
    std::string flipped = good;
    flipped[d2 + 5] = flipped[d2 + 5] == 'A' ? 'B' : 'A';
    BOOST_CHECK_EQUAL(error_of(v, flipped), "bad signature");
    // the signature cut short, or gone
    BOOST_CHECK_EQUAL(error_of(v, good.substr(0, good.size() - 4)), "bad signature");
    BOOST_CHECK_EQUAL(error_of(v, good.substr(0, d2 + 1)), "bad signature");
    // signed with another secret
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims(), kSecret + "-other")), "bad signature");
}

BOOST_AUTO_TEST_CASE(a_malformed_token_is_refused) {
    JwtVerifier v(hs_settings());
    const std::string good = hs256(claims());
    BOOST_CHECK_EQUAL(error_of(v, ""), "malformed token");
    BOOST_CHECK_EQUAL(error_of(v, "abc"), "malformed token");
    BOOST_CHECK_EQUAL(error_of(v, good.substr(0, good.rfind('.'))), "malformed token");  // two parts
    BOOST_CHECK_EQUAL(error_of(v, good + ".x"), "malformed token");                      // four parts
    BOOST_CHECK_EQUAL(error_of(v, good + "="), "malformed token");                       // padding
    BOOST_CHECK_EQUAL(error_of(v, "+" + good), "malformed token");                       // not base64url
    BOOST_CHECK_EQUAL(error_of(v, " " + good), "malformed token");
    BOOST_CHECK_EQUAL(error_of(v, assemble("not json", claims().dump(), "s")), "malformed token");
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"(["HS256"])", claims().dump(), "s")), "malformed token");
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"({"alg":"HS256"})", "[1,2]", "s")), "malformed token");
    // nesting deeper than limits.json_depth is not parsed
    const std::string deep = R"({"sub":"alice","x":)" + std::string(100, '[') + std::string(100, ']') + "}";
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"({"alg":"HS256"})", deep, "s")), "malformed token");
    // a critical header extension hydra does not know
    BOOST_CHECK_EQUAL(error_of(v, assemble(R"({"alg":"HS256","crit":["exp"]})", claims().dump(), "s")),
                      "unsupported critical header");
}

BOOST_AUTO_TEST_CASE(exp_is_required_and_allowed_the_leeway) {
    JwtVerifier v(hs_settings());  // leeway 30 s
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"exp", nullptr}}))), "missing exp");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"exp", "tomorrow"}}))), "missing exp");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"exp", kNowS - 29}}))), "accepted");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"exp", kNowS - 30}}))), "token expired");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"exp", kNowS - 3600}}))), "token expired");
    JwtVerifier::Settings strict = hs_settings();
    strict.leeway_s = 0;
    BOOST_CHECK_EQUAL(error_of(JwtVerifier(strict), hs256(claims({{"exp", kNowS}}))), "token expired");
    BOOST_CHECK_EQUAL(error_of(JwtVerifier(strict), hs256(claims({{"exp", kNowS + 1}}))), "accepted");
    // a fractional NumericDate
    BOOST_CHECK_EQUAL(error_of(JwtVerifier(strict), hs256(claims({{"exp", kNowS + 0.5}}))), "accepted");
}

BOOST_AUTO_TEST_CASE(nbf_in_the_future_is_refused_beyond_the_leeway) {
    JwtVerifier v(hs_settings());
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"nbf", kNowS + 31}}))), "token not yet valid");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"nbf", kNowS + 30}}))), "accepted");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"nbf", kNowS - 100}}))), "accepted");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"nbf", "now"}}))), "malformed nbf");
}

BOOST_AUTO_TEST_CASE(the_issuer_must_match_when_configured) {
    JwtVerifier::Settings s = hs_settings();
    BOOST_CHECK_EQUAL(error_of(JwtVerifier(s), hs256(claims({{"iss", "anyone"}}))), "accepted");  // not checked
    s.issuer = "https://id.example";
    JwtVerifier v(s);
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"iss", "https://id.example"}}))), "accepted");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"iss", "https://evil.example"}}))), "wrong issuer");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims())), "wrong issuer");
}

BOOST_AUTO_TEST_CASE(the_audience_may_be_a_string_or_an_array_holding_it) {
    JwtVerifier::Settings s = hs_settings();
    s.audience = "hydra";
    JwtVerifier v(s);
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"aud", "hydra"}}))), "accepted");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"aud", Json::array({"other", "hydra"})}}))), "accepted");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"aud", Json::array({"other", "hydra-admin"})}}))), "wrong audience");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"aud", "hydra-admin"}}))), "wrong audience");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims())), "wrong audience");
}

BOOST_AUTO_TEST_CASE(sub_is_required) {
    JwtVerifier v(hs_settings());
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"sub", nullptr}}))), "missing sub");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims({{"sub", ""}}))), "missing sub");
}

BOOST_AUTO_TEST_CASE(rs256_verifies_with_the_configured_public_key_only) {
    JwtVerifier v(rs_settings());
    JwtOutcome o = v.verify(rs256(claims()), kNow);
    BOOST_REQUIRE_MESSAGE(o.ok(), o.error);
    BOOST_CHECK_EQUAL(o.sub, "alice");
    BOOST_CHECK_EQUAL(error_of(v, rs256(claims(), other_rsa())), "bad signature");
    // the claims are checked after the signature as for HS256
    BOOST_CHECK_EQUAL(error_of(v, rs256(claims({{"exp", kNowS - 3600}}))), "token expired");
}

BOOST_AUTO_TEST_CASE(an_hs256_token_signed_with_the_public_key_is_refused) {
    // The classic confusion: the server's public key (public, after all) used as the HMAC secret.
    const std::string forged = hs256(claims(), rsa().pem());
    BOOST_CHECK_EQUAL(error_of(JwtVerifier(rs_settings()), forged), "algorithm HS256 not allowed");
    // With a secret configured too, HS256 is allowed, but only with that secret.
    JwtVerifier::Settings both = rs_settings();
    both.secret = kSecret;
    JwtVerifier v(both);
    BOOST_CHECK_EQUAL(error_of(v, forged), "bad signature");
    BOOST_CHECK_EQUAL(error_of(v, hs256(claims())), "accepted");
    BOOST_CHECK_EQUAL(error_of(v, rs256(claims())), "accepted");
}

BOOST_AUTO_TEST_CASE(an_rs256_token_is_refused_when_only_a_secret_is_configured) {
    JwtVerifier v(hs_settings());
    BOOST_CHECK_EQUAL(error_of(v, rs256(claims())), "algorithm RS256 not allowed");
    // nor any other algorithm than the configured ones
    for (const char* alg : {"HS384", "HS512", "RS512", "ES256", "PS256"})
        BOOST_CHECK_EQUAL(error_of(v, assemble(Json{{"alg", alg}}.dump(), claims().dump(), "sig")),
                          std::string("algorithm ") + alg + " not allowed");
}

BOOST_AUTO_TEST_CASE(es256_verifies_with_a_p256_public_key) {
    Poco::SharedPtr<Poco::Crypto::ECKey> key(new Poco::Crypto::ECKey("prime256v1"));
    std::ostringstream pub;
    key->save(&pub);
    JwtVerifier::Settings s;
    s.public_key_pem = pub.str();
    JwtVerifier v(s);
    Poco::JWT::Signer signer(key);
    const std::string token = signed_with(signer, Poco::JWT::Signer::ALGO_ES256, claims());
    BOOST_CHECK_EQUAL(error_of(v, token), "accepted");
    BOOST_CHECK_EQUAL(error_of(v, rs256(claims())), "algorithm RS256 not allowed");
    std::string flipped = token;
    flipped[flipped.rfind('.') + 3] = flipped[flipped.rfind('.') + 3] == 'A' ? 'B' : 'A';
    BOOST_CHECK_EQUAL(error_of(v, flipped), "bad signature");
}

BOOST_AUTO_TEST_CASE(keys_that_cannot_be_used_are_config_errors) {
    JwtVerifier::Settings none;
    BOOST_CHECK_THROW(JwtVerifier{none}, ConfigError);
    JwtVerifier::Settings short_secret;
    short_secret.secret = "too-short";
    BOOST_CHECK_THROW(JwtVerifier{short_secret}, ConfigError);
    JwtVerifier::Settings garbage;
    garbage.public_key_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    BOOST_CHECK_THROW(JwtVerifier{garbage}, ConfigError);
    JwtVerifier::Settings other_curve;
    Poco::Crypto::ECKey p384("secp384r1");
    std::ostringstream pub;
    p384.save(&pub);
    other_curve.public_key_pem = pub.str();
    BOOST_CHECK_THROW(JwtVerifier{other_curve}, ConfigError);
}

BOOST_AUTO_TEST_CASE(from_config_reads_the_auth_jwt_section_and_the_key_file) {
    auto load = [](const std::vector<std::string>& sets) {
        return hydra::Config::from_json(Json::object(), "test.json", sets, hydra::ConfigSchema::builtin());
    };
    BOOST_CHECK(JwtVerifier::from(load({})) == nullptr);  // nothing configured: no verifier
    const std::string pem_file = test::temp_path("jwt.pem");
    std::ofstream(pem_file) << rsa().pem();
    auto v = JwtVerifier::from(load({"auth.jwt.public_key_file=" + pem_file, "auth.jwt.issuer=me",
                                     "auth.jwt.audience=you", "auth.jwt.leeway_s=0"}));
    BOOST_REQUIRE(v);
    BOOST_CHECK_EQUAL(v->leeway_s(), 0);
    BOOST_CHECK_EQUAL(error_of(*v, rs256(claims({{"iss", "me"}, {"aud", "you"}}))), "accepted");
    BOOST_CHECK_EQUAL(error_of(*v, rs256(claims({{"iss", "me"}}))), "wrong audience");
    BOOST_CHECK_THROW(JwtVerifier::from(load({"auth.jwt.public_key_file=" + pem_file + ".missing"})), ConfigError);
    BOOST_CHECK_THROW(load({"auth.jwt.leeway_s=-1"}), ConfigError);
    // the secret is masked by conf show
    Json masked = load({"auth.jwt.secret=" + kSecret}).masked();
    BOOST_CHECK_EQUAL(masked["auth"]["jwt"]["secret"], "******");
}

BOOST_AUTO_TEST_CASE(sign_makes_an_hs256_token_the_verifier_accepts) {
    JwtVerifier::Settings s = hs_settings();
    s.issuer = "hydra-cli";
    s.audience = "hydra";
    JwtVerifier v(s);
    const std::string token = v.sign("carol", std::chrono::seconds(120));
    JwtOutcome o = v.verify(token);
    BOOST_REQUIRE_MESSAGE(o.ok(), o.error);
    BOOST_CHECK_EQUAL(o.sub, "carol");
    BOOST_CHECK_EQUAL(o.claims["iss"], "hydra-cli");
    BOOST_CHECK_EQUAL(o.claims["aud"], "hydra");
    BOOST_REQUIRE(o.claims["exp"].is_number_integer());
    BOOST_CHECK_EQUAL(o.claims["exp"].get<std::int64_t>() - o.claims["iat"].get<std::int64_t>(), 120);
    // Poco's own verification with the same secret agrees
    Poco::JWT::Signer poco(kSecret);
    BOOST_CHECK_NO_THROW(poco.verify(token));
    // a public-key-only verifier cannot sign
    BOOST_CHECK_THROW(JwtVerifier(rs_settings()).sign("carol", std::chrono::seconds(1)), std::logic_error);
}

BOOST_AUTO_TEST_SUITE_END()
