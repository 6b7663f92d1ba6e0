// JWT verification and signing over Poco::JWT and Poco::Crypto: hydra checks the form, the algorithm and the claims;
// the signatures are Poco's.
#include <hydra/jwt.h>

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <vector>

#include <Poco/Base64Decoder.h>
#include <Poco/Base64Encoder.h>  // the encoding options
#include <Poco/Crypto/DigestEngine.h>
#include <Poco/Crypto/ECKey.h>
#include <Poco/Crypto/EVPPKey.h>
#include <Poco/Crypto/RSAKey.h>
#include <Poco/Exception.h>
#include <Poco/HMACEngine.h>
#include <Poco/JWT/Signer.h>
#include <Poco/JWT/Token.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <hydra/config.h>

namespace hydra {

namespace {

constexpr std::size_t kMinSecretBytes = 32;

// SHA-256 as Poco::HMACEngine wants it (block and digest sizes), from OpenSSL through Poco::Crypto.
class Sha256 : public Poco::Crypto::DigestEngine {
  public:
    enum { BLOCK_SIZE = 64, DIGEST_SIZE = 32 };
    Sha256() : Poco::Crypto::DigestEngine("SHA256") {}
};

bool is_base64url(std::string_view part) {
    for (char c : part)
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return false;
    return part.size() % 4 != 1;  // a length no encoding produces
}

std::string base64url_decode(std::string_view part) {
    std::istringstream in{std::string(part)};
    Poco::Base64Decoder decoder(in, Poco::BASE64_URL_ENCODING | Poco::BASE64_NO_PADDING);
    std::string out;
    for (int c = decoder.get(); c != -1; c = decoder.get()) out.push_back(static_cast<char>(c));
    return out;
}

// A JSON object from a base64url part; discarded when it is not one (also when nested too deep).
Json decode_object(std::string_view part) {
    Json value = parse_json_or_discarded(base64url_decode(part));
    return value.is_object() ? value : Json(Json::value_t::discarded);
}

// A NumericDate claim: seconds since the epoch, integer or not.
std::optional<double> numeric_date(const Json& claims, const char* name) {
    auto it = claims.find(name);
    if (it == claims.end() || !it->is_number()) return std::nullopt;
    double v = it->get<double>();
    if (!std::isfinite(v)) return std::nullopt;
    return v;
}

JwtOutcome refused(std::string why) {
    JwtOutcome out;
    out.error = std::move(why);
    return out;
}

}  // namespace

struct JwtVerifier::Keys {
    // Public-key verification (RS256 or ES256): Poco's signer, allowed exactly that algorithm.
    std::unique_ptr<Poco::JWT::Signer> pk_signer;
    std::string pk_algorithm;  // "RS256" | "ES256" | ""
    // HS256: Poco's signer signs (hydra token); verification recomputes the HMAC with Poco::HMACEngine and compares
    // in constant time (Poco's Signer compares with ==).
    std::unique_ptr<Poco::JWT::Signer> hs_signer;
};

JwtVerifier::JwtVerifier(Settings settings) : settings_(std::move(settings)), keys_(std::make_unique<Keys>()) {
    if (settings_.secret.empty() && settings_.public_key_pem.empty())
        throw ConfigError("auth.jwt: needs a secret or a public_key_file");
    if (!settings_.secret.empty()) {
        if (settings_.secret.size() < kMinSecretBytes)
            throw ConfigError("auth.jwt.secret: at least " + std::to_string(kMinSecretBytes) + " bytes (got " +
                              std::to_string(settings_.secret.size()) + ")");
        keys_->hs_signer = std::make_unique<Poco::JWT::Signer>(settings_.secret);
        keys_->hs_signer->setAlgorithms({Poco::JWT::Signer::ALGO_HS256});
    }
    if (!settings_.public_key_pem.empty()) {
        try {
            // Read with OpenSSL, then handed to Poco: Poco's own PEM reading leaks its key object when the PEM is bad.
            std::unique_ptr<BIO, decltype(&BIO_free)> bio(
                BIO_new_mem_buf(settings_.public_key_pem.data(), static_cast<int>(settings_.public_key_pem.size())),
                &BIO_free);
            std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> parsed(
                bio ? PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr) : nullptr, &EVP_PKEY_free);
            if (!parsed) throw ConfigError("auth.jwt.public_key_file: not a PEM public key");
            Poco::Crypto::EVPPKey key(parsed.get());
            auto signer = std::make_unique<Poco::JWT::Signer>();
            if (key.type() == EVP_PKEY_RSA) {
                signer->setRSAKey(new Poco::Crypto::RSAKey(key));
                keys_->pk_algorithm = Poco::JWT::Signer::ALGO_RS256;
            } else if (key.type() == EVP_PKEY_EC) {
                Poco::SharedPtr<Poco::Crypto::ECKey> ec(new Poco::Crypto::ECKey(key));
                const std::string curve = ec->impl()->groupName();
                if (curve != "prime256v1")
                    throw ConfigError("auth.jwt.public_key_file: an EC key must be on P-256 (ES256), not " + curve);
                signer->setECKey(ec);
                keys_->pk_algorithm = Poco::JWT::Signer::ALGO_ES256;
            } else {
                throw ConfigError("auth.jwt.public_key_file: an RSA or EC P-256 public key is needed");
            }
            signer->setAlgorithms({keys_->pk_algorithm});
            keys_->pk_signer = std::move(signer);
        } catch (const ConfigError&) {
            throw;
        } catch (const Poco::Exception& e) {
            throw ConfigError("auth.jwt.public_key_file: not a PEM public key (" + e.displayText() + ")");
        }
    }
}

JwtVerifier::~JwtVerifier() = default;

std::unique_ptr<JwtVerifier> JwtVerifier::from(const Config& config) {
    Settings s;
    s.secret = config.str("auth.jwt.secret");
    const std::string file = config.str("auth.jwt.public_key_file");
    if (!file.empty()) {
        std::ifstream in(file, std::ios::binary);
        std::ostringstream text;
        text << in.rdbuf();
        if (!in) throw ConfigError("auth.jwt.public_key_file: cannot read " + file);
        s.public_key_pem = text.str();
        if (s.public_key_pem.empty()) throw ConfigError("auth.jwt.public_key_file: " + file + " is empty");
    }
    if (s.secret.empty() && s.public_key_pem.empty()) return nullptr;
    s.issuer = config.str("auth.jwt.issuer");
    s.audience = config.str("auth.jwt.audience");
    s.leeway_s = static_cast<int>(config.integer("auth.jwt.leeway_s"));
    return std::make_unique<JwtVerifier>(std::move(s));
}

JwtOutcome JwtVerifier::verify(std::string_view token) const { return verify(token, std::chrono::system_clock::now()); }

JwtOutcome JwtVerifier::verify(std::string_view token, std::chrono::system_clock::time_point now) const {
    // 1. Size and form, before anything is decoded or parsed.
    if (token.size() > settings_.max_token_bytes) return refused("token too large");
    const std::size_t dot1 = token.find('.');
    const std::size_t dot2 = dot1 == std::string_view::npos ? dot1 : token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
        return refused("malformed token");
    const std::string_view header_part = token.substr(0, dot1);
    const std::string_view payload_part = token.substr(dot1 + 1, dot2 - dot1 - 1);
    const std::string_view signature_part = token.substr(dot2 + 1);
    if (header_part.empty() || payload_part.empty() || !is_base64url(header_part) || !is_base64url(payload_part) ||
        !is_base64url(signature_part))
        return refused("malformed token");
    const Json header = decode_object(header_part);
    Json claims = decode_object(payload_part);
    if (header.is_discarded() || claims.is_discarded()) return refused("malformed token");

    // 2. The algorithm: only what the configured key is for. "none", and an HS256 token when only a public key is
    // configured (its PEM used as an HMAC secret), never reach a verifier.
    auto alg_it = header.find("alg");
    if (alg_it == header.end() || !alg_it->is_string()) return refused("malformed token");
    const std::string alg = alg_it->get<std::string>();
    if (header.contains("crit")) return refused("unsupported critical header");
    const bool hs = alg == Poco::JWT::Signer::ALGO_HS256 && keys_->hs_signer;
    const bool pk = !keys_->pk_algorithm.empty() && alg == keys_->pk_algorithm;
    if (!hs && !pk) return refused("algorithm " + alg + " not allowed");
    if (signature_part.empty()) return refused("bad signature");

    // 3. The signature over the bytes as received.
    try {
        if (hs) {
            Poco::HMACEngine<Sha256> hmac(settings_.secret);
            hmac.update(header_part.data(), header_part.size());
            hmac.update('.');
            hmac.update(payload_part.data(), payload_part.size());
            const std::string sig = base64url_decode(signature_part);
            const Poco::DigestEngine::Digest given(sig.begin(), sig.end());
            if (!Poco::DigestEngine::constantTimeEquals(hmac.digest(), given)) return refused("bad signature");
        } else {
            Poco::JWT::Token checked;
            if (!keys_->pk_signer->tryVerify(std::string(token), checked)) return refused("bad signature");
        }
    } catch (const Poco::Exception&) {
        return refused("bad signature");
    } catch (const std::exception&) {
        return refused("bad signature");
    }

    // 4. The claims.
    const double t = std::chrono::duration<double>(now.time_since_epoch()).count();
    const double leeway = settings_.leeway_s;
    auto exp = numeric_date(claims, "exp");
    if (!exp) return refused("missing exp");
    if (t >= *exp + leeway) return refused("token expired");
    if (claims.contains("nbf")) {
        auto nbf = numeric_date(claims, "nbf");
        if (!nbf) return refused("malformed nbf");
        if (t + leeway < *nbf) return refused("token not yet valid");
    }
    if (!settings_.issuer.empty()) {
        auto iss = claims.find("iss");
        if (iss == claims.end() || !iss->is_string() || iss->get_ref<const std::string&>() != settings_.issuer)
            return refused("wrong issuer");
    }
    if (!settings_.audience.empty()) {
        auto aud = claims.find("aud");
        bool found = false;
        if (aud != claims.end() && aud->is_string()) {
            found = aud->get_ref<const std::string&>() == settings_.audience;
        } else if (aud != claims.end() && aud->is_array()) {
            for (const auto& a : *aud)
                if (a.is_string() && a.get_ref<const std::string&>() == settings_.audience) found = true;
        }
        if (!found) return refused("wrong audience");
    }
    auto sub = claims.find("sub");
    if (sub == claims.end() || !sub->is_string() || sub->get_ref<const std::string&>().empty())
        return refused("missing sub");

    JwtOutcome out;
    out.sub = sub->get<std::string>();
    out.exp = *exp;
    out.claims = std::move(claims);
    return out;
}

std::string JwtVerifier::sign(const std::string& sub, std::chrono::seconds ttl, const Json& extra_claims) const {
    if (!keys_->hs_signer) throw std::logic_error("auth.jwt.secret is not set: cannot sign HS256 tokens");
    Poco::JWT::Token token;
    token.setType("JWT");
    for (const auto& [name, value] : extra_claims.items()) {
        if (value.is_string())
            token.payload().set(name, value.get<std::string>());
        else if (value.is_number_integer())
            token.payload().set(name, value.get<std::int64_t>());
        else if (value.is_boolean())
            token.payload().set(name, value.get<bool>());
    }
    token.setSubject(sub);
    if (!settings_.issuer.empty()) token.setIssuer(settings_.issuer);
    if (!settings_.audience.empty()) token.setAudience(settings_.audience);
    const auto now = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
    // Integer NumericDates (Poco's setters write them as fractions).
    token.payload().set(Poco::JWT::Token::CLAIM_ISSUED_AT, static_cast<Poco::Int64>(now.time_since_epoch().count()));
    token.payload().set(Poco::JWT::Token::CLAIM_EXPIRATION,
                        static_cast<Poco::Int64>((now + ttl).time_since_epoch().count()));
    return keys_->hs_signer->sign(token, Poco::JWT::Signer::ALGO_HS256);
}

}  // namespace hydra
