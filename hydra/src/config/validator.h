// Checking a config document against its schema (the JSON Schema subset ConfigSchema describes), and the schema
// walking that the overrides (--set) and Config (lookups, masking) share with it.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <hydra/config.h>
#include <hydra/json.h>

namespace hydra::config {

// What a secret shows instead of its value.
inline constexpr const char* kMaskText = "******";

// `text` as a JSON string literal, for messages.
std::string json_quoted(std::string_view text);
// "<source>: <path>: <what>" (without the path when it is empty).
ConfigError error(const std::string& source, const std::string& path, const std::string& what);
std::string join_path(const std::string& parent, const std::string& key);
// "a.b.c" → {"a", "b", "c"}.
std::vector<std::string> split_path(std::string_view dotted);
// The schema's "type", or "" when it declares none.
std::string schema_type(const Json& schema);
bool is_secret(const Json& schema);
// What was found, for "expected X, got <describe>" (a secret string masked).
std::string describe(const Json& value, bool secret);
// Whether `value` is of the schema type `type` (an unknown type name constrains nothing).
bool has_type(const Json& value, const std::string& type);
bool fits_int64(const Json& value);
// The schema that accepts any value.
const Json& anything();
// "known keys of <path>: a, b" for an unknown key's message.
std::string known_keys(const Json& schema, const std::string& path);
// Where an object's key `key` leads in the schema: its property, the additionalProperties schema, or nullptr.
const Json* child_schema(const Json& schema, const std::string& key, bool& from_properties);

// Validates `value` (at `path` of the document named `source`) against `schema` in place, filling defaults and
// splitting "split" lists. Throws the first error found as a ConfigError.
void validate(Json& value, const Json& schema, const std::string& path, const std::string& source);

}  // namespace hydra::config
