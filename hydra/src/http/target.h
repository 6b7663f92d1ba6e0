// Request targets: percent-decoding, url-encoded parameters (query strings and form bodies) and the one spelling of a
// path that routes compare. Pure functions, shared by the API server and the WebSocket upgrade.
#pragma once

#include <string>
#include <string_view>

#include <hydra/json.h>

namespace hydra::http {

// "%41b+c" → "Ab c" (with plus_as_space; a form) or "Ab+c" (a path). False on a malformed escape.
bool percent_decode(std::string_view in, std::string& out, bool plus_as_space);

// "a=1&b=x%20y" → {"a":"1","b":"x y"} merged into `out` (later keys win). Throws Error(400) on bad escapes.
void parse_urlencoded(std::string_view text, Json& out);

// "/a/b/" → "/a/b", "" → "/": one spelling per path.
std::string normalize_path(std::string_view path);

}  // namespace hydra::http
