// The JSON type used throughout hydra's public API, and the one way to read JSON that came from outside.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace hydra {
using Json = nlohmann::json;

// JSON text on one line. Invalid UTF-8 in a string (from a client, the environment, a queue) is replaced with
// U+FFFD instead of throwing.
inline std::string dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

// The deepest nesting of arrays and objects accepted from outside (`limits.json_depth`, default 64). Copying,
// comparing and dumping a JSON value recurse once per level, so a deeper document could overflow a thread's stack.
int json_max_depth();
void set_json_max_depth(int depth);

// True when no array or object in `text` is nested deeper than `max_depth` (counted as nlohmann counts: the
// top-level container is depth 1). One pass over the bytes, strings skipped; says nothing else about validity.
bool json_depth_within(std::string_view text, int max_depth);

// JSON from outside (an HTTP body, a WebSocket message, a queue payload, an outbound call's answer): throws
// JsonTooDeep when nested deeper than json_max_depth(), Json::parse_error when not JSON (also for a number out of
// range, which nlohmann reports as out_of_range).
struct JsonTooDeep : std::runtime_error {
    JsonTooDeep();
};
Json parse_json(std::string_view text);
// The same, without exceptions: a discarded value (is_discarded()) when too deep or not JSON.
Json parse_json_or_discarded(std::string_view text);
}  // namespace hydra
