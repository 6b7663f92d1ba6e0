// Resumable connection uuids (ws.client_uuid = resume): the 101 answer carries a token that proves this server
// handed out the uuid; a reconnect that presents it (header or ?resume=) gets the uuid back.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace hydra::ws {

// The header of the 101 answer that carries the token, and the request header that presents it again.
inline constexpr std::string_view kResumeHeader = "X-Hydra-Resume";
// Longer tokens are not looked at: a uuid of at most 64 characters, '.', 43 characters of base64url.
inline constexpr std::size_t kMaxResumeToken = 128;

// "<uuid>.<base64url(HMAC-SHA256(secret, uuid))>".
std::string resume_token(std::string_view secret, std::string_view uuid);
// The uuid of a token made by resume_token() with the same secret (the MAC compared in constant time), else nullopt.
std::optional<std::string> resume_uuid(std::string_view secret, std::string_view token);
// A secret of 32 random bytes, for a server that was given none.
std::string random_resume_secret();

}  // namespace hydra::ws
