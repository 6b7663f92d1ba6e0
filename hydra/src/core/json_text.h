// Writing JSON strings without the JSON library where it pays: on per-message paths (queue headers, the WebSocket
// envelope), most strings are plain printable ASCII.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

#include <hydra/json.h>

namespace hydra {

// Appends `text` as a JSON string: plain printable ASCII (no quote, no backslash) as it is, anything else through
// the JSON library (escapes; invalid UTF-8 replaced).
inline void append_json_string(std::string& out, std::string_view text) {
    if (std::all_of(text.begin(), text.end(), [](char c) { return c >= 0x20 && c < 0x7f && c != '"' && c != '\\'; })) {
        out += '"';
        out += text;
        out += '"';
    } else {
        out += dump(Json(text));
    }
}

}  // namespace hydra
