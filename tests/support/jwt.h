// JSON Web Tokens made for tests by Poco::JWT, independently of hydra's own signing: valid ones, and the forgeries
// a verifier must refuse (another key, alg "none", an HS256 token keyed with a public key), and RSA keys made for the
// run.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <Poco/Base64Encoder.h>
#include <Poco/Crypto/RSAKey.h>
#include <Poco/JWT/Signer.h>
#include <Poco/JWT/Token.h>

#include <hydra/json.h>

namespace test {

inline std::int64_t now_s() {
    return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

inline std::string b64url(const std::string& bytes) {
    std::ostringstream out;
    Poco::Base64Encoder enc(out, Poco::BASE64_URL_ENCODING | Poco::BASE64_NO_PADDING);
    enc << bytes;
    enc.close();
    return out.str();
}

struct TokenSpec {
    std::string sub = "alice";
    std::int64_t ttl_s = 600;
    std::optional<std::int64_t> exp;  // instead of now + ttl_s
    std::optional<std::int64_t> nbf_in_s;
    std::string iss;     // "" = no iss claim
    std::string aud;     // "" = no aud claim
    std::string secret;  // the HS256 key
    std::map<std::string, std::string> extra = {{"role", "tester"}};
};

// What a host configured with `secret`, `iss` and `aud` accepts (sub "alice"): a case changes one field of it.
inline TokenSpec spec_for(const std::string& secret, const std::string& iss, const std::string& aud) {
    TokenSpec spec;
    spec.secret = secret;
    spec.iss = iss;
    spec.aud = aud;
    return spec;
}

// An HS256 token signed by Poco::JWT.
inline std::string hs256_token(const TokenSpec& spec) {
    Poco::JWT::Token t;
    t.setType("JWT");
    t.payload().set("sub", spec.sub);
    t.payload().set("exp", static_cast<Poco::Int64>(spec.exp.value_or(now_s() + spec.ttl_s)));
    if (spec.nbf_in_s) t.payload().set("nbf", static_cast<Poco::Int64>(now_s() + *spec.nbf_in_s));
    if (!spec.iss.empty()) t.payload().set("iss", spec.iss);
    if (!spec.aud.empty()) t.payload().set("aud", spec.aud);
    for (const auto& [name, value] : spec.extra) t.payload().set(name, value);
    Poco::JWT::Signer signer(spec.secret);
    return signer.sign(t, Poco::JWT::Signer::ALGO_HS256);
}

// A token with alg "none" and no signature: `payload` as it is.
inline std::string unsigned_token(const hydra::Json& payload) {
    return b64url(R"({"alg":"none","typ":"JWT"})") + "." + b64url(payload.dump()) + ".";
}

// An RSA key pair made for the run: the public key as PEM, and the key to sign with.
struct RsaPair {
    Poco::SharedPtr<Poco::Crypto::RSAKey> key{
        new Poco::Crypto::RSAKey(Poco::Crypto::RSAKey::KL_2048, Poco::Crypto::RSAKey::EXP_LARGE)};
    std::string pem() const {
        std::ostringstream pub;
        key->save(&pub);
        return pub.str();
    }
};

// A token a host configured with `good`'s secret, issuer and audience must refuse, what is wrong with it, and the
// reason the host gives.
struct RefusedToken {
    std::string what;
    std::string token;
    std::string reason;
};

inline std::vector<RefusedToken> refused_tokens(const TokenSpec& good) {
    auto changed = [&](auto change) {
        TokenSpec spec = good;
        change(spec);
        return hs256_token(spec);
    };
    hydra::Json unsigned_payload = {{"sub", good.sub}, {"exp", now_s() + 600}};
    if (!good.iss.empty()) unsigned_payload["iss"] = good.iss;
    if (!good.aud.empty()) unsigned_payload["aud"] = good.aud;
    return {
        {"bad signature", changed([](TokenSpec& t) { t.secret += "-not-ours"; }), "invalid token: bad signature"},
        {"expired", changed([](TokenSpec& t) {
             t.exp.reset();
             t.ttl_s = -60;  // past the default leeway of 30 s
         }),
         "invalid token: token expired"},
        {"not yet valid", changed([](TokenSpec& t) { t.nbf_in_s = 3600; }), "invalid token: token not yet valid"},
        {"wrong audience", changed([](TokenSpec& t) { t.aud = "someone-else"; }), "invalid token: wrong audience"},
        {"wrong issuer", changed([](TokenSpec& t) { t.iss = "https://evil.example"; }), "invalid token: wrong issuer"},
        {"alg none", unsigned_token(unsigned_payload), "invalid token: algorithm none not allowed"},
    };
}

}  // namespace test
