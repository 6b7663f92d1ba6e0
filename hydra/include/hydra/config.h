// Configuration: a JSON profile, ${VAR:-default} substitution, --set overrides, validated against a schema.
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <hydra/json.h>

namespace hydra {

// Any invalid configuration. what() is one line: "<source>: <key.path>: <what was expected, what was found>".
class ConfigError : public std::runtime_error {
  public:
    using std::runtime_error::runtime_error;
};

// A subset of JSON Schema, enough to describe hydra's config and reject typos:
//   "type": "object" | "string" | "integer" | "number" | "boolean" | "array"
//   "properties": {...}, "additionalProperties": false (the default for objects) | true | <schema>
//   "items": <schema>, "enum": [...], "minimum"/"maximum", "minLength", "pattern" (ECMAScript regex),
//   "format": "address" (host:port, port 0..65535, host may be empty, a name, IPv4 or [IPv6]) | "url",
//   "default": value filled in when the key is absent, "required": [...names...],
//   "secret": true (masked by Config::masked()), "description": "...",
//   "split": "," on an array: a string value is split there into its trimmed, non-empty pieces ("a, b" → ["a","b"],
//   "" → []), for lists from one environment variable ("${HYDRA_API_KEYS}").
class ConfigSchema {
  public:
    // hydra's own sections: log, limits, api, admin, auth, ws, mqc, queue, cluster, services.
    static ConfigSchema builtin();

    // Adds (or replaces) the schema of the object at a dotted path, e.g. "services.message_center".
    // Every parent must already exist as an object in the schema.
    void add(std::string_view dotted_path, Json schema);

    const Json& json() const { return root_; }

  private:
    Json root_;
};

using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;

// The process environment (getenv).
EnvLookup process_env();

class Config {
  public:
    Config() = default;

    // Reads `file`, then from_json(). Unreadable file or bad JSON → ConfigError naming the file (and line/column).
    static Config load(const std::string& file, const std::vector<std::string>& sets, const ConfigSchema& schema,
                       const EnvLookup& env = process_env());

    // 1. substitutes ${VAR} / ${VAR:-default} in every string value (unset without default → ConfigError);
    // 2. applies each "dotted.key=value" of `sets`, the value typed by the schema at that key
    //    (unknown key, missing '=' or a value of the wrong type → ConfigError with source "--set");
    // 3. validates against `schema` and fills defaults. `source` names the document in messages.
    static Config from_json(Json doc, std::string source, const std::vector<std::string>& sets,
                            const ConfigSchema& schema, const EnvLookup& env = process_env());

    const Json& json() const { return doc_; }
    const std::string& source() const { return source_; }

    // Value at a dotted path ("api.address"); ConfigError if absent.
    const Json& at(std::string_view dotted_path) const;
    bool has(std::string_view dotted_path) const;
    std::string str(std::string_view dotted_path) const;
    std::int64_t integer(std::string_view dotted_path) const;
    double number(std::string_view dotted_path) const;
    bool boolean(std::string_view dotted_path) const;

    // The effective config with secrets replaced by "******" (schema "secret": true, and any key under an
    // open-ended object whose name contains password, secret, token or key).
    Json masked() const;

  private:
    Json doc_ = Json::object();
    Json schema_ = Json::object();
    std::string source_;
};

}  // namespace hydra
