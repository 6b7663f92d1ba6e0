// JSON Web Tokens (RFC 7519): the verifier hydra builds from `auth.jwt`, and HS256 signing for `hydra token`.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include <hydra/json.h>

namespace hydra {

class Config;

// The outcome of JwtVerifier::verify(): the claims, or why the token was refused.
struct JwtOutcome {
    Json claims;        // the payload, an object, when ok()
    std::string error;  // a short reason when not ok(): "token expired", "bad signature", ...
    std::string sub;    // claims["sub"]
    double exp = 0;     // claims["exp"]: seconds since the epoch

    bool ok() const { return error.empty(); }
    explicit operator bool() const { return ok(); }
};

class JwtVerifier {
  public:
    struct Settings {
        std::string secret;          // HS256 key ("" = no HS256); at least 32 bytes
        std::string public_key_pem;  // an RSA (RS256) or EC P-256 (ES256) public key in PEM ("" = none)
        std::string issuer;          // "" = `iss` not checked
        std::string audience;        // "" = `aud` not checked
        int leeway_s = 30;           // clock skew allowed on exp and nbf
        std::size_t max_token_bytes = 8192;
    };

    // Throws ConfigError when neither a secret nor a key is set, the secret is shorter than 32 bytes, or the PEM is
    // not an RSA or P-256 public key.
    explicit JwtVerifier(Settings settings);
    ~JwtVerifier();
    JwtVerifier(const JwtVerifier&) = delete;
    JwtVerifier& operator=(const JwtVerifier&) = delete;

    // The `auth.jwt` section; nullptr when it sets neither a secret nor a public_key_file. Throws ConfigError for an
    // unreadable key file or an invalid key or secret.
    static std::unique_ptr<JwtVerifier> from(const Config& config);

    // Checks, in order: size (max_token_bytes), form (three base64url parts, JSON objects), the algorithm (only the
    // configured ones: HS256 with a secret, RS256 or ES256 with a public key; never "none"; no "crit" header), the
    // signature, then `exp` (required) and `nbf` (optional) with the leeway, `iss` and `aud` (a string or an array
    // holding it) when configured, and `sub` (required, a non-empty string). Thread-safe.
    JwtOutcome verify(std::string_view token) const;
    JwtOutcome verify(std::string_view token, std::chrono::system_clock::time_point now) const;

    // An HS256 token for `sub` valid for `ttl` from now, with iat and exp, and iss/aud when configured.
    // Throws std::logic_error when no secret is configured.
    std::string sign(const std::string& sub, std::chrono::seconds ttl, const Json& extra_claims = Json::object()) const;

    const Settings& settings() const { return settings_; }
    int leeway_s() const { return settings_.leeway_s; }

  private:
    struct Keys;
    Settings settings_;
    std::unique_ptr<Keys> keys_;
};

}  // namespace hydra
