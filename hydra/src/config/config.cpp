// Config loading: read, substitute ${VAR}, apply --set, validate against the schema and fill defaults.
#include <hydra/config.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <regex>
#include <string>
#include <system_error>

#include <fcntl.h>
#include <unistd.h>

namespace hydra {
namespace {

constexpr const char* mask_text = "******";

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

std::string type_phrase(const std::string& type) {
    if (type == "object") return "an object";
    if (type == "array") return "an array";
    if (type == "integer") return "an integer";
    if (type == "number") return "a number";
    if (type == "boolean") return "a boolean";
    if (type == "string") return "a string";
    return "a " + type;
}

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
            return secret ? std::string("string \"") + mask_text + "\"" : "string " + dump(value);
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
        std::string got = secret                  ? std::string("\"") + mask_text + "\""
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
        const std::string shown = secret ? std::string("\"") + mask_text + "\"" : json_quoted(text);
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

bool valid_env_name(std::string_view name) {
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front()))) return false;
    return std::all_of(name.begin(), name.end(),
                       [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

std::string expand(const std::string& text, const std::string& source, const std::string& path, const EnvLookup& env) {
    std::string out;
    std::size_t pos = 0;
    while (true) {
        auto start = text.find("${", pos);
        if (start == std::string::npos) break;
        out.append(text, pos, start - pos);
        auto end = text.find('}', start + 2);
        if (end == std::string::npos) throw error(source, path, "unterminated \"${\" in " + json_quoted(text));
        std::string_view body(text.data() + start + 2, end - start - 2);
        auto separator = body.find(":-");
        std::string name(body.substr(0, separator));
        if (!valid_env_name(name)) {
            throw error(source, path,
                        "invalid environment variable reference " +
                            json_quoted(std::string_view(text).substr(start, end - start + 1)));
        }
        std::optional<std::string> found = env(name);
        if (separator != std::string_view::npos) {
            // As in the shell, ":-" also replaces a variable that is set but empty.
            if (!found || found->empty()) found = std::string(body.substr(separator + 2));
        } else if (!found) {
            throw error(source, path, "environment variable " + name + " is not set and has no default");
        }
        out += *found;
        pos = end + 1;
    }
    if (pos == 0) return text;
    out.append(text, pos);
    return out;
}

void substitute(Json& value, const std::string& source, const std::string& path, const EnvLookup& env) {
    if (value.is_string()) {
        value = expand(value.get_ref<const std::string&>(), source, path, env);
    } else if (value.is_object()) {
        for (auto& [key, child] : value.items()) substitute(child, source, join_path(path, key), env);
    } else if (value.is_array()) {
        for (std::size_t i = 0; i < value.size(); ++i) {
            substitute(value[i], source, path + "[" + std::to_string(i) + "]", env);
        }
    }
}

// The text of a --set value, typed by the schema at its key.
Json typed_value(const std::string& text, const Json& schema, const std::string& path) {
    const std::string type = schema_type(schema);
    auto fail = [&](const std::string& expected) {
        return error("--set", path,
                     "expected " + expected + ", got " + json_quoted(is_secret(schema) ? mask_text : text));
    };
    if (type == "string") return text;
    if (type == "integer") {
        std::int64_t number = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (ec != std::errc() || end != text.data() + text.size()) throw fail("an integer");
        return number;
    }
    if (type == "number") {
        double number = 0;
        auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
        if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(number)) throw fail("a number");
        return number;
    }
    if (type == "boolean") {
        if (text == "true") return true;
        if (text == "false") return false;
        throw fail("true or false");
    }
    Json parsed = Json::parse(text, nullptr, false);
    // A list that may be written as one string ("split"): anything but a JSON array is that string.
    if (type == "array" && schema.contains("split") && (parsed.is_discarded() || !parsed.is_array())) return text;
    if (type == "array" || type == "object") {
        if (parsed.is_discarded() || !has_type(parsed, type)) throw fail("a JSON " + type);
        return parsed;
    }
    // No declared type (an open-ended object): JSON if it parses, the raw text otherwise.
    return parsed.is_discarded() ? Json(text) : parsed;
}

void apply_set(Json& doc, const std::string& item, const Json& root_schema, const std::string& source) {
    auto equals = item.find('=');
    if (equals == std::string::npos || equals == 0)
        throw ConfigError("--set: " + json_quoted(item) + ": expected key=value");
    const std::string key = item.substr(0, equals), text = item.substr(equals + 1);
    const auto parts = split_path(key);

    // Walk the schema first, so that a typo is reported before the document is touched.
    std::vector<std::string> keys;
    const Json* schema = &root_schema;
    std::string path;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        const std::string type = schema_type(*schema);
        if (!type.empty() && type != "object") {
            throw error("--set", join_path(path, parts[i]), "unknown key (" + path + " is not an object)");
        }
        bool declared = false;
        // An untyped schema accepts anything, so it is open-ended like additionalProperties: true.
        const Json* sub = type.empty() ? &anything() : child_schema(*schema, parts[i], declared);
        if (!sub) throw error("--set", join_path(path, parts[i]), "unknown key (" + known_keys(*schema, path) + ")");
        if (!declared) {
            // Under an open-ended object the rest of the path is one key: librdkafka names contain dots.
            std::string rest = parts[i];
            for (std::size_t j = i + 1; j < parts.size(); ++j) rest += "." + parts[j];
            keys.push_back(rest);
            path = join_path(path, rest);
            schema = sub;
            break;
        }
        keys.push_back(parts[i]);
        path = join_path(path, parts[i]);
        schema = sub;
    }

    Json value = typed_value(text, *schema, path);
    Validator("--set").check(value, *schema, path);

    Json* node = &doc;
    std::string node_path;
    for (std::size_t i = 0; i + 1 < keys.size(); ++i) {
        node_path = join_path(node_path, keys[i]);
        Json& next = (*node)[keys[i]];
        if (next.is_null()) next = Json::object();
        if (!next.is_object()) throw error(source, node_path, "expected an object, got " + describe(next, false));
        node = &next;
    }
    (*node)[keys.back()] = std::move(value);
}

bool name_looks_secret(std::string name) {
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    for (const char* word : {"password", "secret", "token", "key", "credential", "oauthbearer", "private"}) {
        if (name.find(word) != std::string::npos) return true;
    }
    return false;
}

// "scheme://user:password@host/..." → "scheme://user:******@host/..." (a user alone, often a token, is masked
// whole), for every URL in the text (a list of brokers may hold several).
std::string mask_url_credentials(const std::string& text) {
    std::string out;
    std::size_t from = 0;
    for (std::size_t scheme = text.find("://"); scheme != std::string::npos; scheme = text.find("://", from)) {
        const std::size_t start = scheme + 3;
        std::size_t end = text.find_first_of("/?#, \t", start);
        if (end == std::string::npos) end = text.size();
        const std::size_t at = text.rfind('@', end == 0 ? 0 : end - 1);
        out.append(text, from, start - from);
        from = start;
        if (at == std::string::npos || at < start) continue;
        const std::size_t colon = text.find(':', start);
        if (colon != std::string::npos && colon < at) out.append(text, start, colon + 1 - start);
        out += mask_text;
        from = at;
    }
    out.append(text, from, std::string::npos);
    return out;
}

void mask(Json& value, const Json& schema) {
    if (value.is_string()) {
        const std::string& text = value.get_ref<const std::string&>();
        if (text.find("://") != std::string::npos) value = mask_url_credentials(text);
        return;
    }
    if (value.is_array()) {
        const Json& items = schema.is_object() && schema.contains("items") ? schema["items"] : Json::object();
        for (auto& item : value) {
            if (is_secret(items)) {
                item = mask_text;
            } else {
                mask(item, items);
            }
        }
        return;
    }
    if (!value.is_object()) return;
    // Below an untyped schema (or additionalProperties: true) everything is free-form, so open-ended.
    const bool untyped = schema_type(schema).empty();
    for (auto& [key, child] : value.items()) {
        bool declared = false;
        const Json* sub = untyped ? &anything() : child_schema(schema, key, declared);
        if (!sub) sub = &anything();
        if (is_secret(*sub) || (!declared && name_looks_secret(key))) {
            child = mask_text;
        } else {
            mask(child, *sub);
        }
    }
}

// Walks a dotted path in a document. A key that is not found whole-segment is tried as the rest of the path
// in one piece, so that "queue.kafka.properties.linger.ms" finds the key "linger.ms".
const Json* find(const Json& doc, std::string_view dotted) {
    const auto parts = split_path(dotted);
    const Json* node = &doc;
    for (std::size_t i = 0; i < parts.size(); ++i) {
        if (!node->is_object()) return nullptr;
        auto it = node->find(parts[i]);
        if (it != node->end()) {
            node = &*it;
            continue;
        }
        std::string rest = parts[i];
        for (std::size_t j = i + 1; j < parts.size(); ++j) rest += "." + parts[j];
        it = node->find(rest);
        return it != node->end() ? &*it : nullptr;
    }
    return node;
}

std::string read_file(const std::string& file) {
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw ConfigError(file + ": cannot read: " + std::strerror(errno));
    std::string text;
    char buffer[65536];
    while (true) {
        ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int saved = errno;
            ::close(fd);
            throw ConfigError(file + ": cannot read: " + std::strerror(saved));
        }
        if (n == 0) break;
        text.append(buffer, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return text;
}

Json parse_file(const std::string& text, const std::string& file) {
    try {
        return Json::parse(text);
    } catch (const Json::parse_error& e) {
        // e.byte is the 1-based offset of the last byte read, i.e. where parsing stopped.
        std::size_t offset = std::min<std::size_t>(e.byte == 0 ? 0 : e.byte - 1, text.size());
        std::size_t line = 1 + std::count(text.begin(), text.begin() + offset, '\n');
        auto line_start = text.rfind('\n', offset == 0 ? 0 : offset - 1);
        std::size_t column = line_start == std::string::npos || offset == 0 ? offset + 1 : offset - line_start;
        // nlohmann's what() is "[json.exception.parse_error.101] parse error at line 1, column 2: <reason>".
        std::string reason = e.what();
        if (auto colon = reason.find(": "); colon != std::string::npos) reason.erase(0, colon + 2);
        static constexpr std::string_view noise = "syntax error while parsing ";
        if (reason.compare(0, noise.size(), noise) == 0) reason.erase(0, noise.size());
        throw ConfigError(file + ": invalid JSON at line " + std::to_string(line) + ", column " +
                          std::to_string(column) + ": " + reason);
    }
}

}  // namespace

void ConfigSchema::add(std::string_view dotted_path, Json schema) {
    if (root_.is_null()) root_ = {{"type", "object"}, {"properties", Json::object()}};
    const auto parts = split_path(dotted_path);
    Json* node = &root_;
    std::string path;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
        path = join_path(path, parts[i]);
        auto props = node->find("properties");
        if (props == node->end() || !props->contains(parts[i]) || schema_type((*props)[parts[i]]) != "object") {
            throw ConfigError("schema: " + std::string(dotted_path) + ": " + path + " is not an object section");
        }
        node = &(*props)[parts[i]];
    }
    if (parts.back().empty()) throw ConfigError("schema: " + json_quoted(dotted_path) + ": empty key");
    (*node)["properties"][parts.back()] = std::move(schema);
}

EnvLookup process_env() {
    return [](const std::string& name) -> std::optional<std::string> {
        const char* value = std::getenv(name.c_str());
        return value ? std::optional<std::string>(value) : std::nullopt;
    };
}

Config Config::load(const std::string& file, const std::vector<std::string>& sets, const ConfigSchema& schema,
                    const EnvLookup& env) {
    return from_json(parse_file(read_file(file), file), file, sets, schema, env);
}

Config Config::from_json(Json doc, std::string source, const std::vector<std::string>& sets, const ConfigSchema& schema,
                         const EnvLookup& env) {
    substitute(doc, source, "", env ? env : process_env());
    const Json& root = schema.json().is_null() ? Json::object() : schema.json();
    if (!doc.is_object()) throw error(source, "", "expected an object, got " + describe(doc, false));
    for (const auto& item : sets) apply_set(doc, item, root, source);
    Validator(source).check(doc, root, "");
    Config config;
    config.doc_ = std::move(doc);
    config.schema_ = root;
    config.source_ = std::move(source);
    return config;
}

const Json& Config::at(std::string_view dotted_path) const {
    const Json* found = find(doc_, dotted_path);
    if (!found) throw error(source_, std::string(dotted_path), "not set");
    return *found;
}

bool Config::has(std::string_view dotted_path) const { return find(doc_, dotted_path) != nullptr; }

std::string Config::str(std::string_view dotted_path) const {
    const Json& value = at(dotted_path);
    if (!value.is_string()) {
        throw error(source_, std::string(dotted_path), "expected a string, got " + describe(value, false));
    }
    return value.get<std::string>();
}

std::int64_t Config::integer(std::string_view dotted_path) const {
    const Json& value = at(dotted_path);
    if (!value.is_number_integer() || !fits_int64(value)) {
        throw error(source_, std::string(dotted_path), "expected an integer, got " + describe(value, false));
    }
    return value.get<std::int64_t>();
}

double Config::number(std::string_view dotted_path) const {
    const Json& value = at(dotted_path);
    if (!value.is_number()) {
        throw error(source_, std::string(dotted_path), "expected a number, got " + describe(value, false));
    }
    return value.get<double>();
}

bool Config::boolean(std::string_view dotted_path) const {
    const Json& value = at(dotted_path);
    if (!value.is_boolean()) {
        throw error(source_, std::string(dotted_path), "expected a boolean, got " + describe(value, false));
    }
    return value.get<bool>();
}

Json Config::masked() const {
    Json copy = doc_;
    mask(copy, schema_);
    return copy;
}

}  // namespace hydra
