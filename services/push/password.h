// Password records for the push demo's users: scrypt (OpenSSL's EVP_PBE_scrypt) with a random salt, stored as
// "scrypt$N$r$p$<salt hex>$<hash hex>" so a record keeps the parameters it was made with when config changes.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace services::push {

struct KdfParams {
    std::uint64_t n = 16384;  // CPU/memory cost, a power of two (RFC 7914's parameters for interactive logins)
    std::uint64_t r = 8;      // block size
    std::uint64_t p = 1;      // parallelism
};

// The most memory one hash may take (128 × N × r bytes, plus p blocks); larger parameters are refused.
inline constexpr std::uint64_t kMaxKdfMemory = std::uint64_t(1) << 30;

// "" when the parameters are usable, else why not (N not a power of two, too much memory).
std::string kdf_problem(const KdfParams& params);

// A new record for `password` with a fresh random salt. Throws std::runtime_error if the KDF fails.
std::string make_password_record(const KdfParams& params, const std::string& password);

// True when `password` matches `record`; the comparison takes the same time wherever the bytes differ. A record
// that is not well-formed never matches (after doing the same work as one that is, with `fallback` parameters).
bool verify_password(const std::string& record, const std::string& password, const KdfParams& fallback);

// The parameters a record was made with, if it is a well-formed scrypt record.
std::optional<KdfParams> record_params(const std::string& record);

}  // namespace services::push
