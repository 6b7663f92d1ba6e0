#include "config/validator.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <limits>
#include <regex>

namespace hydra::config {

std::string json_quoted(std::string_view text) { return dump(Json(std::string(text))); }

ConfigError error(const std::string& source, const std::string& path, const std::string& what) {
    return ConfigError(source + ": " + (path.empty() ? "" : path + ": ") + what);
}

std::string join_path(const std::string& parent, const std::string& key) {
    return parent.empty() ? key : parent + "." + key;
}

std::vector<std::string> split_path(std::string_view dotted) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (true) {
        std::size_t dot = dotted.find('.', start);
        parts.emplace_back(dotted.substr(start, dot - start));
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    return parts;
}

std::string schema_type(const Json& schema) {
    if (!schema.is_object()) return {};
    auto it = schema.find("type");
    return it != schema.end() && it->is_string() ? it->get<std::string>() : std::string();
}

bool is_secret(const Json& schema) { return schema.is_object() && schema.value("secret", false) == true; }

// What was found, for "expected X, got <describe>". Containers are not dumped: they can be long.
std::string describe(const Json& value, bool secret) {
    switch (value.type()) {
        case Json::value_t::null:
            return "null";
        case Json::value_t::object:
            return "an object";
        case Json::value_t::array:
            return "an array";
        case Json::value_t::string:
            return secret ? std::string("string \"") + kMaskText + "\"" : "string " + dump(value);
        case Json::value_t::boolean:
            return "boolean " + dump(value);
        case Json::value_t::number_integer:
        case Json::value_t::number_unsigned:
            return "integer " + dump(value);
        default:
            return "number " + dump(value);
    }
}

bool has_type(const Json& value, const std::string& type) {
    if (type == "object") return value.is_object();
    if (type == "array") return value.is_array();
    if (type == "string") return value.is_string();
    if (type == "boolean") return value.is_boolean();
    if (type == "integer") return value.is_number_integer();
    if (type == "number") return value.is_number();
    return true;  // an unknown type name constrains nothing
}

bool fits_int64(const Json& value) {
    return !value.is_number_unsigned() ||
           value.get<std::uint64_t>() <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
}

// The schema that accepts any value: an empty one, as for additionalProperties: true.
const Json& anything() {
    static const Json schema = Json::object();
    return schema;
}

std::string known_keys(const Json& schema, const std::string& path) {
    std::string list;
    if (schema.contains("properties") && schema["properties"].is_object()) {
        for (const auto& [name, _] : schema["properties"].items()) list += (list.empty() ? "" : ", ") + name;
    }
    if (list.empty()) list = "none";
    return "known keys" + (path.empty() ? std::string() : " of " + path) + ": " + list;
}

// Where an object's key `key` leads in the schema: its property, the additionalProperties schema, or nothing.
const Json* child_schema(const Json& schema, const std::string& key, bool& from_properties) {
    from_properties = false;
    auto props = schema.find("properties");
    if (props != schema.end() && props->is_object()) {
        auto it = props->find(key);
        if (it != props->end()) {
            from_properties = true;
            return &*it;
        }
    }
    auto extra = schema.find("additionalProperties");
    if (extra == schema.end() || extra->is_boolean()) {
        return extra != schema.end() && extra->get<bool>() ? &anything() : nullptr;
    }
    return extra->is_object() ? &*extra : nullptr;
}

namespace {

std::string type_phrase(const std::string& type) {
    if (type == "object") return "an object";
    if (type == "array") return "an array";
    if (type == "integer") return "an integer";
    if (type == "number") return "a number";
    if (type == "boolean") return "a boolean";
    if (type == "string") return "a string";
    return "a " + type;
}

// Three-way comparison of two JSON numbers, exact for integers (signed or unsigned, any mix).
int compare_numbers(const Json& a, const Json& b) {
    if (a.is_number_float() || b.is_number_float()) {
        double x = a.get<double>(), y = b.get<double>();
        return (x > y) - (x < y);
    }
    bool a_negative = a.is_number_integer() && !a.is_number_unsigned() && a.get<std::int64_t>() < 0;
    bool b_negative = b.is_number_integer() && !b.is_number_unsigned() && b.get<std::int64_t>() < 0;
    if (a_negative != b_negative) return a_negative ? -1 : 1;
    if (a_negative) {
        auto x = a.get<std::int64_t>(), y = b.get<std::int64_t>();
        return (x > y) - (x < y);
    }
    auto x = a.get<std::uint64_t>(), y = b.get<std::uint64_t>();
    return (x > y) - (x < y);
}

bool valid_host_name(std::string_view host) {
    return std::all_of(host.begin(), host.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
    });
}

// host:port with port 0..65535; the host may be empty, a name, IPv4 or [IPv6].
bool valid_address(const std::string& text) {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) return false;
    std::string_view host(text.data(), colon), port(text.data() + colon + 1, text.size() - colon - 1);
    if (port.empty() || port.size() > 5 ||
        !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        std::stoi(std::string(port)) > 65535) {
        return false;
    }
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        auto inner = host.substr(1, host.size() - 2);
        return inner.find(':') != std::string_view::npos && std::all_of(inner.begin(), inner.end(), [](char c) {
                   return std::isxdigit(static_cast<unsigned char>(c)) || c == ':' || c == '.';
               });
    }
    return valid_host_name(host);
}

bool valid_url(const std::string& text) {
    for (std::string_view scheme : {"http://", "https://"}) {
        if (text.size() > scheme.size() && text.compare(0, scheme.size(), scheme) == 0) return true;
    }
    return false;
}

// Validates `value` against `schema` in place, filling defaults. Throws the first error found.
class Validator {
  public:
    explicit Validator(const std::string& source) : source_(source) {}

    void check(Json& value, const Json& schema, const std::string& path) {
        if (!schema.is_object()) return;
        const bool secret = is_secret(schema);
        const std::string type = schema_type(schema);
        if (type == "array" && value.is_string()) split_list(value, schema);
        if (!type.empty() && !has_type(value, type)) {
            throw error(source_, path, "expected " + type_phrase(type) + ", got " + describe(value, secret));
        }
        if (type == "integer" && !fits_int64(value)) {
            throw error(source_, path, "expected a 64-bit integer, got " + describe(value, secret));
        }
        check_enum(value, schema, path, secret);
        if (value.is_number()) check_range(value, schema, path, type);
        if (value.is_string()) check_string(value.get_ref<const std::string&>(), schema, path, secret);
        if (value.is_object() && type == "object") check_object(value, schema, path);
        if (value.is_array() && schema.contains("items")) {
            for (std::size_t i = 0; i < value.size(); ++i) {
                check(value[i], schema["items"], path + "[" + std::to_string(i) + "]");
            }
        }
    }

  private:
    // "split": "," on an array: a string becomes the list of its trimmed, non-empty pieces ("" → []), so that a
    // list can come from one environment variable.
    static void split_list(Json& value, const Json& schema) {
        auto it = schema.find("split");
        if (it == schema.end() || !it->is_string() || it->get_ref<const std::string&>().empty()) return;
        const std::string& separator = it->get_ref<const std::string&>();
        const std::string text = value.get<std::string>();
        Json items = Json::array();
        std::size_t start = 0;
        while (start <= text.size()) {
            std::size_t end = text.find(separator, start);
            if (end == std::string::npos) end = text.size();
            std::string_view piece(text.data() + start, end - start);
            while (!piece.empty() && std::isspace(static_cast<unsigned char>(piece.front()))) piece.remove_prefix(1);
            while (!piece.empty() && std::isspace(static_cast<unsigned char>(piece.back()))) piece.remove_suffix(1);
            if (!piece.empty()) items.push_back(std::string(piece));
            start = end + separator.size();
        }
        value = std::move(items);
    }

    void check_enum(const Json& value, const Json& schema, const std::string& path, bool secret) {
        auto it = schema.find("enum");
        if (it == schema.end() || !it->is_array()) return;
        if (std::find(it->begin(), it->end(), value) != it->end()) return;
        std::string options;
        for (const auto& option : *it) options += (options.empty() ? "" : ", ") + dump(option);
        std::string got = secret                  ? std::string("\"") + kMaskText + "\""
                          : value.is_structured() ? describe(value, false)
                                                  : dump(value);
        throw error(source_, path, "expected one of " + options + ", got " + got);
    }

    void check_range(const Json& value, const Json& schema, const std::string& path, const std::string& type) {
        const Json* min = schema.contains("minimum") ? &schema["minimum"] : nullptr;
        const Json* max = schema.contains("maximum") ? &schema["maximum"] : nullptr;
        bool ok = (!min || compare_numbers(value, *min) >= 0) && (!max || compare_numbers(value, *max) <= 0);
        if (ok) return;
        std::string what = "expected " + type_phrase(type.empty() ? "number" : type);
        if (min && max) {
            what += " between " + dump(*min) + " and " + dump(*max);
        } else if (min) {
            what += " >= " + dump(*min);
        } else {
            what += " <= " + dump(*max);
        }
        throw error(source_, path, what + ", got " + dump(value));
    }

    void check_string(const std::string& text, const Json& schema, const std::string& path, bool secret) {
        const std::string shown = secret ? std::string("\"") + kMaskText + "\"" : json_quoted(text);
        if (auto it = schema.find("minLength"); it != schema.end() && it->is_number_integer()) {
            auto min = it->get<std::int64_t>();
            if (static_cast<std::int64_t>(text.size()) < min) {
                throw error(source_, path,
                            min == 1
                                ? "expected a non-empty string, got " + shown
                                : "expected a string of at least " + std::to_string(min) + " characters, got " + shown);
            }
        }
        if (auto it = schema.find("pattern"); it != schema.end() && it->is_string()) {
            const auto& pattern = it->get_ref<const std::string&>();
            if (!std::regex_search(text, std::regex(pattern, std::regex::ECMAScript))) {
                throw error(source_, path, "expected a string matching " + pattern + ", got " + shown);
            }
        }
        auto format = schema.value("format", std::string());
        if (format == "address" && !valid_address(text)) {
            throw error(source_, path, "expected an address host:port (port 0-65535), got " + shown);
        }
        if (format == "url" && !valid_url(text)) {
            throw error(source_, path, "expected a URL starting with http:// or https://, got " + shown);
        }
    }

    void check_object(Json& value, const Json& schema, const std::string& path) {
        for (auto& [key, child] : value.items()) {
            bool declared = false;
            const Json* sub = child_schema(schema, key, declared);
            if (!sub) throw error(source_, join_path(path, key), "unknown key (" + known_keys(schema, path) + ")");
            check(child, *sub, join_path(path, key));
        }
        if (auto it = schema.find("required"); it != schema.end() && it->is_array()) {
            for (const auto& name : *it) {
                if (name.is_string() && !value.contains(name.get<std::string>())) {
                    throw error(source_, path, "missing required key " + dump(name));
                }
            }
        }
        auto props = schema.find("properties");
        if (props == schema.end() || !props->is_object()) return;
        for (const auto& [key, sub] : props->items()) {
            if (value.contains(key) || !sub.is_object()) continue;
            if (sub.contains("default")) {
                value[key] = sub["default"];
            } else if (schema_type(sub) == "object" && sub.value("required", Json::array()).empty()) {
                // An absent section is an empty one, so its nested defaults apply. A section with required
                // keys stays absent: it is optional as a whole.
                value[key] = Json::object();
            } else {
                continue;
            }
            check(value[key], sub, join_path(path, key));
        }
    }

    const std::string source_;
};

}  // namespace

void validate(Json& value, const Json& schema, const std::string& path, const std::string& source) {
    Validator(source).check(value, schema, path);
}

}  // namespace hydra::config
