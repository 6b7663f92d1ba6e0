// The JSON type used throughout hydra's public API.
#pragma once

#include <nlohmann/json.hpp>

namespace hydra {
using Json = nlohmann::json;
}  // namespace hydra
