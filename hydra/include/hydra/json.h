// The JSON type used throughout hydra's public API.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace hydra {
using Json = nlohmann::json;

// JSON text on one line. Invalid UTF-8 in a string (from a client, the environment, a queue) is replaced with
// U+FFFD instead of throwing.
inline std::string dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }
}  // namespace hydra
