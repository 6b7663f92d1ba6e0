// The JSON type used throughout hydra's public API, and the one way to read JSON that came from outside.
#pragma once

#include <nlohmann/json.hpp>

#include <algorithm>
#include <string>
#include <string_view>

namespace hydra {
using Json = nlohmann::json;

// JSON text on one line. Invalid UTF-8 in a string (from a client, the environment, a queue) is replaced with
// U+FFFD instead of throwing.
inline std::string dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

// Appends `text` as a JSON string, for JSON written without building a Json on per-message paths (queue headers,
// the WebSocket envelope, a handler's payload): plain printable ASCII (no quote, no backslash) as it is, anything
// else through the JSON library (escapes; invalid UTF-8 replaced).
inline void append_json_string(std::string& out, std::string_view text) {
    if (std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; })) {
        out += '"';
        out += text;
        out += '"';
    } else {
        out += dump(Json(text));
    }
}

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
